import { afterAll, beforeAll, expect, test } from 'bun:test'
import type { CloudEvent } from '@parley/contracts'
import {
  createTestMongo,
  createTestVhost,
  type TestMongo,
  type TestVhost,
  uniqueName,
  waitFor,
} from '@parley/testkit'
import { createRuntime, newId, type Runtime } from '../src'
import { buildEvent, type EventBus } from '../src/events'
import {
  createMongo,
  ensureOutboxIndexes,
  findByIds,
  type MongoHandle,
  MongoOutbox,
  MongoOutboxRelay,
} from '../src/mongo'
import { collector, newBus, userRegistered } from './support'

// Direct publishing: the request that wrote publishes its events itself (MongoOutbox `direct`).

const LOG_LEVEL = process.env.TEST_LOG_LEVEL ?? 'silent'

let vhost: TestVhost
let mongoTarget: TestMongo
let mongo: MongoHandle
const buses: EventBus[] = []

beforeAll(async () => {
  vhost = await createTestVhost()
  mongoTarget = createTestMongo()
  mongo = createMongo(mongoTarget.url, mongoTarget.dbName)
  await ensureOutboxIndexes(mongo.db)
}, 60_000)

afterAll(async () => {
  await Promise.all(buses.map((bus) => bus.close()))
  await mongo.close()
  await mongoTarget.drop()
  await vhost.drop()
})

async function connectedBus(runtime: Runtime): Promise<EventBus> {
  const bus = newBus(vhost.url, runtime)
  buses.push(bus)
  await bus.start()
  await bus.connected(15_000)
  return bus
}

/** Deliveries of user.registered on a queue of the test's own, in arrival order. */
async function deliveries(bus: EventBus) {
  const received = collector<'user.registered'>()
  await bus.subscribe({ queue: uniqueName('test.direct'), handlers: { 'user.registered': received.handler } })
  return { ids: received.ids, count: (id: string) => received.ids().filter((seen) => seen === id).length }
}

const events = (count: number) =>
  Array.from({ length: count }, () => buildEvent('parley/test', 'user.registered', userRegistered()))

/** What a service does per write: stage, write the subject, then `committed` (unless it died). */
async function write(outbox: MongoOutbox, event: CloudEvent, options: { commit?: boolean } = {}) {
  const id = newId()
  await outbox.stage({ collection: 'documents', id }, [event])
  await mongo.db.collection<{ _id: string }>('documents').insertOne({ _id: id })
  if (options.commit !== false) outbox.committed([event])
}

const outboxCount = (ids: readonly string[]) =>
  mongo.db.collection<{ _id: string }>('outbox').countDocuments({ _id: { $in: [...ids] } })

async function metricValue(runtime: Runtime, name: string, labels: Record<string, string> = {}) {
  const metric = runtime.metrics.registry.getSingleMetric(name)
  if (!metric) return undefined
  const { values } = await metric.get()
  return values.find((value) => Object.entries(labels).every(([key, v]) => value.labels[key] === v))?.value
}

test('each event is published right after its write, in write order, and deleted, with no relay running', async () => {
  const runtime = createRuntime('direct-order', LOG_LEVEL)
  const bus = await connectedBus(runtime)
  const seen = await deliveries(bus)
  const outbox = new MongoOutbox(mongo.db, { direct: { bus, runtime } })
  const sent = events(30)
  for (const event of sent) await write(outbox, event)
  await waitFor(() => sent.every((event) => seen.count(event.id) > 0), { what: 'the 30 events' })
  await outbox.settled()
  const ids = sent.map((event) => event.id)
  expect(seen.ids().filter((id) => ids.includes(id))).toEqual(ids)
  expect(await outboxCount(ids)).toBe(0)
  expect(await metricValue(runtime, 'outbox_direct_publishes_total', { outcome: 'published' })).toBe(30)
  expect(await metricValue(runtime, 'outbox_published_total')).toBe(30)
}, 30_000)

