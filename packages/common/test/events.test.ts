import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { CloudEvent } from '@parley/contracts'
import {
  createTestDatabase,
  createTestVhost,
  type TestDatabase,
  type TestVhost,
  waitFor,
} from '@parley/testkit'
import amqp from 'amqplib'
import { eq, sql } from 'drizzle-orm'
import { integer, pgTable, text } from 'drizzle-orm/pg-core'
import { createRuntime } from '../src'
import { buildEvent, type EventBus, EventContractError } from '../src/events'
import { consumeOnce, createPostgres, processedEvents } from '../src/postgres'
import { collector, consumedCount, emailVerified, newBus, queuesNamed, userRegistered } from './support'

let vhost: TestVhost
let database: TestDatabase
let bus: EventBus
const runtime = createRuntime('events-test', process.env.TEST_LOG_LEVEL ?? 'silent')

beforeAll(async () => {
  vhost = await createTestVhost()
  database = await createTestDatabase()
  bus = newBus(vhost.url, runtime)
  await bus.start()
  await bus.connected()
})

afterAll(async () => {
  await bus.close()
  await vhost.drop()
  await database.drop()
})

describe('publish', () => {
  test('is confirmed and delivered to a bound queue', async () => {
    const received = collector<'user.registered'>()
    await bus.subscribe({ queue: 'test.publish', handlers: { 'user.registered': received.handler } })
    const event = await bus.publish('user.registered', userRegistered(), { correlationId: 'corr-1' })
    expect(event).toMatchObject({
      specversion: '1.0',
      source: 'parley/test',
      type: 'user.registered',
      correlationid: 'corr-1',
    })
    await waitFor(() => received.ids().includes(event.id), { what: 'delivery' })
  })

  test('refuses a payload that breaks the contract, before it reaches the broker', async () => {
    const invalid = { ...userRegistered(), email: 'not-an-email' }
    await expect(bus.publish('user.registered', invalid)).rejects.toBeInstanceOf(EventContractError)
    expect(() => buildEvent('parley/test', 'user.registered', { userId: 'x' } as never)).toThrow(
      EventContractError,
    )
  })
})

