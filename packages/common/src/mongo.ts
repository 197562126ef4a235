import type { CloudEvent } from '@parley/contracts'
import { type Db, type Document, MongoClient, MongoServerError } from 'mongodb'
import type { EventBus } from './events/bus'
import type { Logger } from './logger'
import type { Metrics } from './metrics'

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

export function isDuplicateKeyError(error: unknown): boolean {
  return error instanceof MongoServerError && error.code === 11000
}

/**
 * MongoDB outbox without multi-document transactions (FerretDB has none): the events
 * travel inside the document written by the state change, so both land atomically.
 */
export const PENDING_EVENTS = '_pendingEvents'
const PENDING_FLAG = '_outboxPending'

/** Fields to merge into a document being inserted. */
export function pendingEventsFields(events: CloudEvent[]): Document {
  return events.length === 0 ? {} : { [PENDING_EVENTS]: events, [PENDING_FLAG]: true }
}

/** Update operators adding events to a document being updated (merge into `$push`/`$set`). */
export function pendingEventsUpdate(events: CloudEvent[]): { $push: Document; $set: Document } {
  return { $push: { [PENDING_EVENTS]: { $each: events } }, $set: { [PENDING_FLAG]: true } }
}

/** Indexes the relay needs on each collection that carries pending events. */
export async function ensureOutboxIndexes(db: Db, collections: readonly string[]): Promise<void> {
  for (const name of collections)
    await db.collection(name).createIndex({ [PENDING_FLAG]: 1 }, { sparse: true })
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

/** Relays pending events embedded in documents of the given collections. */
export class MongoOutboxRelay {
  private running = false
  private loop: Promise<void> | undefined
  private wake: (() => void) | undefined
  private readonly published
  private readonly log: Logger

  constructor(
    private readonly db: Db,
    private readonly collections: readonly string[],
    private readonly bus: EventBus,
    logger: Logger,
    metrics: Metrics,
    private readonly options: { batchSize?: number; pollIntervalMs?: number } = {},
  ) {
    this.log = logger.child({ component: 'outbox' })
    this.published = metrics.counter('outbox_published_total', 'Outbox events relayed to the broker')
    metrics.gauge('outbox_backlog', 'Documents with events not yet published', [], async function () {
      let total = 0
      for (const name of collections)
        total += await db
          .collection(name)
          .countDocuments({ [PENDING_FLAG]: true })
          .catch(() => 0)
      this.set(total)
    })
  }

  start(): void {
    if (this.running) return
    this.running = true
    this.loop = this.run()
  }

  kick(): void {
    this.wake?.()
  }

  async stop(): Promise<void> {
    this.running = false
    this.kick()
    await this.loop
  }

  private async run(): Promise<void> {
    let backoff = 0
    while (this.running) {
      let relayed = 0
      try {
        relayed = await this.relayBatch()
        backoff = 0
      } catch (error) {
        backoff = Math.min(Math.max(backoff * 2, 200), 5000)
        this.log.warn(
          { err: error instanceof Error ? error.message : String(error), backoffMs: backoff },
          'relay failed',
        )
      }
      if (relayed > 0 && backoff === 0) continue
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, backoff || (this.options.pollIntervalMs ?? 500))
        this.wake = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      this.wake = undefined
    }
  }

  /** Publishes the pending events of up to one batch of documents; returns events relayed. */
  async relayBatch(): Promise<number> {
    if (!this.bus.isConnected) throw new Error('broker not connected')
    let relayed = 0
    for (const name of this.collections) {
      const collection = this.db.collection(name)
      const documents = await collection
        .find({ [PENDING_FLAG]: true }, { projection: { [PENDING_EVENTS]: 1 } })
        .limit(this.options.batchSize ?? 100)
        .toArray()
      for (const document of documents) {
        const events = (document[PENDING_EVENTS] ?? []) as CloudEvent[]
        await Promise.all(events.map((event) => this.bus.publishEvent(event)))
        // $pullAll with the exact documents read: FerretDB ignores $pull with a condition.
        await collection.updateOne({ _id: document._id }, {
          $pullAll: { [PENDING_EVENTS]: events },
        } as Document)
        // Clear the flag only if no new event was pushed meanwhile.
        await collection.updateOne(
          { _id: document._id, [PENDING_EVENTS]: { $size: 0 } },
          { $unset: { [PENDING_EVENTS]: '', [PENDING_FLAG]: '' } },
        )
        relayed += events.length
      }
    }
    this.published.inc(relayed)
    return relayed
  }
}
