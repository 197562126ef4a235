import { afterAll, beforeAll, expect, test } from 'bun:test'
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net'
import type { CloudEvent } from '@parley/contracts'
import {
  createPrivateRabbit,
  createTestDatabase,
  createTestMongo,
  createTestVhost,
  type TestDatabase,
  type TestMongo,
  type TestVhost,
  testInfra,
  uniqueName,
  waitFor,
} from '@parley/testkit'
import { createRuntime, newId, type Runtime } from '../src'
import { BrokerUnavailableError, buildEvent, EventBus } from '../src/events'
import {
  createMongo,
  ensureOutboxIndexes,
  type MongoHandle,
  MongoOutbox,
  MongoOutboxRelay,
} from '../src/mongo'
import {
  createPostgres,
  enqueueEvents,
  outbox,
  outboxDead,
  PgOutboxRelay,
  type PostgresClient,
} from '../src/postgres'
import { collector, userRegistered } from './support'

const AUTH_MIGRATIONS = new URL('../../../services/auth/drizzle', import.meta.url)
const USER_MIGRATIONS = new URL('../../../services/user/drizzle', import.meta.url)
const LOG_LEVEL = process.env.TEST_LOG_LEVEL ?? 'silent'

let vhost: TestVhost
let database: TestDatabase
let pg: PostgresClient<{ outbox: typeof outbox; outboxDead: typeof outboxDead }>
let mongoTarget: TestMongo
let mongo: MongoHandle
const buses: EventBus[] = []

beforeAll(async () => {
  vhost = await createTestVhost()
  database = await createTestDatabase(AUTH_MIGRATIONS)
  pg = createPostgres(database.url, { schema: { outbox, outboxDead } })
  mongoTarget = createTestMongo()
  mongo = createMongo(mongoTarget.url, mongoTarget.dbName)
  await ensureOutboxIndexes(mongo.db)
}, 60_000)

afterAll(async () => {
  await Promise.all(buses.map((bus) => bus.close()))
  await pg.close()
  await mongo.close()
  await database.drop()
  await mongoTarget.drop()
  await vhost.drop()
})

/** A connected bus of its own runtime (each relay gets its own metrics). */
async function connectedBus(
  runtime: Runtime,
  url = vhost.url,
  options: { confirmTimeoutMs?: number; connectTimeoutMs?: number } = {},
): Promise<EventBus> {
  const bus = new EventBus({
    url,
    exchange: 'parley.events',
    source: 'parley/test',
    prefetch: 50,
    logger: runtime.logger,
    metrics: runtime.metrics,
    ...(options.confirmTimeoutMs ? { confirmTimeoutMs: options.confirmTimeoutMs } : {}),
  })
  buses.push(bus)
  await bus.start()
  await bus.connected(options.connectTimeoutMs ?? 15_000)
  return bus
}

/** Counts deliveries of user.registered per event id on a queue of the test's own. */
async function deliveries(bus: EventBus) {
  const received = collector<'user.registered'>()
  await bus.subscribe({ queue: uniqueName('test.outbox'), handlers: { 'user.registered': received.handler } })
  return {
    ids: received.ids,
    count: (id: string) => received.ids().filter((seen) => seen === id).length,
  }
}

const runtimeFor = (name: string) => createRuntime(name, LOG_LEVEL)

/** Current value of a metric series (a gauge is collected from the store by this read). */
async function metricValue(runtime: Runtime, name: string, labels: Record<string, string> = {}) {
  const metric = runtime.metrics.registry.getSingleMetric(name)
  if (!metric) return undefined
  const { values } = await metric.get()
  return values.find((value) => Object.entries(labels).every(([key, v]) => value.labels[key] === v))?.value
}

/** A user.registered envelope whose type this version does not know: what a newer replica may write. */
function unknownTypeEvent(): CloudEvent {
  const event = buildEvent('parley/test', 'user.registered', userRegistered())
  return { ...event, type: 'user.renamed_in_a_later_version' } as unknown as CloudEvent
}