test('a written event never committed (the process died) is held from relays, then published once after the hold', async () => {
  const runtime = createRuntime('direct-died', LOG_LEVEL)
  const bus = await connectedBus(runtime)
  const seen = await deliveries(bus)
  const outbox = new MongoOutbox(mongo.db, { direct: { bus, runtime, holdMs: 1_500 } })
  const [event] = events(1) as [CloudEvent]
  await write(outbox, event, { commit: false })
  const relay = new MongoOutboxRelay(mongo.db, bus, runtime.logger, runtime.metrics, { pollIntervalMs: 50 })
  // Held by its stager: a relay looking now finds nothing to take.
  expect(await relay.relayBatch()).toBe(0)
  expect(seen.count(event.id)).toBe(0)
  relay.start()
  try {
    await waitFor(() => seen.count(event.id) > 0, { what: 'the relay to publish after the hold' })
    await waitFor(async () => (await outboxCount([event.id])) === 0, { what: 'the entry deleted' })
    await Bun.sleep(300)
    expect(seen.count(event.id)).toBe(1)
  } finally {
    await relay.stop()
  }
}, 30_000)

test('an event the broker does not take is handed back to the relay at once, not after the hold', async () => {
  const runtime = createRuntime('direct-refused', LOG_LEVEL)
  const bus = await connectedBus(runtime)
  const seen = await deliveries(bus)
  // A bus that never connected: every publish fails as when the broker is away.
  const away = newBus(vhost.url, createRuntime('direct-away', LOG_LEVEL))
  let kicked = 0
  const outbox = new MongoOutbox(mongo.db, {
    relay: { kick: () => kicked++ },
    direct: { bus: away, runtime, holdMs: 600_000 },
  })
  const [event] = events(1) as [CloudEvent]
  await write(outbox, event)
  await outbox.settled()
  expect(kicked).toBe(1)
  expect(await metricValue(runtime, 'outbox_direct_publishes_total', { outcome: 'relayed' })).toBe(1)
  const relay = new MongoOutboxRelay(mongo.db, bus, runtime.logger, runtime.metrics)
  expect(await relay.relayBatch()).toBe(1)
  await waitFor(() => seen.count(event.id) > 0, { what: 'the relayed event' })
  expect(await outboxCount([event.id])).toBe(0)
}, 30_000)

test('two replicas publishing directly beside two running relays publish each event exactly once', async () => {
  const runtimes = [createRuntime('direct-a', LOG_LEVEL), createRuntime('direct-b', LOG_LEVEL)]
  const replicaBuses = await Promise.all(runtimes.map((runtime) => connectedBus(runtime)))
  const seen = await deliveries(replicaBuses[0] as EventBus)
  const replicas = runtimes.map((runtime, index) => {
    const bus = replicaBuses[index] as EventBus
    const relay = new MongoOutboxRelay(mongo.db, bus, runtime.logger, runtime.metrics, { pollIntervalMs: 5 })
    relay.start()
    return { relay, outbox: new MongoOutbox(mongo.db, { relay, direct: { bus, runtime } }) }
  })
  const sent = events(80)
  try {
    // Concurrent writes on both: stages and deletes share writes (GroupCommit).
    await Promise.all(sent.map((event, index) => write((replicas[index % 2] ?? replicas[0])!.outbox, event)))
    await waitFor(() => sent.every((event) => seen.count(event.id) > 0), { what: 'all 80 events' })
    await Promise.all(replicas.map(({ outbox }) => outbox.settled()))
    await Bun.sleep(300)
    expect(sent.map((event) => seen.count(event.id)).filter((count) => count !== 1)).toEqual([])
    expect(await outboxCount(sent.map((event) => event.id))).toBe(0)
  } finally {
    await Promise.all(replicas.map(({ relay }) => relay.stop()))
  }
}, 60_000)

test('findByIds returns the documents that exist, each once, whatever the number of ids', async () => {
  const documents = mongo.db.collection<{ _id: string; n: number }>(uniqueName('by_ids'))
  const stored = Array.from({ length: 40 }, (_, n) => ({ _id: newId(), n }))
  await documents.insertMany(stored)
  const missing = [newId(), newId()]
  const wanted = [...stored.map((doc) => doc._id), ...missing, stored[0]?._id ?? '']
  const found = await findByIds(documents, wanted, { n: 1 })
  expect(found.map((doc) => doc.n).sort((a, b) => a - b)).toEqual(stored.map((doc) => doc.n))
  expect(await findByIds(documents, [], { n: 1 })).toEqual([])
})
