import type { CloudEvent } from '@parley/contracts'
import {
  type AnyBulkWriteOperation,
  type Collection,
  type Db,
  type Document,
  type Filter,
  MongoBulkWriteError,
  MongoClient,
  MongoServerError,
  type OptionalUnlessRequiredId,
} from 'mongodb'
import { GroupCommit } from './concurrency'
import { BrokerUnavailableError, type EventBus } from './events/bus'
import type { Logger } from './logger'
import type { Metrics } from './metrics'
import {
  DEFAULT_OUTBOX_MAX_ATTEMPTS,
  type PublishFault,
  publishEach,
  RelayLoop,
  type RelayOptions,
  retryDelayMs,
} from './outbox'
import { mongoPurge, type PurgeTarget } from './retention'
import type { Runtime } from './runtime'

export type MongoHandle = {
  client: MongoClient
  db: Db
  check: () => Promise<void>
  close: () => Promise<void>
}

export function createMongo(url: string, dbName: string): MongoHandle {
  const client = new MongoClient(url, {
    serverSelectionTimeoutMS: 3000,
    connectTimeoutMS: 3000,
    socketTimeoutMS: 10_000,
    maxPoolSize: 20,
    retryWrites: false,
  })
  const db = client.db(dbName)
  return {
    client,
    db,
    check: async () => {
      await db.command({ ping: 1 })
    },
    close: () => client.close(),
  }
}

/**
 * A MongoDB client for a service, closed at shutdown. `ensureIndexes` (idempotent) runs in the
 * background and is retried: the process comes up, and is live, while MongoDB is not.
 */
export function mongoFor(
  config: { MONGO_URL: string; MONGO_DB: string },
  runtime: Runtime,
  ensureIndexes: (db: Db) => Promise<void>,
): MongoHandle {
  const mongo = createMongo(config.MONGO_URL, config.MONGO_DB)
  const { lifecycle, logger } = runtime
  lifecycle.onClose('mongodb', () => mongo.close())
  void (async () => {
    for (let attempt = 1; !lifecycle.shuttingDown; attempt++) {
      try {
        return await ensureIndexes(mongo.db)
      } catch (error) {
        logger.warn({ err: error, attempt }, 'index creation failed, retrying')
        await Bun.sleep(Math.min(attempt * 1000, 10_000))
      }
    }
  })()
  return mongo
}

export function isDuplicateKeyError(error: unknown): boolean {
  return error instanceof MongoServerError && error.code === 11000
}

/**
 * An unordered insertMany that says per document what failed (as the MongoServerError an
 * insertOne would have thrown), for GroupCommit: one round trip for many requests' inserts
 * (FerretDB's cost is mostly per command). Any other failure throws for all of them.
 */
export async function insertEach<T extends Document>(
  collection: Collection<T>,
  docs: readonly OptionalUnlessRequiredId<T>[],
): Promise<(MongoServerError | undefined)[]> {
  const errors: (MongoServerError | undefined)[] = docs.map(() => undefined)
  try {
    await collection.insertMany([...docs], { ordered: false })
  } catch (error) {
    if (!(error instanceof MongoBulkWriteError)) throw error
    const failures = Array.isArray(error.writeErrors) ? error.writeErrors : [error.writeErrors]
    if (failures.length === 0) throw error
    for (const failure of failures)
      errors[failure.index] = new MongoServerError({
        message: failure.errmsg ?? 'write failed',
        code: failure.code,
      })
  }
  return errors
}

const ferretDB = new WeakMap<Db, Promise<boolean>>()

/** Whether `db` is served by FerretDB (its buildInfo names its own version); asked once per Db. */
export function isFerretDB(db: Db): Promise<boolean> {
  let answer = ferretDB.get(db)
  if (!answer) {
    answer = db
      .admin()
      .command({ buildInfo: 1 })
      .then((info) => typeof (info as { ferretdbVersion?: unknown }).ferretdbVersion === 'string')
    // A failed ask is asked again next time.
    answer.catch(() => ferretDB.delete(db))
    ferretDB.set(db, answer)
  }
  return answer
}

