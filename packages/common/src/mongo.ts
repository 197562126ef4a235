import type { CloudEvent } from '@parley/contracts'
import { type Db, MongoClient, MongoServerError } from 'mongodb'
import type { EventBus } from './events/bus'
import type { Logger } from './logger'
import type { Metrics } from './metrics'
import { RelayLoop, type RelayOptions } from './outbox'
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

/** The document a state change creates: an event staged for it is published once it exists. */
export type OutboxSubject = { collection: string; id: string }

/** `visibleAt`: when the relay looks at the entry next (later for entries whose write is late). */
type OutboxEntry = { _id: string; event: CloudEvent; subject: OutboxSubject; stagedAt: Date; visibleAt: Date }

const OUTBOX = 'outbox'

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

/**
 * A MongoDB outbox without multi-document transactions (FerretDB has none), in which the relay
 * never writes a document that requests write. FerretDB applies an update by reading the
 * document, changing it in Go and writing it back whole, so two concurrent updates of one
 * document can lose one: a relay clearing events embedded in a conversation undid a participant
 * leaving it. So events are staged in their own collection before the write that creates their
 * subject, and the relay publishes an entry only once its subject exists: published if and only
 * if the state change happened, as with a transaction.
 */
export class MongoOutbox {
  private readonly entries

  constructor(db: Db) {
    this.entries = db.collection<OutboxEntry>(OUTBOX)
  }

  /** Stages events for a document about to be created; call before the insert. */
  async stage(subject: OutboxSubject, events: readonly CloudEvent[]): Promise<void> {
    if (events.length === 0) return
    const stagedAt = new Date()
    await this.entries.insertMany(
      events.map((event) => ({ _id: event.id, event, subject, stagedAt, visibleAt: stagedAt })),
    )
  }

  /** Drops staged events whose write did not happen (the relay would drop them after the TTL). */
  async discard(events: readonly CloudEvent[]): Promise<void> {
    await this.entries.deleteMany({ _id: { $in: events.map((event) => event.id) } })
  }
}

/** Indexes the outbox relay needs. */
export async function ensureOutboxIndexes(db: Db): Promise<void> {
  await db.collection(OUTBOX).createIndex({ visibleAt: 1, _id: 1 })
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
  const markers = db.collection<{ _id: string; at: Date }>('processed_events')
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

/**
 * Publishes staged events whose subject exists, oldest first, with publisher confirms, then
 * deletes them; drops entries unconfirmed for longer than UNCONFIRMED_OUTBOX_TTL_MS. Replicas
 * may publish an entry twice (consumers deduplicate by event id); nothing is lost.
 */
export class MongoOutboxRelay {
  private readonly loop: RelayLoop
  private readonly entries
  private readonly dropped

  constructor(
    private readonly db: Db,
    private readonly bus: EventBus,
    logger: Logger,
    metrics: Metrics,
    private readonly options: RelayOptions = {},
  ) {
    this.entries = db.collection<OutboxEntry>(OUTBOX)
    this.dropped = metrics.counter(
      'outbox_unconfirmed_dropped_total',
      'Staged events dropped because the write they were staged for never happened',
    )
    this.loop = new RelayLoop(
      () => this.relayBatch(),
      logger,
      metrics,
      () => this.entries.countDocuments({}),
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

  /** Publishes one batch; returns how many events were relayed. */
  async relayBatch(): Promise<number> {
    if (!this.bus.isConnected) throw new Error('broker not connected')
    const now = Date.now()
    const entries = await this.entries
      .find({ visibleAt: { $lte: new Date(now) } })
      .sort({ visibleAt: 1, _id: 1 })
      .limit(this.options.batchSize ?? 100)
      .toArray()
    if (entries.length === 0) return 0
    const existing = await this.existingSubjects(entries)
    const confirmed: OutboxEntry[] = []
    const expired: OutboxEntry[] = []
    const late: OutboxEntry[] = []
    for (const entry of entries) {
      const age = now - entry.stagedAt.getTime()
      if (existing.has(subjectKey(entry.subject))) confirmed.push(entry)
      else if (age > UNCONFIRMED_OUTBOX_TTL_MS) expired.push(entry)
      else if (age > UNCONFIRMED_GRACE_MS) late.push(entry)
    }
    await Promise.all(confirmed.map((entry) => this.bus.publishEvent(entry.event)))
    const done = [...confirmed, ...expired].map((entry) => entry._id)
    if (done.length > 0) await this.entries.deleteMany({ _id: { $in: done } })
    if (late.length > 0)
      await this.entries.updateMany(
        { _id: { $in: late.map((entry) => entry._id) } },
        { $set: { visibleAt: new Date(now + UNCONFIRMED_RECHECK_MS) } },
      )
    this.dropped.inc(expired.length)
    return confirmed.length
  }

  /** Keys of the subjects of `entries` that exist: one query per collection. */
  private async existingSubjects(entries: readonly OutboxEntry[]): Promise<Set<string>> {
    const idsByCollection = new Map<string, string[]>()
    for (const { subject } of entries)
      idsByCollection.set(subject.collection, [
        ...(idsByCollection.get(subject.collection) ?? []),
        subject.id,
      ])
    const existing = new Set<string>()
    for (const [collection, ids] of idsByCollection) {
      const found = await this.db
        .collection<{ _id: string }>(collection)
        .find({ _id: { $in: ids } }, { projection: { _id: 1 } })
        .toArray()
      for (const doc of found) existing.add(subjectKey({ collection, id: doc._id }))
    }
    return existing
  }
}

/** Starts the MongoDB outbox relay of a service; it stops (finishing its batch) when the process drains. */
export function startMongoOutboxRelay(db: Db, bus: EventBus, runtime: Runtime): MongoOutboxRelay {
  const relay = new MongoOutboxRelay(db, bus, runtime.logger, runtime.metrics)
  relay.start()
  runtime.lifecycle.onDrain('outbox relay', () => relay.stop())
  return relay
}

const subjectKey = (subject: OutboxSubject) => `${subject.collection}/${subject.id}`