describe('consume', () => {
  test('each event goes to the handler of its type, typed by it', async () => {
    const handled: string[] = []
    await bus.subscribe({
      queue: 'test.dispatch',
      handlers: {
        'user.registered': async (event) => {
          handled.push(`registered ${event.data.displayName}`)
        },
        'user.email_verified': async (event) => {
          handled.push(`verified ${event.data.verifiedAt}`)
        },
      },
    })
    const verified = emailVerified()
    await bus.publish('user.registered', userRegistered({ displayName: 'Ada' }))
    await bus.publish('user.email_verified', verified)
    await waitFor(() => handled.length === 2, { what: 'both events' })
    expect(handled.sort()).toEqual(['registered Ada', `verified ${verified.verifiedAt}`])
  })

  test('an event of a type the queue is bound to but has no handler for is dead-lettered, not acked', async () => {
    const queue = 'test.unhandled'
    const received = collector<'user.registered'>()
    await bus.subscribe({ queue, handlers: { 'user.registered': received.handler } })
    // A binding an earlier version left behind.
    const connection = await amqp.connect(vhost.url)
    const channel = await connection.createChannel()
    await channel.bindQueue(queue, 'parley.events', 'user.email_verified')
    await connection.close()

    const orphan = await bus.publish('user.email_verified', emailVerified())
    const dead = await waitFor(
      async () => {
        const messages = await vhost.getMessages(`${queue}.dead`, 10)
        return messages.length === 1 ? messages : undefined
      },
      { what: 'the dead letter' },
    )
    expect(String(dead[0]!.properties.headers?.['x-parley-reason'])).toBe('unhandled')
    expect((JSON.parse(dead[0]!.payload) as CloudEvent).id).toBe(orphan.id)
    const labels = { queue, type: 'user.email_verified' }
    expect(await consumedCount(runtime.metrics, { ...labels, outcome: 'unhandled' })).toBe(1)
    expect(await consumedCount(runtime.metrics, { ...labels, outcome: 'ok' })).toBe(0)
    expect(received.seen).toEqual([])

    // The consumer keeps going, and the orphan is settled, not waiting for a redelivery.
    const valid = await bus.publish('user.registered', userRegistered())
    await waitFor(() => received.ids().includes(valid.id), { what: 'the handled event after it' })
    const check = await amqp.connect(vhost.url)
    const { messageCount } = await (await check.createChannel()).checkQueue(queue)
    await check.close()
    expect(messageCount).toBe(0)
  })

  test('on a transient queue an event without a handler is dropped and counted', async () => {
    const received = collector<'message.sent'>()
    await bus.subscribe({
      queue: 'test.transient-unhandled',
      transient: true,
      handlers: { 'message.sent': received.handler },
    })
    const [queue] = await waitFor(
      async () => {
        const names = await queuesNamed(vhost.name, 'test.transient-unhandled.')
        return names.length === 1 ? names : undefined
      },
      { what: 'the transient queue' },
    )
    // Exclusive: no other connection may bind it, but anyone may publish to it.
    const connection = await amqp.connect(vhost.url)
    const channel = await connection.createConfirmChannel()
    const orphan = buildEvent('parley/test', 'user.email_verified', emailVerified())
    channel.sendToQueue(queue!, Buffer.from(JSON.stringify(orphan)), { type: orphan.type })
    await channel.waitForConfirms()
    await connection.close()

    const labels = { queue: 'test.transient-unhandled', type: 'user.email_verified' }
    await waitFor(
      async () => (await consumedCount(runtime.metrics, { ...labels, outcome: 'unhandled' })) === 1,
      {
        what: 'the unhandled count',
      },
    )
    expect(await consumedCount(runtime.metrics, { ...labels, outcome: 'ok' })).toBe(0)
    expect(received.seen).toEqual([])
  })

  test('a handler map is typed by its keys: a wrong key or payload does not compile', async () => {
    // Never started: subscribe only records the map, so these lines are for tsc.
    const unstarted = newBus(vhost.url, runtime)
    await unstarted.subscribe({
      queue: 'test.types',
      handlers: {
        'user.registered': async (event) => {
          // @ts-expect-error user.registered carries no verifiedAt
          event.data.verifiedAt
        },
      },
    })
    await unstarted.subscribe({
      queue: 'test.types',
      handlers: {
        // @ts-expect-error not an event type of the contracts
        'user.deleted': async () => {},
      },
    })
    const onVerified = async (_event: CloudEvent<'user.email_verified'>) => {}
    await unstarted.subscribe({
      queue: 'test.types',
      handlers: {
        // @ts-expect-error a user.email_verified handler under the user.registered key
        'user.registered': onVerified,
      },
    })
    await expect(unstarted.subscribe({ queue: 'test.types', handlers: {} })).rejects.toThrow('no handlers')
    await unstarted.close()
  })

  test('an invalid message is dead-lettered and the consumer keeps going', async () => {
    const received = collector<'user.registered'>()
    await bus.subscribe({ queue: 'test.invalid', handlers: { 'user.registered': received.handler } })
    const connection = await amqp.connect(vhost.url)
    const channel = await connection.createConfirmChannel()
    channel.publish('parley.events', 'user.registered', Buffer.from('{"not":"a cloud event"}'), {
      type: 'user.registered',
    })
    channel.publish('parley.events', 'user.registered', Buffer.from('definitely not json'))
    const badData = buildEvent('parley/test', 'user.registered', userRegistered())
    channel.publish(
      'parley.events',
      'user.registered',
      Buffer.from(JSON.stringify({ ...badData, data: { userId: 1 } })),
    )
    await channel.waitForConfirms()
    await connection.close()

    const valid = await bus.publish('user.registered', userRegistered())
    await waitFor(() => received.ids().includes(valid.id), { what: 'valid event after invalid ones' })
    expect(received.seen).toHaveLength(1)
    const dead = await waitFor(
      async () => {
        const messages = await vhost.getMessages('test.invalid.dead', 10)
        return messages.length === 3 ? messages : undefined
      },
      { what: 'three dead letters' },
    )
    for (const message of dead)
      expect(String(message.properties.headers?.['x-parley-reason'])).toBe('invalid')
  })

  test('a failing handler is retried after each delay, then dead-lettered', async () => {
    const attempts: { attempt: number; at: number }[] = []
    await bus.subscribe({
      queue: 'test.retry',
      retryDelaysMs: [200, 400],
      handlers: {
        'user.registered': async (_event, { attempt }) => {
          attempts.push({ attempt, at: Date.now() })
          throw new Error('downstream unavailable')
        },
      },
    })
    await bus.publish('user.registered', userRegistered())
    await waitFor(() => attempts.length === 3, { what: 'three attempts' })
    expect(attempts.map((entry) => entry.attempt)).toEqual([0, 1, 2])
    expect(attempts[1]!.at - attempts[0]!.at).toBeGreaterThanOrEqual(190)
    expect(attempts[2]!.at - attempts[1]!.at).toBeGreaterThanOrEqual(390)
    const dead = await waitFor(
      async () => {
        const messages = await vhost.getMessages('test.retry.dead', 5)
        return messages.length === 1 ? messages : undefined
      },
      { what: 'the dead letter' },
    )
    expect(dead[0]!.properties.headers?.['x-parley-reason']).toBe('failed')
    expect(dead[0]!.properties.headers?.['x-parley-error']).toBe('Error')
    await Bun.sleep(700)
    expect(attempts).toHaveLength(3)
  })

  test('retryForever: a handler failing past the last delay keeps being retried at it, never dead-lettered', async () => {
    const attempts: number[] = []
    await bus.subscribe({
      queue: 'test.retry-forever',
      retryDelaysMs: [50, 100],
      retryForever: true,
      handlers: {
        'user.registered': async (_event, { attempt }) => {
          attempts.push(attempt)
          // Redis (say) is back after six failures: far more than the delays list holds.
          if (attempts.length <= 6) throw new Error('redis is down')
        },
      },
    })
    await bus.publish('user.registered', userRegistered())
    await waitFor(() => attempts.length === 7, { what: 'seven attempts' })
    expect(attempts).toEqual([0, 1, 2, 3, 4, 5, 6])
    expect(await vhost.getMessages('test.retry-forever.dead')).toHaveLength(0)
    // No extra retry queue was declared: the later attempts went through the last one.
    expect((await queuesNamed(vhost.name, 'test.retry-forever.retry.')).sort()).toEqual([
      'test.retry-forever.retry.1',
      'test.retry-forever.retry.2',
    ])
    await expect(
      bus.subscribe({
        queue: 'test.forever-nodelay',
        retryDelaysMs: [],
        retryForever: true,
        handlers: { 'user.registered': async () => {} },
      }),
    ).rejects.toThrow('no retry delays')
  })

  test('a handler that recovers on retry acknowledges the event once', async () => {
    let calls = 0
    const done: string[] = []
    await bus.subscribe({
      queue: 'test.recover',
      retryDelaysMs: [100],
      handlers: {
        'user.registered': async (event) => {
          calls++
          if (calls === 1) throw new Error('transient')
          done.push(event.id)
        },
      },
    })
    const event = await bus.publish('user.registered', userRegistered())
    await waitFor(() => done.includes(event.id), { what: 'recovery' })
    expect(await vhost.getMessages('test.recover.dead')).toHaveLength(0)
  })

  test('a duplicate delivery is applied once (consumeOnce)', async () => {
    const counters = pgTable('counters', {
      userId: text('user_id').primaryKey(),
      applied: integer('applied').notNull(),
    })
    const pg = createPostgres(database.url, { schema: { counters, processedEvents } })
    await pg.sql`create table processed_events (consumer text not null, event_id text not null, processed_at timestamptz not null default now(), primary key (consumer, event_id))`
    await pg.sql`create table counters (user_id text primary key, applied int not null)`
    const outcomes: boolean[] = []
    await bus.subscribe({
      queue: 'test.dedup',
      handlers: {
        'user.registered': async (event) => {
          outcomes.push(
            await consumeOnce(pg.db, 'test.dedup', event.id, async (tx) => {
              await tx
                .insert(counters)
                .values({ userId: event.data.userId, applied: 1 })
                .onConflictDoUpdate({
                  target: counters.userId,
                  set: { applied: sql`${counters.applied} + 1` },
                })
            }),
          )
        },
      },
    })
    const event = buildEvent('parley/test', 'user.registered', userRegistered())
    await bus.publishEvent(event)
    await bus.publishEvent(event)
    await waitFor(() => outcomes.length === 2, { what: 'two deliveries' })
    expect(outcomes.sort()).toEqual([false, true])
    const [row] = await pg.db.select().from(counters).where(eq(counters.userId, event.data.userId))
    expect(row?.applied).toBe(1)
    await pg.close()
  })

  test('transient subscriptions fan out to every process', async () => {
    const other = newBus(vhost.url)
    await other.start()
    await other.connected()
    const first = collector<'message.sent'>()
    const second = collector<'message.sent'>()
    await bus.subscribe({
      queue: 'test.fanout',
      transient: true,
      handlers: { 'message.sent': first.handler },
    })
    await other.subscribe({
      queue: 'test.fanout',
      transient: true,
      handlers: { 'message.sent': second.handler },
    })
    const event = await bus.publish('message.sent', {
      messageId: 'm-1',
      conversationId: 'c-1',
      senderId: Bun.randomUUIDv7(),
      recipientIds: [Bun.randomUUIDv7()],
      preview: 'hello',
      createdAt: new Date().toISOString(),
    })
    await waitFor(() => first.ids().includes(event.id) && second.ids().includes(event.id), {
      what: 'both replicas',
    })
    await other.close()
  })
})