/**
 * The documents with these `_id`s (those that exist, in no particular order). MongoDB: one `$in`
 * along the _id index. FerretDB pushes only equality filters down to PostgreSQL (index lookups
 * with the twins of scripts/ferretdb-postgresql.sql) and answers `$in` by reading the whole
 * collection: one lookup per id there, BULK_WRITE_CHUNK at a time.
 */
export async function findByIds<T extends { _id: string }>(
  collection: Collection<T>,
  ids: Iterable<string>,
  projection: Document,
): Promise<T[]> {
  const unique = [...new Set(ids)]
  if (unique.length === 0) return []
  const filter = (value: unknown) => ({ _id: value }) as Filter<T>
  if (!(await isFerretDB(collection.db))) {
    return (await collection.find(filter({ $in: unique }), { projection }).toArray()) as T[]
  }
  const found: T[] = []
  for (let start = 0; start < unique.length; start += BULK_WRITE_CHUNK) {
    const chunk = unique.slice(start, start + BULK_WRITE_CHUNK)
    const docs = await Promise.all(chunk.map((id) => collection.findOne(filter(id), { projection })))
    for (const doc of docs) if (doc) found.push(doc as T)
  }
  return found
}

/**
 * Write operations per bulkWrite call. FerretDB 1.24 on PostgreSQL holds a pooled PostgreSQL
 * connection for every operation of a bulk until the whole bulk is done: a bulk of more
 * operations than its pool (50) waits for itself forever, and the server stops answering anyone.
 * Kept far below the pool, so concurrent bulks of several clients still fit.
 */
export const BULK_WRITE_CHUNK = 16

/** `collection.bulkWrite` in chunks of BULK_WRITE_CHUNK operations, one chunk after the other. */
export async function bulkWriteChunked<T extends Document>(
  collection: Collection<T>,
  operations: readonly AnyBulkWriteOperation<T>[],
  options: { ordered: boolean },
): Promise<{ modifiedCount: number }> {
  let modifiedCount = 0
  for (let start = 0; start < operations.length; start += BULK_WRITE_CHUNK) {
    const result = await collection.bulkWrite(operations.slice(start, start + BULK_WRITE_CHUNK), options)
    modifiedCount += result.modifiedCount
  }
  return { modifiedCount }
}

/**
 * The document a state change creates: an event staged for it is published once it exists. For a
 * change to a document that already exists, `change` names what only that update writes (see
 * outboxChangeUpdate): the event is published once the document records `change.id` at
 * `change.version`, so an update that failed or never ran publishes nothing.
 */
export type OutboxSubject = { collection: string; id: string; change?: OutboxChange }

/** An update of an existing document: the version it creates and the id it records there. */
export type OutboxChange = { version: number; id: string }

/** Where versioned updates record their change ids: `outboxChanges.v<version>: <change id>`. */
export const OUTBOX_CHANGES_FIELD = 'outboxChanges'
/**
 * How many change ids a document keeps (each update drops the one this many versions back). An
 * event whose id was dropped before any relay looked at it is treated as unconfirmed (dropped
 * after UNCONFIRMED_OUTBOX_TTL_MS): only after this many further updates during a broker outage.
 */
export const OUTBOX_CHANGES_KEPT = 100

/**
 * The `$set`/`$unset` an update merges in so that events staged with `change` are published once
 * it is applied. The update must create exactly `change.version` (e.g. filter on the version
 * before it and increment it), so no other update can record the same version.
 */
export function outboxChangeUpdate(change: OutboxChange): {
  $set: Record<string, string>
  $unset: Record<string, ''>
} {
  const dropped = change.version - OUTBOX_CHANGES_KEPT
  return {
    $set: { [`${OUTBOX_CHANGES_FIELD}.v${change.version}`]: change.id },
    $unset: dropped > 0 ? { [`${OUTBOX_CHANGES_FIELD}.v${dropped}`]: '' } : {},
  }
}

/**
 * An event staged for publication. `visibleAt`: when a relay looks at it next (later for an
 * entry whose write is late, that failed, or that a relay holds). `claims`: how many times relays
 * claimed it, the generation a claim ticket names. `attempts`: failed publishes. `unconfirmed`:
 * its write was still missing after the grace time (most likely it never happened).
 */
