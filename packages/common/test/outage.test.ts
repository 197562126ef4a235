import { afterAll, beforeAll, expect, test } from 'bun:test'
import {
  createPrivateRabbit,
  createTestDatabase,
  createTestMongo,
  type PrivateRabbit,
  type TestDatabase,
  type TestMongo,
  waitFor,
} from '@parley/testkit'
import { createRuntime, newId } from '../src'
import { buildEvent, type EventBus } from '../src/events'
import {
  createMongo,
  ensureOutboxIndexes,
  type MongoHandle,
  MongoOutbox,
  MongoOutboxRelay,
} from '../src/mongo'
import { createPostgres, enqueueEvents, outbox, PgOutboxRelay, type PostgresClient } from '../src/postgres'
import { collector, newBus, userRegistered } from './support'

// A broker of this file's own, so stopping it disturbs no other test.
let rabbit: PrivateRabbit
let database: TestDatabase
let mongoTarget: TestMongo
let pg: PostgresClient<{ outbox: typeof outbox }>
let mongo: MongoHandle
const runtime = createRuntime('outage-test', process.env.TEST_LOG_LEVEL ?? 'silent')

beforeAll(async () => {
  rabbit = await createPrivateRabbit()
  await rabbit.start()
  // The outbox tables as a service's migrations create them from the shared schema.
  database = await createTestDatabase(new URL('../../../services/auth/drizzle', import.meta.url))
  pg = createPostgres(database.url, { schema: { outbox } })
  mongoTarget = createTestMongo()
  mongo = createMongo(mongoTarget.url, mongoTarget.dbName)
  await ensureOutboxIndexes(mongo.db)
}, 90_000)

afterAll(async () => {
  await pg.close()
  await mongo.close()
  await database.drop()
  await mongoTarget.drop()
  await rabbit.destroy()
})

async function connectedBus(): Promise<EventBus> {
  const bus = newBus(rabbit.url, runtime)
  await bus.start()
  await bus.connected(60_000)
  return bus
}

test('broker stopped and restarted mid-stream: every outbox event is delivered', async () => {
  const bus = await connectedBus()
  const received = collector<'user.registered'>()
  await bus.subscribe({ queue: 'test.outage', handlers: { 'user.registered': received.handler } })
  const relay = new PgOutboxRelay(pg.sql, bus, runtime.logger, runtime.metrics, { pollIntervalMs: 100 })
  await relay.start()

  const written: string[] = []
  const writeSome = async (count: number) => {
    for (let index = 0; index < count; index++) {
      const event = buildEvent('parley/test', 'user.registered', userRegistered())
      await pg.db.transaction((tx) => enqueueEvents(tx, [event]))
      written.push(event.id)
      await Bun.sleep(5)
    }
  }
  await writeSome(50)
  const restart = (async () => {
    await rabbit.stop()
    await Bun.sleep(500)
    await rabbit.start()
  })()
  await writeSome(100)
  await restart
  await writeSome(50)

  await waitFor(() => written.every((id) => received.ids().includes(id)), {
    timeoutMs: 60_000,
    what: 'all 200 events',
  })
  expect(new Set(received.ids())).toEqual(new Set(written))
  await relay.stop()
  await bus.close()
}, 120_000)

test('PostgreSQL outbox: events written while the broker is down arrive after it returns', async () => {
  const bus = await connectedBus()
  const received = collector<'user.registered'>()
  await bus.subscribe({ queue: 'test.pg-outbox', handlers: { 'user.registered': received.handler } })
  const relay = new PgOutboxRelay(pg.sql, bus, runtime.logger, runtime.metrics, { pollIntervalMs: 100 })
  await relay.start()
  await rabbit.stop()

  const events = Array.from({ length: 5 }, () =>
    buildEvent('parley/test', 'user.registered', userRegistered()),
  )
  for (const event of events) await pg.db.transaction((tx) => enqueueEvents(tx, [event]))
  await Bun.sleep(500)
  const [pending] = await pg.sql<{ count: number }[]>`select count(*)::int as count from outbox`
  expect(pending?.count).toBe(5)

  await rabbit.start()
  await waitFor(() => events.every((event) => received.ids().includes(event.id)), {
    timeoutMs: 60_000,
    what: 'outbox drain',
  })
  // Deleted once the broker confirmed, which may be just after the consumer got them.
  await waitFor(
    async () =>
      (await pg.sql<{ count: number }[]>`select count(*)::int as count from outbox`)[0]?.count === 0,
    { what: 'the published rows to be deleted' },
  )
  await relay.stop()
  await bus.close()
}, 120_000)

test('MongoDB outbox: events stored with the document while the broker is down arrive after it returns', async () => {
  const bus = await connectedBus()
  const received = collector<'user.registered'>()
  await bus.subscribe({ queue: 'test.mongo-outbox', handlers: { 'user.registered': received.handler } })
  await rabbit.stop()

  const events = Array.from({ length: 5 }, () =>
    buildEvent('parley/test', 'user.registered', userRegistered()),
  )
  const outbox = new MongoOutbox(mongo.db)
  for (const event of events) {
    const id = newId()
    await outbox.stage({ collection: 'documents', id }, [event])
    await mongo.db.collection<{ _id: string; kind: string }>('documents').insertOne({ _id: id, kind: 'test' })
  }
  // The process "dies" before publishing: a relay that starts only now must find the pending events.
  const relay = new MongoOutboxRelay(mongo.db, bus, runtime.logger, runtime.metrics, { pollIntervalMs: 100 })
  relay.start()
  await Bun.sleep(500)
  expect(await mongo.db.collection('outbox').countDocuments({})).toBe(5)

  await rabbit.start()
  await waitFor(() => events.every((event) => received.ids().includes(event.id)), {
    timeoutMs: 60_000,
    what: 'outbox drain',
  })
  await waitFor(async () => (await mongo.db.collection('outbox').countDocuments({})) === 0, {
    what: 'outbox emptied',
  })
  expect(await mongo.db.collection('documents').countDocuments({ kind: 'test' })).toBe(5)
  await relay.stop()
  await bus.close()
}, 120_000)
