import { Type as t } from '@sinclair/typebox'
import type { Db, Document } from 'mongodb'
import type { Sql } from 'postgres'
import type { Logger } from './logger'
import type { Metrics } from './metrics'
import type { ConcurrentIndex } from './postgres'
import type { Runtime } from './runtime'

const DAY_MS = 86_400_000
/** Rows deleted per statement: short enough that no purge holds row locks or a snapshot for long. */
export const PURGE_BATCH_SIZE = 1_000
/** Each pass starts up to ±20% off the interval, so replicas started together do not purge together. */
const JITTER_RATIO = 0.2
/** The first pass comes soon after start-up (jittered): with an hourly interval and frequent deploys, a pass
 * scheduled one interval after start might never run. */
const FIRST_PASS_MAX_DELAY_MS = 60_000

export const RetentionEnv = {
  RETENTION_INTERVAL_MS: t.Integer({
    minimum: 1_000,
    default: 3_600_000,
    description: 'Time between two purges of expired rows (±20%); the first runs within a minute of start-up',
  }),
  PROCESSED_EVENTS_RETENTION_DAYS: t.Integer({
    minimum: 1,
    default: 7,
    description:
      'Age after which the ids of consumed events are purged; must exceed the longest time an event can still be redelivered (retries, a consumer outage, a dead-letter replay)',
  }),
}

/** Expired rows of one table or collection: `deleteBatch` deletes at most `limit` of them and says how many. */
export type PurgeTarget = { table: string; deleteBatch: (limit: number) => Promise<number> }

/**
 * Deletes rows of `table` whose `column` is older than `olderThanDays`, `limit` per statement.
 * The batch is picked `for update skip locked`, so two replicas purging at once delete disjoint
 * rows and never wait on each other (nor on a request holding one of the rows): deletes are
 * naturally idempotent, no lock elects a single purger. Rows whose `column` is null never match.
 * `table` and `column` are identifiers from code, quoted by postgres.js.
 */
export function postgresPurge(
  sql: Sql,
  { table, column, olderThanDays }: { table: string; column: string; olderThanDays: number },
): PurgeTarget {
  return {
    table,
    deleteBatch: async (limit) => {
      const result = await sql`
        delete from ${sql(table)} where ctid = any(array(
          select ctid from ${sql(table)}
          where ${sql(column)} < now() - make_interval(days => ${olderThanDays}::int)
          limit ${limit}
          for update skip locked))`
      return result.count
    },
  }
}

/**
 * Deletes documents of `collection` whose `field` (a date) is older than `olderThanDays`.
 * Application-side rather than a TTL index: FerretDB 1.x refuses `expireAfterSeconds`, and this
 * works the same on MongoDB. Replicas purging at once may pick the same ids; the second delete
 * finds them gone, so it is idempotent.
 */
export function mongoPurge(
  db: Db,
  { collection, field, olderThanDays }: { collection: string; field: string; olderThanDays: number },
): PurgeTarget {
  const documents = db.collection<Document>(collection)
  return {
    table: collection,
    deleteBatch: async (limit) => {
      const expired = { [field]: { $lt: new Date(Date.now() - olderThanDays * DAY_MS) } }
      const batch = await documents
        .find(expired, { projection: { _id: 1 } })
        .limit(limit)
        .toArray()
      if (batch.length === 0) return 0
      const { deletedCount } = await documents.deleteMany({
        ...expired,
        _id: { $in: batch.map((document) => document._id) },
      })
      return deletedCount
    },
  }
}

/**
 * `processed_events` of a PostgreSQL service (`processedEvents` in postgres.ts). Its markers only
 * guard against redelivery: one purged while its event can still come back lets that event apply
 * twice, hence an age well above the broker's redelivery horizon (retry chain under an hour,
 * messages held through a consumer outage, a dead letter replayed by hand days later).
 */
export function processedEventsPurge(sql: Sql, olderThanDays: number): PurgeTarget {
  return postgresPurge(sql, { table: 'processed_events', column: 'processed_at', olderThanDays })
}

/** The index processedEventsPurge scans (the primary key starts with the consumer, not the age). */
export const PROCESSED_EVENTS_AGE_INDEX: ConcurrentIndex = {
  name: 'processed_events_processed_at_idx',
  on: 'processed_events (processed_at)',
}

export type RetentionOptions = { intervalMs: number; batchSize?: number }

/**
 * Purges expired rows of its targets every interval (jittered), in batches until a batch comes back
 * short. A failing target is logged and counted, and the others still run; the next pass retries it.
 */
export class RetentionJob {
  private timer: ReturnType<typeof setTimeout> | undefined
  private running: Promise<Record<string, number>> | undefined
  private stopped = false
  private readonly purged
  private readonly failures
  private readonly log: Logger

  constructor(
    private readonly targets: readonly PurgeTarget[],
    logger: Logger,
    metrics: Metrics,
    private readonly options: RetentionOptions,
  ) {
    this.log = logger.child({ component: 'retention' })
    this.purged = metrics.counter('retention_purged_total', 'Expired rows deleted by the retention job', [
      'table',
    ])
    this.failures = metrics.counter('retention_failures_total', 'Retention purges that failed', ['table'])
  }

  start(): void {
    this.schedule(Math.random() * Math.min(this.options.intervalMs, FIRST_PASS_MAX_DELAY_MS))
  }

  /** Runs one pass now (or joins the running one); resolves to the rows deleted per table. */
  runPass(): Promise<Record<string, number>> {
    this.running ??= this.purgeAll().finally(() => {
      this.running = undefined
    })
    return this.running
  }

  /** Stops scheduling and ends the running pass after its current batch. */
  async stop(): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    await this.running
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return
    this.timer = setTimeout(() => {
      void this.runPass().then(() => {
        const jitter = 1 + (Math.random() * 2 - 1) * JITTER_RATIO
        this.schedule(this.options.intervalMs * jitter)
      })
    }, delayMs)
    this.timer.unref?.()
  }

  private async purgeAll(): Promise<Record<string, number>> {
    const limit = this.options.batchSize ?? PURGE_BATCH_SIZE
    const deleted: Record<string, number> = {}
    for (const target of this.targets) {
      let total = 0
      try {
        let batch: number
        do {
          batch = await target.deleteBatch(limit)
          total += batch
          this.purged.inc({ table: target.table }, batch)
        } while (batch >= limit && !this.stopped)
      } catch (error) {
        this.failures.inc({ table: target.table })
        this.log.warn({ err: error, table: target.table }, 'retention purge failed')
      }
      deleted[target.table] = total
      if (total > 0) this.log.info({ table: target.table, deleted: total }, 'expired rows purged')
      if (this.stopped) break
    }
    return deleted
  }
}

/** Starts a service's retention job; it stops (finishing its batch) when the process drains. */
export function startRetention(
  runtime: Runtime,
  targets: readonly PurgeTarget[],
  config: { RETENTION_INTERVAL_MS: number },
): RetentionJob {
  const job = new RetentionJob(targets, runtime.logger, runtime.metrics, {
    intervalMs: config.RETENTION_INTERVAL_MS,
  })
  job.start()
  runtime.lifecycle.onDrain('retention', () => job.stop())
  return job
}