type OutboxEntry = {
  _id: string
  event: CloudEvent
  subject: OutboxSubject
  stagedAt: Date
  visibleAt: Date
  claims?: number
  attempts?: number
  unconfirmed?: true
}

/** A relay's claim on one generation of an entry, `_id` `<entry id>#<claims>`, held until `until`. */
type OutboxClaim = { _id: string; until: Date }

/** An entry the relay gave up on after `maxAttempts` failed publishes (reason: see PublishFault). */
type DeadEntry = Omit<OutboxEntry, 'visibleAt' | 'claims' | 'unconfirmed'> &
  PublishFault & { attempts: number; deadAt: Date }

const OUTBOX = 'outbox'
const OUTBOX_CLAIMS = 'outbox_claims'
const OUTBOX_DEAD = 'outbox_dead'

/**
 * How long an entry whose subject never appeared is kept before the relay drops it (the write
 * it was staged for failed). Far above any request's time to its write, so a slow write's event
 * is never dropped before it lands.
 */
export const UNCONFIRMED_OUTBOX_TTL_MS = 10 * 60_000
/** A write normally follows its staging within milliseconds: entries unconfirmed for longer are
 * looked at again only every UNCONFIRMED_RECHECK_MS, so orphans never hold up the events behind them. */
const UNCONFIRMED_GRACE_MS = 5_000
const UNCONFIRMED_RECHECK_MS = 30_000

/** How long a stager publishing its own events holds them before a relay may (default 10 s). */
export const DEFAULT_DIRECT_HOLD_MS = 10_000

export type MongoOutboxOptions = {
  /** Woken when events wait for it: after a write, or when a direct publish failed. */
  relay?: { kick(): void }
  /**
   * Publish each event as soon as its write happened (see `committed`) instead of leaving it to
   * the relay's next round; the relay takes over what was not confirmed within `holdMs`.
   */
  direct?: { bus: EventBus; runtime: Pick<Runtime, 'logger' | 'metrics'>; holdMs?: number }
}

/**
 * A MongoDB outbox without multi-document transactions (FerretDB has none), in which the relay
 * never writes a document that requests write. FerretDB applies an update by reading the
 * document, changing it in Go and writing it back whole, so two concurrent updates of one
 * document can lose one: a relay clearing events embedded in a conversation undid a participant
 * leaving it. So events are staged in their own collection before the write that creates their
 * subject, and are published only once that write happened: as with a transaction.
 *
 * With `direct`, the stager publishes its events itself right after the write (`committed`), in
 * the order of the calls, and deletes them once confirmed: no relay round trip between a message
 * and its push. Its entries are staged as claimed by it (generation 1, hidden for `holdMs`), so
 * no relay takes them meanwhile; if the process dies or the broker does not confirm, the relay
 * publishes them after the hold (or at once, when the broker refused). Stages and deletes of
 * concurrent requests share writes (GroupCommit).
 */
export class MongoOutbox {
  private readonly entries
  private readonly staging: GroupCommit<OutboxEntry>
  private readonly deleting: GroupCommit<string>
  private readonly inFlight = new Set<Promise<void>>()
  private readonly published
  private readonly directOutcomes
  private readonly log: Logger | undefined

  constructor(
    db: Db,
    private readonly options: MongoOutboxOptions = {},
  ) {
    this.entries = db.collection<OutboxEntry>(OUTBOX)
    this.staging = new GroupCommit((entries) => this.insert(entries), BULK_WRITE_CHUNK)
    this.deleting = new GroupCommit(async (ids) => {
      await this.entries.deleteMany({ _id: { $in: ids }, claims: DIRECT_CLAIM })
    }, BULK_WRITE_CHUNK * 4)
    const runtime = options.direct?.runtime
    this.log = runtime?.logger.child({ component: 'outbox' })
    this.published = runtime?.metrics.counter(
      'outbox_published_total',
      'Outbox events published to the broker',
    )
    this.directOutcomes = runtime?.metrics.counter(
      'outbox_direct_publishes_total',
      'Events published by the request that wrote them (published) or left to the relay (relayed)',
      ['outcome'],
    )
  }

