import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import {
  createTestDatabase,
  createTestMongo,
  type TestDatabase,
  type TestMongo,
  testLogger,
  waitFor,
} from '@parley/testkit'
import postgres from 'postgres'
import { consumeOnceMongo, createMongo, type MongoHandle, processedEventsMongoPurge } from '../src/mongo'
import {
  type PurgeTarget,
  postgresPurge,
  processedEventsPurge,
  RetentionJob,
  startRetention,
} from '../src/retention'
import { createRuntime, type Runtime } from '../src/runtime'

// Real servers on a shared 2-core machine (Bun's default is 5 s).
setDefaultTimeout(30_000)

let database: TestDatabase
let sql: postgres.Sql
let testMongo: TestMongo
let mongo: MongoHandle

beforeAll(async () => {
  database = await createTestDatabase()
  sql = postgres(database.url, { max: 4, onnotice: () => undefined })
  // As in every PostgreSQL service (postgres.ts `processedEvents`).
  await sql`create table processed_events (
    consumer text not null, event_id text not null,
    processed_at timestamptz not null default now(), primary key (consumer, event_id))`
  testMongo = createTestMongo()
  mongo = createMongo(testMongo.url, testMongo.dbName)
})

afterAll(async () => {
  await sql?.end()
  await mongo?.close()
  await testMongo?.drop()
  await database?.drop()
})

const runtime = (): Runtime => createRuntime('test', 'silent', testLogger())

async function metric(rt: Runtime, name: string, labels: Record<string, string>): Promise<number> {
  const found = rt.metrics.registry.getSingleMetric(name)
  if (!found) return 0
  const { values } = await found.get()
  return values
    .filter((value) => Object.entries(labels).every(([key, expected]) => value.labels[key] === expected))
    .reduce((sum, value) => sum + value.value, 0)
}

/** `count` markers of `consumer`, processed `daysAgo` days ago. */
async function markers(consumer: string, count: number, daysAgo: number): Promise<void> {
  await sql`
    insert into processed_events (consumer, event_id, processed_at)
    select ${consumer}, gen_random_uuid()::text, now() - make_interval(days => ${daysAgo}::int)
    from generate_series(1, ${count})`
}

async function countOf(consumer: string): Promise<{ old: number; recent: number }> {
  const [row] = await sql<{ old: number; recent: number }[]>`
    select count(*) filter (where processed_at < now() - interval '7 days')::int as old,
           count(*) filter (where processed_at >= now() - interval '7 days')::int as recent
    from processed_events where consumer = ${consumer}`
  return row ?? { old: -1, recent: -1 }
}

/** The target, counting its statements. */
function counted(target: PurgeTarget): PurgeTarget & { batches: number[] } {
  const batches: number[] = []
  return {
    table: target.table,
    batches,
    deleteBatch: async (limit) => {
      const deleted = await target.deleteBatch(limit)
      batches.push(deleted)
      return deleted
    },
  }
}

