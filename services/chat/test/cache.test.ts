import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createServer } from 'node:net'
import { runReadinessChecks } from '@parley/common'
import type { Conversation, ConversationPage } from '../src/modules/conversations/model'
import type { Message, MessagePage } from '../src/modules/messages/model'
import { createHarness, type Harness } from './harness'

let chat: Harness

beforeAll(async () => {
  chat = await createHarness()
})

afterAll(() => chat.close())

function cacheCount(metrics: string, cache: string, result: string): number {
  const line = metrics
    .split('\n')
    .find(
      (l) =>
        l.startsWith('cache_requests_total{') &&
        l.includes(`cache="${cache}"`) &&
        l.includes(`result="${result}"`),
    )
  return line ? Number(line.split(' ').at(-1)) : 0
}

/** A port nothing listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  const port = typeof address === 'object' && address ? address.port : 0
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

describe('Redis cache', () => {
  test('display names: one Redis round trip for all participants, kept newest-first by the projection', async () => {
    const [alice, bob] = await Promise.all([chat.newUser('Alice'), chat.newUser('Bob')])
    const users = chat.deps.db.collection<{ _id: string }>('users')
    const created = await chat.call<Conversation>(alice, 'POST', '/conversations', { participantIds: [bob] })
    const view = async () =>
      Object.fromEntries(
        (
          await chat.call<Conversation>(alice, 'GET', `/conversations/${created.body.id}`)
        ).body.participants.map((participant) => [participant.userId, participant.displayName]),
      )
    expect(await view()).toEqual({ [alice]: 'Alice', [bob]: 'Bob' })
    // Served from Redis: the projection's documents are no longer read.
    await users.deleteMany({ _id: { $in: [alice, bob] } })
    const before = await chat.metricsText()
    expect(await view()).toEqual({ [alice]: 'Alice', [bob]: 'Bob' })
    const after = await chat.metricsText()
    expect(cacheCount(after, 'display_names', 'hit') - cacheCount(before, 'display_names', 'hit')).toBe(1)
    // A rename reaches the cache; an older event applied late does not undo it.
    const now = Date.now()
    await chat.deps.users.apply({ userId: bob, displayName: 'Robert', at: new Date(now + 1000) })
    await chat.deps.users.apply({ userId: bob, displayName: 'Bobby', at: new Date(now - 60_000) })
    expect(await view()).toEqual({ [alice]: 'Alice', [bob]: 'Robert' })
  })

  test('the latest page is served from the cache and refreshed by a new message', async () => {
    const [alice, bob] = await Promise.all([chat.newUser('A'), chat.newUser('B')])
    const created = await chat.call<Conversation>(alice, 'POST', '/conversations', { participantIds: [bob] })
    const path = `/conversations/${created.body.id}/messages`
    const first = await chat.call<Message>(alice, 'POST', path, { body: 'one' })

    const before = await chat.metricsText()
    const miss = await chat.call<MessagePage>(bob, 'GET', path)
    const hit = await chat.call<MessagePage>(bob, 'GET', `${path}?limit=1`)
    const after = await chat.metricsText()
    expect(miss.body.items.map((m) => m.id)).toEqual([first.body.id])
    expect(hit.body.items.map((m) => m.id)).toEqual([first.body.id])
    expect(cacheCount(after, 'latest_messages', 'miss') - cacheCount(before, 'latest_messages', 'miss')).toBe(
      1,
    )
    expect(cacheCount(after, 'latest_messages', 'hit') - cacheCount(before, 'latest_messages', 'hit')).toBe(1)
    expect(cacheCount(after, 'conversation', 'hit')).toBeGreaterThan(
      cacheCount(before, 'conversation', 'hit'),
    )

    const second = await chat.call<Message>(bob, 'POST', path, { body: 'two' })
    const refreshed = await chat.call<MessagePage>(alice, 'GET', path)
    expect(refreshed.body.items.map((m) => m.id)).toEqual([first.body.id, second.body.id])
  })

  test('cached conversation metadata follows every write', async () => {
    const [alice, bob, carol] = await Promise.all([chat.newUser('A'), chat.newUser('B'), chat.newUser('C')])
    const created = await chat.call<Conversation>(alice, 'POST', '/conversations', { participantIds: [bob] })
    const path = `/conversations/${created.body.id}`
    await chat.call(alice, 'GET', path)
    await chat.call(alice, 'PATCH', path, { title: 'renamed' })
    expect((await chat.call<Conversation>(bob, 'GET', path)).body.title).toBe('renamed')
    await chat.call(alice, 'POST', `${path}/participants`, { userIds: [carol] })
    expect((await chat.call(carol, 'GET', path)).status).toBe(200)
    await chat.call(bob, 'DELETE', `${path}/participants/me`)
    expect((await chat.call(bob, 'GET', path)).status).toBe(404)
    expect((await chat.call(bob, 'POST', `${path}/messages`, { body: 'still here?' })).status).toBe(404)
  })

  test('a concurrent stale fill cannot hide a newer message', async () => {
    const [alice, bob] = await Promise.all([chat.newUser('A'), chat.newUser('B')])
    const created = await chat.call<Conversation>(alice, 'POST', '/conversations', { participantIds: [bob] })
    const path = `/conversations/${created.body.id}/messages`
    // Readers and writers interleave; after the last write every read must end at the last message.
    const writes = Array.from({ length: 10 }, (_, i) =>
      chat.call<Message>(alice, 'POST', path, { body: `m${i}` }),
    )
    const reads = Array.from({ length: 10 }, () => chat.call<MessagePage>(bob, 'GET', path))
    const sent = await Promise.all(writes)
    await Promise.all(reads)
    const ids = sent.map((reply) => reply.body.id).sort()
    const latest = await chat.call<MessagePage>(bob, 'GET', path)
    expect(latest.body.items.map((m) => m.id)).toEqual(ids)
  })
})

describe('Redis down', () => {
  let degraded: Harness

  beforeAll(async () => {
    degraded = await createHarness({ redisUrl: `redis://127.0.0.1:${await closedPort()}` })
  })

  afterAll(() => degraded.close())

  test('every route still answers correctly, bypassing the cache', async () => {
    const [alice, bob] = await Promise.all([degraded.newUser('A'), degraded.newUser('B')])
    const created = await degraded.call<Conversation>(alice, 'POST', '/conversations', {
      participantIds: [bob],
    })
    expect(created.status).toBe(201)
    const path = `/conversations/${created.body.id}`
    const sent = await degraded.call<Message>(alice, 'POST', `${path}/messages`, { body: 'no cache' })
    expect(sent.status).toBe(201)
    const latest = await degraded.call<MessagePage>(bob, 'GET', `${path}/messages`)
    expect(latest.body.items.map((m) => m.id)).toEqual([sent.body.id])
    const list = await degraded.call<ConversationPage>(bob, 'GET', '/conversations')
    expect(list.body.items[0]).toMatchObject({ id: created.body.id, unreadCount: 1 })
    expect((await degraded.call(bob, 'POST', `${path}/read`, { messageId: sent.body.id })).status).toBe(200)
    expect((await degraded.call<Conversation>(bob, 'GET', path)).body.unreadCount).toBe(0)

    const metrics = await degraded.metricsText()
    expect(cacheCount(metrics, 'conversation', 'error')).toBeGreaterThan(0)
    expect(cacheCount(metrics, 'latest_messages', 'error')).toBeGreaterThan(0)
    // Redis is not critical for readiness: the pod keeps serving.
    const readiness = await runReadinessChecks(degraded.deps.readiness)
    expect(readiness.ok).toBe(true)
    expect(readiness.checks.redis).not.toBe('ok')
    expect(readiness.checks.mongodb).toBe('ok')
  })
})