  /** Stages events for a write about to happen; call before it, then `committed` or `discard`. */
  async stage(subject: OutboxSubject, events: readonly CloudEvent[]): Promise<void> {
    const stagedAt = new Date()
    const hold = this.options.direct?.holdMs ?? DEFAULT_DIRECT_HOLD_MS
    await this.staging.add(
      events.map((event) =>
        this.options.direct
          ? {
              _id: event.id,
              event,
              subject,
              stagedAt,
              visibleAt: new Date(stagedAt.getTime() + hold),
              claims: DIRECT_CLAIM,
            }
          : { _id: event.id, event, subject, stagedAt, visibleAt: stagedAt },
      ),
    )
  }

  /**
   * The write the events were staged for happened: publishes them (direct) or wakes the relay.
   * Returns at once; the broker's confirms and the deletes follow (see `settled`).
   */
  committed(events: readonly CloudEvent[]): void {
    const { direct, relay } = this.options
    if (!direct) {
      relay?.kick()
      return
    }
    // Called in order, so published in order: publishEvent hands the event to the channel synchronously.
    for (const event of events) {
      const done = direct.bus.publishEvent(event).then(
        async () => {
          this.published?.inc()
          this.directOutcomes?.inc({ outcome: 'published' })
          // Not deleted: the relay publishes it again after the hold (consumers are idempotent).
          await this.deleting.add([event.id]).catch((error: unknown) => {
            this.log?.warn({ err: error, eventId: event.id }, 'published outbox event not deleted')
          })
        },
        async () => {
          this.directOutcomes?.inc({ outcome: 'relayed' })
          await this.handBack(event.id)
        },
      )
      this.inFlight.add(done)
      void done.finally(() => this.inFlight.delete(done))
    }
  }

  /** Drops staged events whose write did not happen (the relay would drop them after the TTL). */
  async discard(events: readonly CloudEvent[]): Promise<void> {
    await this.entries.deleteMany({ _id: { $in: events.map((event) => event.id) } })
  }

  /** Resolves once every direct publish started so far is confirmed and deleted, or handed back. */
  async settled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight])
  }

  private async insert(entries: OutboxEntry[]): Promise<void> {
    await this.entries.insertMany(entries, { ordered: false })
  }

  /** Makes an unconfirmed event due now, for the relay (it backs off while the broker is down). */
  private async handBack(id: string): Promise<void> {
    try {
      await this.entries.updateOne({ _id: id, claims: DIRECT_CLAIM }, { $set: { visibleAt: new Date() } })
    } catch (error) {
      // It is still due after the hold.
      this.log?.warn({ err: error, eventId: id }, 'outbox event not handed back to the relay')
    }
    this.options.relay?.kick()
  }
}

/** The generation a direct stager holds its entries in (a relay's ticket for them names it). */
const DIRECT_CLAIM = 1

/** Indexes the outbox relay needs: due entries, the oldest pending one, expired claims. */
export async function ensureOutboxIndexes(db: Db): Promise<void> {
  await db.collection(OUTBOX).createIndex({ visibleAt: 1, _id: 1 })
  await db.collection(OUTBOX).createIndex({ stagedAt: 1 })
  await db.collection(OUTBOX_CLAIMS).createIndex({ until: 1 })
}

/** Markers of consumed events, `{_id: '<consumer>:<event id>', at}`. */
const PROCESSED_EVENTS = 'processed_events'

/** The index the retention purge of the markers scans (by age). */
export async function ensureProcessedEventsIndexes(db: Db): Promise<void> {
  await db.collection(PROCESSED_EVENTS).createIndex({ at: 1 })
}

/** Purges markers older than `olderThanDays` (see processedEventsPurge for the age it needs). */
export function processedEventsMongoPurge(db: Db, olderThanDays: number): PurgeTarget {
  return mongoPurge(db, { collection: PROCESSED_EVENTS, field: 'at', olderThanDays })
}