/** A row whose `event` is no CloudEvent at all. */
function malformedEvent(): CloudEvent {
  return { id: newId(), type: 'user.registered', note: 'no envelope' } as unknown as CloudEvent
}

test('PostgreSQL: poison rows before and between good rows are dead-lettered after N attempts; the good rows are published exactly once', async () => {
  const runtime = runtimeFor('pg-poison-test')
  const bus = await connectedBus(runtime)
  const seen = await deliveries(bus)
  const good = [0, 1, 2].map(() => buildEvent('parley/test', 'user.registered', userRegistered()))
  const poison: [CloudEvent, CloudEvent] = [unknownTypeEvent(), malformedEvent()]
  // One batch in this order: poison, good, poison, good, good.
  for (const event of [poison[0], good[0], poison[1], good[1], good[2]] as CloudEvent[])
    await pg.db.transaction((tx) => enqueueEvents(tx, [event]))

  const relay = new PgOutboxRelay(pg.sql, bus, runtime.logger, runtime.metrics, {
    pollIntervalMs: 50,
    maxAttempts: 3,
    retryDelayMs: 20,
  })
  await relay.start()
  try {
    await waitFor(() => good.every((event) => seen.count(event.id) > 0), { what: 'the good events' })
    await waitFor(
      async () => {
        const [row] = await pg.sql<{ count: number }[]>`select count(*)::int as count from outbox_dead`
        return row?.count === 2
      },
      { what: 'both poison rows in outbox_dead' },
    )
    const dead = await pg.sql<
      { id: string; type: string; attempts: number; reason: string; error: string }[]
    >`
      select id, type, attempts, reason, error from outbox_dead order by id`
    expect([...dead]).toEqual(
      [
        { id: poison[0].id, type: 'user.renamed_in_a_later_version' },
        { id: poison[1].id, type: 'user.registered' },
      ]
        .map((row) => ({ ...row, attempts: 3, reason: 'invalid', error: 'EventContractError' }))
        .sort((a, b) => a.id.localeCompare(b.id)),
    )
    const [left] = await pg.sql<{ count: number }[]>`select count(*)::int as count from outbox`
    expect(left?.count).toBe(0)
    // The retries of the poison rows never republished the good ones.
    await Bun.sleep(300)
    expect(good.map((event) => seen.count(event.id))).toEqual([1, 1, 1])
    expect(await metricValue(runtime, 'outbox_dead_total', { reason: 'invalid' })).toBe(2)
    expect(await metricValue(runtime, 'outbox_dead')).toBe(2)
    expect(await metricValue(runtime, 'outbox_oldest_pending_seconds')).toBe(0)
  } finally {
    await relay.stop()
    await pg.sql`delete from outbox_dead`
  }
}, 30_000)

test('PostgreSQL: a failed row waits for its retry time with its attempts counted', async () => {
  const runtime = runtimeFor('pg-retry-test')
  const bus = await connectedBus(runtime)
  const poison = unknownTypeEvent()
  await pg.db.transaction((tx) => enqueueEvents(tx, [poison]))
  const relay = new PgOutboxRelay(pg.sql, bus, runtime.logger, runtime.metrics, {
    maxAttempts: 5,
    retryDelayMs: 60_000,
  })
  try {
    expect(await relay.relayBatch()).toBe(0)
    const [row] = await pg.sql<{ attempts: number; wait: number }[]>`
      select attempts, extract(epoch from next_attempt_at - now())::float8 as wait from outbox where id = ${poison.id}`
    expect(row?.attempts).toBe(1)
    expect(row?.wait).toBeGreaterThan(50)
    // Not due: the next batch leaves it alone.
    expect(await relay.relayBatch()).toBe(0)
    const [again] = await pg.sql<{ attempts: number }[]>`select attempts from outbox where id = ${poison.id}`
    expect(again?.attempts).toBe(1)
    expect(await metricValue(runtime, 'outbox_oldest_pending_seconds')).toBeGreaterThan(0)
  } finally {
    await pg.sql`delete from outbox where id = ${poison.id}`
  }
})