describe('PostgreSQL purge', () => {
  test('deletes rows older than the retention age in bounded batches, keeps the newer ones', async () => {
    const consumer = crypto.randomUUID()
    await markers(consumer, 2_500, 10)
    await markers(consumer, 20, 6)
    const rt = runtime()
    // Other tests' rows share the table: this one's are the only ones older than 7 days when it runs alone,
    // so count only its own consumer's rows.
    const target = counted(processedEventsPurge(sql, 7))
    const job = new RetentionJob([target], rt.logger, rt.metrics, { intervalMs: 60_000, batchSize: 1_000 })
    const deleted = await job.runPass()
    expect(await countOf(consumer)).toEqual({ old: 0, recent: 20 })
    expect(deleted.processed_events).toBeGreaterThanOrEqual(2_500)
    // Full batches of 1,000, then a short one ends the pass.
    expect(target.batches.slice(0, 2)).toEqual([1_000, 1_000])
    expect(target.batches.every((batch) => batch <= 1_000)).toBe(true)
    expect(target.batches.at(-1)).toBeLessThan(1_000)
    expect(await metric(rt, 'retention_purged_total', { table: 'processed_events' })).toBe(
      deleted.processed_events ?? -1,
    )
  })

  test('two replicas purging at once both succeed and delete each row once', async () => {
    const consumer = crypto.randomUUID()
    await markers(consumer, 6_000, 30)
    await markers(consumer, 10, 1)
    const [first, second] = [runtime(), runtime()]
    const otherPool = postgres(database.url, { max: 1, onnotice: () => undefined })
    try {
      const jobs = [
        new RetentionJob([processedEventsPurge(sql, 7)], first.logger, first.metrics, {
          intervalMs: 60_000,
          batchSize: 500,
        }),
        new RetentionJob([processedEventsPurge(otherPool, 7)], second.logger, second.metrics, {
          intervalMs: 60_000,
          batchSize: 500,
        }),
      ]
      const [a, b] = await Promise.all(jobs.map((job) => job.runPass()))
      expect(await countOf(consumer)).toEqual({ old: 0, recent: 10 })
      expect((a?.processed_events ?? 0) + (b?.processed_events ?? 0)).toBeGreaterThanOrEqual(6_000)
      expect(await metric(first, 'retention_failures_total', {})).toBe(0)
      expect(await metric(second, 'retention_failures_total', {})).toBe(0)
    } finally {
      await otherPool.end()
    }
  })

  test('rows whose age column is null (a live claim) are never purged', async () => {
    await sql`create table claims (id int primary key, completed_at timestamptz)`
    await sql`insert into claims values (1, null), (2, now() - interval '40 days'), (3, now())`
    const rt = runtime()
    const job = new RetentionJob(
      [postgresPurge(sql, { table: 'claims', column: 'completed_at', olderThanDays: 30 })],
      rt.logger,
      rt.metrics,
      { intervalMs: 60_000 },
    )
    expect(await job.runPass()).toEqual({ claims: 1 })
    expect((await sql<{ id: number }[]>`select id from claims order by id`).map((row) => row.id)).toEqual([
      1, 3,
    ])
  })

  test('a failing target is counted and logged; the other targets still run', async () => {
    const consumer = crypto.randomUUID()
    await markers(consumer, 5, 10)
    const rt = runtime()
    const job = new RetentionJob(
      [
        postgresPurge(sql, { table: 'no_such_table', column: 'created_at', olderThanDays: 1 }),
        processedEventsPurge(sql, 7),
      ],
      rt.logger,
      rt.metrics,
      { intervalMs: 60_000 },
    )
    const deleted = await job.runPass()
    expect(deleted.no_such_table).toBe(0)
    expect(await metric(rt, 'retention_failures_total', { table: 'no_such_table' })).toBe(1)
    expect(await countOf(consumer)).toEqual({ old: 0, recent: 0 })
  })
})

describe('schedule', () => {
  test('runs on its own every interval, and stops when the process drains', async () => {
    const consumer = crypto.randomUUID()
    await markers(consumer, 3, 10)
    const rt = runtime()
    startRetention(rt, [processedEventsPurge(sql, 7)], { RETENTION_INTERVAL_MS: 1_000 })
    await waitFor(async () => (await countOf(consumer)).old === 0, { what: 'the first pass' })
    // A second pass, a jittered interval later.
    await markers(consumer, 3, 10)
    await waitFor(async () => (await countOf(consumer)).old === 0, { what: 'the next pass' })

    await rt.lifecycle.shutdown()
    await markers(consumer, 3, 10)
    // Well past the longest jittered interval (1.2 s): nothing ran after the drain.
    await Bun.sleep(2_500)
    expect(await countOf(consumer)).toEqual({ old: 3, recent: 0 })
    await sql`delete from processed_events where consumer = ${consumer}`
  })
})

describe('MongoDB purge', () => {
  test('deletes consumed-event markers older than the retention age, keeps the newer ones', async () => {
    const markers = mongo.db.collection<{ _id: string; at: Date }>('processed_events')
    const old = new Date(Date.now() - 10 * 86_400_000)
    await markers.insertMany(Array.from({ length: 25 }, (_, index) => ({ _id: `old:${index}`, at: old })))
    // Written the way consumers write them.
    await consumeOnceMongo(mongo.db, 'test', 'recent', async () => undefined)
    const rt = runtime()
    const target = counted(processedEventsMongoPurge(mongo.db, 7))
    const job = new RetentionJob([target], rt.logger, rt.metrics, { intervalMs: 60_000, batchSize: 10 })
    expect(await job.runPass()).toEqual({ processed_events: 25 })
    expect(target.batches).toEqual([10, 10, 5])
    expect((await markers.find({}).toArray()).map((marker) => marker._id)).toEqual(['test:recent'])
    // The marker is still there, so the event is still deduplicated.
    expect(await consumeOnceMongo(mongo.db, 'test', 'recent', async () => undefined)).toBe(false)
  })
})