/**
 * Idempotent consumption without transactions: skip an event already marked, apply it,
 * then mark it. A crash between apply and mark re-applies once, so `apply` must be an
 * idempotent write (upsert / conditional update).
 */
export async function consumeOnceMongo(
  db: Db,
  consumer: string,
  eventId: string,
  apply: () => Promise<void>,
): Promise<boolean> {
  const markers = db.collection<{ _id: string; at: Date }>(PROCESSED_EVENTS)
  const key = `${consumer}:${eventId}`
  if (await markers.findOne({ _id: key }, { projection: { _id: 1 } })) return false
  await apply()
  try {
    await markers.insertOne({ _id: key, at: new Date() })
  } catch (error) {
    if (!isDuplicateKeyError(error)) throw error
  }
  return true
}

/** How long a relay holds the entries it claimed before another may take them over. */
export const DEFAULT_CLAIM_LEASE_MS = 60_000

export type MongoRelayOptions = RelayOptions & {
  /** Lease of a claim (default 60 s): far above a batch's time, confirms included. */
  claimLeaseMs?: number
}

/**
 * Publishes staged events whose subject exists, oldest first, with publisher confirms, then
 * deletes them; drops entries unconfirmed for longer than UNCONFIRMED_OUTBOX_TTL_MS.
 *
 * Replicas claim entries before publishing, so each is published once. FerretDB has no atomic
 * read-modify-write (an update or findAndModify reads the document, changes it and writes it
 * back), so a claim is an insert, which the unique `_id` makes atomic in both: the ticket
 * `<entry>#<claims>` names the generation of the entry the relay read. The winner moves the
 * entry to the next generation and hides it for its lease (`visibleAt`); a relay that read it
 * before names the same ticket and loses. If the winner dies, the entry reappears when the lease
 * ends and its next generation is claimed; tickets are deleted a lease after they expired (which
 * also frees an entry whose winner died between ticket and move). The winner's later writes name
 * the generation it holds, so a holder whose lease ran out changes nothing.
 *
 * A failing event is isolated: its attempts are counted, it is tried again later, and after
 * `maxAttempts` it moves to `outbox_dead`. While the broker is unavailable nothing is counted.
 */
export class MongoOutboxRelay {
  private readonly loop: RelayLoop
  private readonly entries
  private readonly claims
  private readonly dead
  private readonly dropped
  private readonly log: Logger
  private readonly leaseMs: number
  private claimsCollectedAt = 0

  constructor(
    private readonly db: Db,
    private readonly bus: EventBus,
    logger: Logger,
    metrics: Metrics,
    private readonly options: MongoRelayOptions = {},
  ) {
    this.log = logger.child({ component: 'outbox' })
    this.leaseMs = options.claimLeaseMs ?? DEFAULT_CLAIM_LEASE_MS
    this.entries = db.collection<OutboxEntry>(OUTBOX)
    this.claims = db.collection<OutboxClaim>(OUTBOX_CLAIMS)
    this.dead = db.collection<DeadEntry>(OUTBOX_DEAD)
    this.dropped = metrics.counter(
      'outbox_unconfirmed_dropped_total',
      'Staged events dropped because the write they were staged for never happened',
    )
    this.loop = new RelayLoop(
      () => this.relayBatch(),
      logger,
      metrics,
      {
        backlog: () => this.entries.countDocuments({}),
        // Entries whose write is missing after the grace time are left out: they are most likely
        // orphans of failed writes, dropped after UNCONFIRMED_OUTBOX_TTL_MS, not a stuck relay.
        oldestPendingSeconds: async () => {
          const oldest = await this.entries.findOne(
            { unconfirmed: { $ne: true } },
            { sort: { stagedAt: 1 }, projection: { stagedAt: 1 } },
          )
          return oldest ? Math.max(0, (Date.now() - oldest.stagedAt.getTime()) / 1000) : 0
        },
        dead: () => this.dead.countDocuments({}),
      },
      { pollIntervalMs: 500, ...options },
    )
  }

  start(): void {
    this.loop.start()
  }