test("the user service's migrations create the same outbox tables as auth's", async () => {
  const userDatabase = await createTestDatabase(USER_MIGRATIONS)
  const columns = async (url: string) => {
    const client = createPostgres(url, { schema: {}, max: 1 })
    try {
      return await client.sql<{ table_name: string; column_name: string; data_type: string }[]>`
        select table_name, column_name, data_type from information_schema.columns
        where table_name in ('outbox', 'outbox_dead') order by table_name, column_name`
    } finally {
      await client.close()
    }
  }
  try {
    const user = await columns(userDatabase.url)
    expect(user).toEqual(await columns(database.url))
    expect(user.map((column) => `${column.table_name}.${column.column_name}`)).toContain(
      'outbox.next_attempt_at',
    )
    expect(user.map((column) => `${column.table_name}.${column.column_name}`)).toContain('outbox_dead.reason')
  } finally {
    await userDatabase.drop()
  }
})

/** Stages events and creates their subjects, as the chat service's writes do. */
async function stageWithSubjects(events: readonly CloudEvent[]): Promise<void> {
  const staged = new MongoOutbox(mongo.db)
  for (const event of events) {
    const id = newId()
    await staged.stage({ collection: 'documents', id }, [event])
    await mongo.db.collection<{ _id: string }>('documents').insertOne({ _id: id })
  }
}

test('MongoDB: poison entries are moved to outbox_dead after N attempts; the good entries are published exactly once', async () => {
  const runtime = runtimeFor('mongo-poison-test')
  const bus = await connectedBus(runtime)
  const seen = await deliveries(bus)
  const good = [0, 1, 2].map(() => buildEvent('parley/test', 'user.registered', userRegistered()))
  const poison: [CloudEvent, CloudEvent] = [unknownTypeEvent(), malformedEvent()]
  await stageWithSubjects([poison[0], good[0], poison[1], good[1], good[2]] as CloudEvent[])

  const relay = new MongoOutboxRelay(mongo.db, bus, runtime.logger, runtime.metrics, {
    pollIntervalMs: 50,
    maxAttempts: 3,
    retryDelayMs: 20,
  })
  relay.start()
  const dead = mongo.db.collection<{ _id: string; attempts: number; reason: string; error: string }>(
    'outbox_dead',
  )
  try {
    await waitFor(() => good.every((event) => seen.count(event.id) > 0), { what: 'the good events' })
    await waitFor(async () => (await dead.countDocuments({})) === 2, { what: 'both poison entries dead' })
    const rows = await dead
      .find({}, { projection: { _id: 1, attempts: 1, reason: 1, error: 1 } })
      .sort({ _id: 1 })
      .toArray()
    expect(rows).toEqual(
      poison
        .map((event) => ({ _id: event.id, attempts: 3, reason: 'invalid', error: 'EventContractError' }))
        .sort((a, b) => a._id.localeCompare(b._id)),
    )
    expect(await mongo.db.collection('outbox').countDocuments({})).toBe(0)
    await Bun.sleep(300)
    expect(good.map((event) => seen.count(event.id))).toEqual([1, 1, 1])
    expect(await metricValue(runtime, 'outbox_dead_total', { reason: 'invalid' })).toBe(2)
    expect(await metricValue(runtime, 'outbox_dead')).toBe(2)
  } finally {
    await relay.stop()
    await dead.deleteMany({})
  }
}, 30_000)