  /** Wakes the relay now instead of at the next poll (after a local write). */
  kick(): void {
    this.loop.kick()
  }

  stop(): Promise<void> {
    return this.loop.stop()
  }

  /** Publishes one batch; returns how many events were relayed. Throws while the broker is unavailable. */
  async relayBatch(): Promise<number> {
    if (!this.bus.isConnected) throw new BrokerUnavailableError('broker not connected')
    const now = Date.now()
    await this.collectClaims(now)
    const due = await this.entries
      .find({ visibleAt: { $lte: new Date(now) } })
      .sort({ visibleAt: 1, _id: 1 })
      .limit(this.options.batchSize ?? 100)
      .toArray()
    if (due.length === 0) return 0
    const entries = await this.claim(due, now)
    if (entries.length === 0) return 0
    const existing = await this.existingSubjects(entries)
    const confirmed: OutboxEntry[] = []
    const expired: OutboxEntry[] = []
    const late: OutboxEntry[] = []
    const young: OutboxEntry[] = []
    for (const entry of entries) {
      const age = now - entry.stagedAt.getTime()
      if (existing.has(subjectKey(entry.subject))) confirmed.push(entry)
      else if (age > UNCONFIRMED_OUTBOX_TTL_MS) expired.push(entry)
      else if (age > UNCONFIRMED_GRACE_MS) late.push(entry)
      else young.push(entry)
    }
    const outcomes = await publishEach(
      this.bus,
      confirmed.map((entry) => entry.event),
    )
    const published = confirmed.filter((_, index) => outcomes[index]?.status === 'published')
    const kept = confirmed.filter((_, index) => outcomes[index]?.status === 'unavailable')
    const done = [...published, ...expired].map((entry) => entry._id)
    if (done.length > 0) await this.entries.deleteMany({ _id: { $in: done } })
    // Given back at once: young ones for their write, kept ones for the broker (the loop backs off).
    await this.update([...young, ...kept], () => ({ visibleAt: new Date(now) }))
    await this.update(late, () => ({ visibleAt: new Date(now + UNCONFIRMED_RECHECK_MS), unconfirmed: true }))
    for (const [index, entry] of confirmed.entries()) {
      const outcome = outcomes[index]
      if (outcome?.status === 'failed') await this.recordFailure(entry, outcome.fault)
    }
    this.dropped.inc(expired.length)
    if (kept.length > 0 && published.length === 0)
      throw new BrokerUnavailableError('broker confirmed none of the batch')
    return published.length
  }

  /** Claims what it can of `due` (read as due at `now`) and returns the entries it now holds. */
  private async claim(due: readonly OutboxEntry[], now: number): Promise<OutboxEntry[]> {
    const until = new Date(now + this.leaseMs)
    let lost = new Set<number>()
    try {
      await this.claims.insertMany(
        due.map((entry) => ({ _id: `${entry._id}#${entry.claims ?? 0}`, until })),
        { ordered: false },
      )
    } catch (error) {
      // Duplicate tickets are the entries another relay holds; anything else is a real failure.
      if (!(error instanceof MongoBulkWriteError)) throw error
      const failures = Array.isArray(error.writeErrors) ? error.writeErrors : [error.writeErrors]
      if (failures.some((failure) => failure.code !== 11000)) throw error
      lost = new Set(failures.map((failure) => failure.index))
    }
    const held = due
      .filter((_, index) => !lost.has(index))
      .map((entry) => ({ ...entry, claims: (entry.claims ?? 0) + 1, visibleAt: until }))
    if (held.length > 0)
      await bulkWriteChunked(
        this.entries,
        held.map((entry) => ({
          updateOne: {
            filter: { _id: entry._id },
            update: { $set: { claims: entry.claims, visibleAt: until } },
          },
        })),
        { ordered: false },
      )
    return held
  }

  /** Writes fields of entries this relay holds; an entry whose claim moved on is left alone. */
  private async update(held: readonly OutboxEntry[], fields: (entry: OutboxEntry) => Partial<OutboxEntry>) {
    if (held.length === 0) return
    const operations: AnyBulkWriteOperation<OutboxEntry>[] = held.map((entry) => ({
      updateOne: { filter: { _id: entry._id, claims: entry.claims }, update: { $set: fields(entry) } },
    }))
    await bulkWriteChunked(this.entries, operations, { ordered: false })
  }