test('MongoDB: two relays on one database publish each of K entries exactly once', async () => {
  const runtimes = [runtimeFor('mongo-relay-a'), runtimeFor('mongo-relay-b')]
  const buses = await Promise.all(runtimes.map((runtime) => connectedBus(runtime)))
  const seen = await deliveries(buses[0] as EventBus)
  // Small batches and fast polls: the two relays keep reading the same pending entries.
  const relays = runtimes.map(
    (runtime, index) =>
      new MongoOutboxRelay(mongo.db, buses[index] as EventBus, runtime.logger, runtime.metrics, {
        pollIntervalMs: 5,
        batchSize: 7,
      }),
  )
  for (const relay of relays) relay.start()
  const events = Array.from({ length: 120 }, () =>
    buildEvent('parley/test', 'user.registered', userRegistered()),
  )
  try {
    for (const [index, event] of events.entries()) {
      await stageWithSubjects([event])
      // Both are woken by every write, as two chat replicas behind one load balancer would be by theirs.
      if (index % 3 === 0) for (const relay of relays) relay.kick()
    }
    await waitFor(() => events.every((event) => seen.count(event.id) > 0), {
      timeoutMs: 30_000,
      what: 'all entries delivered',
    })
    await waitFor(async () => (await mongo.db.collection('outbox').countDocuments({})) === 0, {
      what: 'outbox emptied',
    })
    await Bun.sleep(500)
    const counts = events.map((event) => seen.count(event.id))
    expect(counts.filter((count) => count !== 1)).toEqual([])
    const published = await Promise.all(
      runtimes.map((runtime) => metricValue(runtime, 'outbox_published_total')),
    )
    expect((published[0] ?? 0) + (published[1] ?? 0)).toBe(events.length)
  } finally {
    await Promise.all(relays.map((relay) => relay.stop()))
  }
}, 60_000)

/**
 * A TCP proxy to the shared broker that can freeze: from then on nothing passes either way, as
 * when a process hangs or is cut off, while its connection still looks open to it.
 */
async function freezableProxy(): Promise<{ port: number; freeze: () => void; close: () => Promise<void> }> {
  const [host, port] = testInfra.amqpHost.split(':')
  const sockets = new Set<Socket>()
  let frozen = false
  const server: Server = createServer((client) => {
    const upstream = tcpConnect(Number(port ?? 5672), host ?? '127.0.0.1')
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('error', () => undefined)
      socket.on('close', () => sockets.delete(socket))
    }
    client.on('data', (chunk) => frozen || upstream.write(chunk))
    upstream.on('data', (chunk) => frozen || client.write(chunk))
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (!address || typeof address === 'string') throw new Error('proxy has no port')
  return {
    port: address.port,
    freeze: () => {
      frozen = true
    },
    /** Refuses new connections, then cuts the open ones. */
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      for (const socket of sockets) socket.destroy()
      await closed
    },
  }
}

test('MongoDB: entries claimed by a relay that hangs are taken over once its lease expires, and published once', async () => {
  const proxy = await freezableProxy()
  const hungRuntime = runtimeFor('mongo-hung-relay')
  const url = new URL(vhost.url)
  url.port = String(proxy.port)
  const hungBus = await connectedBus(hungRuntime, url.toString(), { confirmTimeoutMs: 8_000 })
  const runtime = runtimeFor('mongo-takeover-relay')
  const bus = await connectedBus(runtime)
  const seen = await deliveries(bus)
  const events = Array.from({ length: 5 }, () =>
    buildEvent('parley/test', 'user.registered', userRegistered()),
  )
  await stageWithSubjects(events)
  // Long enough that a loaded machine still asks the second relay while the lease runs.
  const lease = { claimLeaseMs: 4_000, pollIntervalMs: 50 }
  const hung = new MongoOutboxRelay(mongo.db, hungBus, hungRuntime.logger, hungRuntime.metrics, lease)
  const relay = new MongoOutboxRelay(mongo.db, bus, runtime.logger, runtime.metrics, lease)
  try {
    proxy.freeze()
    // It claims the entries, then waits for confirms that never come.
    const hungBatch = hung.relayBatch().then(
      () => 'returned',
      (error: unknown) => error,
    )
    await waitFor(
      async () => (await mongo.db.collection('outbox_claims').countDocuments({})) >= events.length,
      {
        what: 'the hung relay to claim',
      },
    )
    // While the lease runs nobody else takes them.
    expect(await relay.relayBatch()).toBe(0)
    relay.start()
    await waitFor(() => events.every((event) => seen.count(event.id) > 0), { what: 'the takeover' })
    // The hung relay gives up (no confirm); its late writes name a claim that moved on.
    expect(await hungBatch).toBeInstanceOf(BrokerUnavailableError)
    await Bun.sleep(300)
    expect(events.map((event) => seen.count(event.id))).toEqual([1, 1, 1, 1, 1])
    expect(await mongo.db.collection('outbox').countDocuments({})).toBe(0)
    expect(await mongo.db.collection('outbox_dead').countDocuments({})).toBe(0)
  } finally {
    await relay.stop()
    await proxy.close()
    // Closed only once it noticed the cut: amqplib's close waits for an answer on a dead socket.
    await waitFor(() => !hungBus.isConnected, { what: 'the hung bus to notice' })
    await hungBus.close()
  }
}, 30_000)

test('broker down: nothing is dead-lettered, even at one allowed attempt, and every event arrives after it returns', async () => {
  const rabbit = await createPrivateRabbit()
  await rabbit.start()
  const runtimes = { pg: runtimeFor('pg-outage-relay'), mongo: runtimeFor('mongo-outage-relay') }
  const consumerRuntime = runtimeFor('outage-consumer')
  // A single counted failure would dead-letter: an outage must count none.
  const options = { pollIntervalMs: 20, maxAttempts: 1, retryDelayMs: 10, maxBackoffMs: 300 }
  const relays: { stop: () => Promise<void> }[] = []
  try {
    const consumer = await connectedBus(consumerRuntime, rabbit.url, { connectTimeoutMs: 60_000 })
    const seen = await deliveries(consumer)
    const pgBus = await connectedBus(runtimes.pg, rabbit.url, { connectTimeoutMs: 60_000 })
    const mongoBus = await connectedBus(runtimes.mongo, rabbit.url, { connectTimeoutMs: 60_000 })
    const pgRelay = new PgOutboxRelay(pg.sql, pgBus, runtimes.pg.logger, runtimes.pg.metrics, options)
    const mongoRelay = new MongoOutboxRelay(
      mongo.db,
      mongoBus,
      runtimes.mongo.logger,
      runtimes.mongo.metrics,
      options,
    )
    await pgRelay.start()
    mongoRelay.start()
    relays.push(pgRelay, mongoRelay)

    const written: string[] = []
    const writeSome = async (count: number) => {
      for (let index = 0; index < count; index++) {
        const [pgEvent, mongoEvent] = [0, 1].map(() =>
          buildEvent('parley/test', 'user.registered', userRegistered()),
        ) as [CloudEvent, CloudEvent]
        await pg.db.transaction((tx) => enqueueEvents(tx, [pgEvent]))
        await stageWithSubjects([mongoEvent])
        mongoRelay.kick()
        written.push(pgEvent.id, mongoEvent.id)
        await Bun.sleep(3)
      }
    }
    await writeSome(40)
    // Stopped while both relays are publishing: batches fail part-way.
    const stopped = rabbit.stop()
    await writeSome(40)
    await stopped
    await writeSome(10)
    await Bun.sleep(500)
    expect(await metricValue(runtimes.pg, 'outbox_oldest_pending_seconds')).toBeGreaterThan(0)
    expect(await metricValue(runtimes.mongo, 'outbox_oldest_pending_seconds')).toBeGreaterThan(0)
    await rabbit.start()
    await waitFor(() => written.every((id) => seen.count(id) > 0), {
      timeoutMs: 60_000,
      what: 'every event after the broker returned',
    })
    const [dead] = await pg.sql<{ count: number }[]>`select count(*)::int as count from outbox_dead`
    expect(dead?.count).toBe(0)
    expect(await mongo.db.collection('outbox_dead').countDocuments({})).toBe(0)
    await waitFor(async () => (await mongo.db.collection('outbox').countDocuments({})) === 0, {
      what: 'MongoDB outbox emptied',
    })
    await waitFor(
      async () =>
        (await pg.sql<{ count: number }[]>`select count(*)::int as count from outbox`)[0]?.count === 0,
      { what: 'PostgreSQL outbox emptied' },
    )
    for (const runtime of Object.values(runtimes))
      expect(await metricValue(runtime, 'outbox_dead_total')).toBeUndefined()
  } finally {
    await Promise.all(relays.map((relay) => relay.stop()))
    await rabbit.destroy()
  }
}, 150_000)