  /** Counts a failed publish of a held entry: a later retry, or outbox_dead after the last attempt. */
  private async recordFailure(entry: OutboxEntry, fault: PublishFault): Promise<void> {
    const now = Date.now()
    const attempts = (entry.attempts ?? 0) + 1
    // `event?.`: a malformed entry (its event not even an object) is dead-lettered like any other.
    const log = { eventId: entry._id, type: entry.event?.type, attempts, ...fault }
    if (attempts >= (this.options.maxAttempts ?? DEFAULT_OUTBOX_MAX_ATTEMPTS)) {
      const { _id, event, subject, stagedAt } = entry
      try {
        await this.dead.insertOne({
          _id,
          event,
          subject,
          stagedAt,
          attempts,
          ...fault,
          deadAt: new Date(now),
        })
      } catch (error) {
        // Already there: a holder before this one died between the two writes.
        if (!isDuplicateKeyError(error)) throw error
      }
      await this.entries.deleteOne({ _id })
      this.loop.countDead(fault.reason)
      this.log.error(log, 'outbox event moved to outbox_dead')
    } else {
      const delayMs = retryDelayMs(attempts, this.options)
      await this.update([entry], () => ({ attempts, visibleAt: new Date(now + delayMs) }))
      this.log.warn({ ...log, retryInMs: delayMs }, 'outbox event not published, retrying later')
    }
  }

  /** Deletes tickets a lease after they expired, at most once a lease. */
  private async collectClaims(now: number): Promise<void> {
    if (now - this.claimsCollectedAt < this.leaseMs) return
    this.claimsCollectedAt = now
    await this.claims.deleteMany({ until: { $lt: new Date(now - this.leaseMs) } })
  }

  /** Keys of the subjects of `entries` that exist (changes: recorded): one query per collection. */
  private async existingSubjects(entries: readonly OutboxEntry[]): Promise<Set<string>> {
    const idsByCollection = new Map<string, Set<string>>()
    const versioned = new Set<string>()
    for (const { subject } of entries) {
      const ids = idsByCollection.get(subject.collection) ?? new Set<string>()
      idsByCollection.set(subject.collection, ids.add(subject.id))
      if (subject.change) versioned.add(subject.collection)
    }
    const existing = new Set<string>()
    for (const [collection, ids] of idsByCollection) {
      const documents = this.db.collection<{ _id: string; [OUTBOX_CHANGES_FIELD]?: Record<string, unknown> }>(
        collection,
      )
      const projection = versioned.has(collection) ? { _id: 1, [OUTBOX_CHANGES_FIELD]: 1 } : { _id: 1 }
      const found = await findByIds(documents, ids, projection)
      for (const doc of found) {
        existing.add(subjectKey({ collection, id: doc._id }))
        const changes = doc[OUTBOX_CHANGES_FIELD]
        if (changes === null || typeof changes !== 'object') continue
        for (const [key, changeId] of Object.entries(changes))
          if (typeof changeId === 'string' && /^v[0-9]+$/.test(key))
            existing.add(
              subjectKey({
                collection,
                id: doc._id,
                change: { version: Number(key.slice(1)), id: changeId },
              }),
            )
      }
    }
    return existing
  }
}

/** Starts the MongoDB outbox relay of a service; it stops (finishing its batch) when the process drains. */
export function startMongoOutboxRelay(
  db: Db,
  bus: EventBus,
  runtime: Runtime,
  options: MongoRelayOptions = {},
): MongoOutboxRelay {
  const relay = new MongoOutboxRelay(db, bus, runtime.logger, runtime.metrics, options)
  relay.start()
  runtime.lifecycle.onDrain('outbox relay', () => relay.stop())
  return relay
}

const subjectKey = ({ collection, id, change }: OutboxSubject) =>
  change ? `${collection}/${id}@${change.version}/${change.id}` : `${collection}/${id}`
