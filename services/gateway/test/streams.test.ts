import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { Metrics } from '@parley/common'
import { buildEvent, EventBus } from '@parley/common/events'
import { closeRedis, createRedis, type Redis } from '@parley/common/redis'
import { type CloudEvent, USER_STREAM_EVENT_TYPES } from '@parley/contracts'
import {
  createTestSigner,
  createTestVhost,
  type TestVhost,
  testInfra,
  testLogger,
  testRedisPrefix,
  waitFor,
} from '@parley/testkit'
import { GATEWAY_DOCUMENT } from '../src/modules/docs/model'
import { decodeCursor, encodeCursor } from '../src/modules/sync/model'
import { EPOCH_KEY, streamKey } from '../src/modules/sync/service'
import {
  metricValue,
  openSocket,
  startGateway,
  startJwksServer,
  type TestGateway,
  type TestSocket,
} from './harness'

type Frame = { type: string; id?: string; cursor?: string; data?: { seq?: number; messageId?: string } }
type SyncPage = { events: Frame[]; cursor: string; hasMore: boolean }

let signer: Awaited<ReturnType<typeof createTestSigner>>
let jwks: ReturnType<typeof startJwksServer>
/** Two replicas of one deployment, and a third one of it that the resume test restarts. */
let vhost: TestVhost
let first: TestGateway
let second: TestGateway
let third: TestGateway | undefined
let restarted: TestGateway | undefined
let publisher: EventBus
let redis: Redis
const redisKeyPrefix = testRedisPrefix()
/** A deployment of its own with a tiny per-user stream and authenticated limit. */
let smallVhost: TestVhost
let small: TestGateway
let smallPublisher: EventBus
const sockets: TestSocket[] = []

function busOn(url: string): EventBus {
  return new EventBus({
    url,
    exchange: 'parley.events',
    source: 'parley/chat',
    prefetch: 10,
    logger: testLogger(),
    metrics: new Metrics('test'),
  })
}

const env = (url: string) => ({ AMQP_URL: url, JWKS_URL: jwks.url })

beforeAll(async () => {
  signer = await createTestSigner()
  jwks = startJwksServer(signer.jwks)
  ;[vhost, smallVhost] = await Promise.all([createTestVhost(), createTestVhost()])
  ;[first, second, third, small] = await Promise.all([
    startGateway(env(vhost.url), { redisKeyPrefix }),
    startGateway(env(vhost.url), { redisKeyPrefix }),
    startGateway(env(vhost.url), { redisKeyPrefix }),
    startGateway(
      {
        ...env(smallVhost.url),
        STREAM_MAX_EVENTS: '10',
        RATE_LIMIT_POLICIES: '{"authenticated":{"limit":10,"windowSeconds":60}}',
      },
      { redisKeyPrefix: testRedisPrefix() },
    ),
  ])
  publisher = busOn(vhost.url)
  smallPublisher = busOn(smallVhost.url)
  await Promise.all([publisher.start(), smallPublisher.start()])
  await Promise.all([publisher.connected(), smallPublisher.connected()])
  redis = createRedis(testInfra.redisUrl, testLogger(), { keyPrefix: redisKeyPrefix })
  await waitFor(() => redis.status === 'ready', { what: 'redis' })
})

afterAll(async () => {
  for (const socket of sockets) socket.close()
  await Promise.all([publisher?.close(), smallPublisher?.close()])
  await Promise.all([first?.stop(), second?.stop(), third?.stop(), restarted?.stop(), small?.stop()])
  await jwks?.stop()
  if (redis) await closeRedis(redis)
  await Promise.all([vhost?.drop(), smallVhost?.drop()])
})

const token = (userId: string) => signer.sign({ sub: userId })

async function connect(gateway: TestGateway, userId: string, since?: string): Promise<TestSocket> {
  const url = since ? `${gateway.wsUrl}?since=${since}` : gateway.wsUrl
  const socket = await openSocket(url, await token(userId))
  sockets.push(socket)
  return socket
}

async function readyCursor(socket: TestSocket, timeoutMs = 10_000): Promise<string> {
  const ready = await socket.next<Frame>((frame) => frame.type === 'ready', timeoutMs)
  return ready.cursor as string
}

function messageEvent(senderId: string, recipientIds: string[], seq: number, conversationId = 'c-resume') {
  return buildEvent('parley/chat', 'message.sent', {
    messageId: `${conversationId}-${seq}`,
    conversationId,
    seq,
    senderId,
    recipientIds,
    preview: `message ${seq}`,
    createdAt: new Date().toISOString(),
  })
}

/** The frames of the stream protocol (the ephemeral typing/presence frames left out). */
const STREAM_FRAME_TYPES = new Set<string>([...USER_STREAM_EVENT_TYPES, 'ready', 'resync_required'])
const streamFrames = (socket: TestSocket) =>
  (socket.messages as Frame[]).filter((frame) => STREAM_FRAME_TYPES.has(frame.type))
const messagesOf = (socket: TestSocket) =>
  (socket.messages as Frame[]).filter((frame) => frame.type === 'message.sent')
const seqs = (frames: Frame[]) => frames.map((frame) => frame.data?.seq)
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, index) => from + index)

async function sync(gateway: TestGateway, userId: string, query = ''): Promise<Response> {
  return fetch(`${gateway.url}/api/v1/sync${query}`, {
    headers: { authorization: `Bearer ${await token(userId)}` },
  })
}

async function syncPage(gateway: TestGateway, userId: string, query = ''): Promise<SyncPage> {
  const response = await sync(gateway, userId, query)
  expect(response.status).toBe(200)
  return (await response.json()) as SyncPage
}

async function currentEpoch(): Promise<string> {
  return (await redis.get(EPOCH_KEY)) as string
}

describe('resume after a disconnection', () => {
  test('a client away for 60 s while 100 messages arrive gets all 100 exactly once and in order: same replica, other replica, restarted replica', async () => {
    const [sender, alice, bob, carol] = range(1, 4).map(() => Bun.randomUUIDv7())
    const recipients = [alice, bob, carol] as string[]
    const replica = third as TestGateway
    const before = await Promise.all([
      connect(first, alice as string),
      connect(first, bob as string),
      connect(replica, carol as string),
    ])
    await Promise.all(before.map((socket) => readyCursor(socket)))
    for (const seq of range(1, 3))
      await publisher.publishEvent(messageEvent(sender as string, recipients, seq))
    await Promise.all(
      before.map((socket) => waitFor(() => messagesOf(socket).length === 3, { what: 'the live messages' })),
    )
    const cursors = before.map((socket) => messagesOf(socket).at(-1)?.cursor as string)
    for (const socket of before) socket.close()
    await Promise.all(before.map((socket) => socket.closed))

    // The replica carol was on goes away (graceful shutdown) and a new one starts meanwhile.
    await replica.stop()
    third = undefined
    const starting = startGateway(env(vhost.url), { redisKeyPrefix })
    for (const seq of range(4, 103)) {
      await publisher.publishEvent(messageEvent(sender as string, recipients, seq))
      await Bun.sleep(600)
    }
    restarted = await starting

    const after = await Promise.all([
      connect(first, alice as string, cursors[0]),
      connect(second, bob as string, cursors[1]),
      connect(restarted, carol as string, cursors[2]),
    ])
    await Promise.all(after.map((socket) => readyCursor(socket, 20_000)))
    await publisher.publishEvent(messageEvent(sender as string, recipients, 104))
    for (const socket of after) {
      await waitFor(() => messagesOf(socket).some((frame) => frame.data?.seq === 104), {
        what: 'the next live message',
      })
      // Replayed 4–103, then live: each once, in order, `ready` between replay and live.
      expect(seqs(messagesOf(socket))).toEqual(range(4, 104))
      const types = streamFrames(socket).map((frame) => frame.type)
      expect(types.indexOf('ready')).toBe(100)
      expect(types).not.toContain('resync_required')
    }
    const replayed = async (gateway: TestGateway) =>
      metricValue(await gateway.metrics(), 'realtime_replayed_events_total', { via: 'websocket' })
    expect(await replayed(first)).toBeGreaterThanOrEqual(100)
    expect(await replayed(second)).toBeGreaterThanOrEqual(100)
    expect(await replayed(restarted)).toBeGreaterThanOrEqual(100)
  }, 120_000)

  test('replay then live: events that keep arriving during the replay come once, in order, no gap', async () => {
    const [sender, reader] = [Bun.randomUUIDv7(), Bun.randomUUIDv7()]
    const { cursor } = await syncPage(second, reader)
    const publish = async (from: number, to: number) => {
      for (const seq of range(from, to))
        await publisher.publishEvent(messageEvent(sender, [reader], seq, 'c-overlap'))
    }
    await publish(1, 300)
    await waitFor(async () => (await redis.xlen(streamKey(reader))) === 300, { what: 'the backlog' })
    const more = publish(301, 600)
    const socket = await connect(first, reader, cursor)
    await more
    await waitFor(() => messagesOf(socket).length >= 600, { what: 'every message', timeoutMs: 20_000 })
    await Bun.sleep(200)
    expect(seqs(messagesOf(socket))).toEqual(range(1, 600))
    expect(streamFrames(socket).filter((frame) => frame.type === 'ready')).toHaveLength(1)
    // Cursors advance with every frame.
    const ids = messagesOf(socket).map((frame) => decodeCursor(frame.cursor as string)?.id)
    expect(new Set(ids).size).toBe(600)
  })

  test('a socket without a resume point gets the current cursor first, then live events', async () => {
    const [sender, reader] = [Bun.randomUUIDv7(), Bun.randomUUIDv7()]
    await publisher.publishEvent(messageEvent(sender, [reader], 1, 'c-fresh'))
    await waitFor(async () => (await redis.xlen(streamKey(reader))) === 1, { what: 'the first message' })
    const socket = await connect(second, reader)
    const cursor = await readyCursor(socket)
    expect(streamFrames(socket)[0]).toEqual({ type: 'ready', cursor })
    await publisher.publishEvent(messageEvent(sender, [reader], 2, 'c-fresh'))
    const live = await socket.next<Frame>((frame) => frame.type === 'message.sent')
    expect(live.data?.seq).toBe(2)
    // Resuming from the ready cursor over HTTP gives the same event.
    const page = await syncPage(first, reader, `?since=${cursor}`)
    expect(page.events.map((frame) => frame.id)).toEqual([live.id])
    expect(page.cursor).toBe(live.cursor as string)
  })

  test('a replica whose push subscription dropped catches its sockets up from the streams once it is back', async () => {
    const [sender, reader] = [Bun.randomUUIDv7(), Bun.randomUUIDv7()]
    const socket = await connect(second, reader)
    await readyCursor(socket)
    await publisher.publishEvent(messageEvent(sender, [reader], 1, 'c-feed'))
    await waitFor(() => messagesOf(socket).length === 1, { what: 'the first message' })
    // The replica's own pub/sub connection (private: reached into on purpose).
    const { subscriber } = (second.deps.hub as unknown as { feed: { subscriber: Redis } }).feed
    subscriber.disconnect(false)
    for (const seq of range(2, 10))
      await publisher.publishEvent(messageEvent(sender, [reader], seq, 'c-feed'))
    await waitFor(async () => (await redis.xlen(streamKey(reader))) === 10, { what: 'the missed messages' })
    expect(messagesOf(socket)).toHaveLength(1)
    await subscriber.connect()
    await waitFor(() => messagesOf(socket).length === 10, { what: 'the catch-up' })
    await publisher.publishEvent(messageEvent(sender, [reader], 11, 'c-feed'))
    await waitFor(() => messagesOf(socket).length === 11, { what: 'live again' })
    expect(seqs(messagesOf(socket))).toEqual(range(1, 11))
  })

  test('the same event delivered twice is appended and pushed once', async () => {
    const [sender, reader] = [Bun.randomUUIDv7(), Bun.randomUUIDv7()]
    const socket = await connect(first, reader)
    const cursor = await readyCursor(socket)
    const event = messageEvent(sender, [reader], 1, 'c-twice')
    const duplicatesBefore = await duplicates()
    await publisher.publishEvent(event)
    await publisher.publishEvent(event)
    await waitFor(async () => (await duplicates()) > duplicatesBefore, { what: 'the duplicate' })
    await publisher.publishEvent(messageEvent(sender, [reader], 2, 'c-twice'))
    await waitFor(() => messagesOf(socket).length === 2, { what: 'the next message' })
    await Bun.sleep(100)
    expect(messagesOf(socket).map((frame) => frame.id)).toEqual([event.id, expect.any(String)])
    expect(await redis.xlen(streamKey(reader))).toBe(2)
    expect((await syncPage(second, reader, `?since=${cursor}`)).events).toHaveLength(2)
  })
})

async function duplicates(): Promise<number> {
  let total = 0
  for (const gateway of [first, second, third, restarted])
    if (gateway)
      total += metricValue(await gateway.metrics(), 'realtime_stream_appends_total', { outcome: 'duplicate' })
  return total
}

describe('resync', () => {
  test('a cursor older than the retention: 410 on /sync, resync_required on the socket, then it continues', async () => {
    const [sender, reader] = [Bun.randomUUIDv7(), Bun.randomUUIDv7()]
    await publisher.publishEvent(messageEvent(sender, [reader], 1, 'c-old'))
    await waitFor(async () => (await redis.xlen(streamKey(reader))) === 1, { what: 'the message' })
    const old = encodeCursor({ epoch: await currentEpoch(), id: `${Date.now() - 8 * 86_400_000}-0` })
    const response = await sync(first, reader, `?since=${old}`)
    expect(response.status).toBe(410)
    expect(response.headers.get('content-type')).toContain('application/problem+json')
    const problem = (await response.json()) as { type: string; status: number; cursor: string }
    expect(problem.type).toBe('https://parley.dev/problems/resync-required')
    expect(decodeCursor(problem.cursor)).toBeDefined()
    // The fresh cursor resumes from now.
    await publisher.publishEvent(messageEvent(sender, [reader], 2, 'c-old'))
    await waitFor(async () => (await redis.xlen(streamKey(reader))) === 2, { what: 'the next message' })
    expect(seqs((await syncPage(first, reader, `?since=${problem.cursor}`)).events)).toEqual([2])

    const socket = await connect(second, reader, old)
    const resync = await socket.next<Frame>((frame) => frame.type === 'resync_required')
    expect(decodeCursor(resync.cursor as string)).toBeDefined()
    await readyCursor(socket)
    expect(messagesOf(socket)).toHaveLength(0)
    expect(metricValue(await first.metrics(), 'realtime_resyncs_total', { reason: 'expired' })).toBe(1)
    expect(metricValue(await second.metrics(), 'realtime_resyncs_total', { reason: 'expired' })).toBe(1)
  })

  test('a cursor of another epoch (Redis lost the streams) is refused', async () => {
    const reader = Bun.randomUUIDv7()
    const epoch = await currentEpoch()
    const foreign = encodeCursor({
      epoch: epoch === 'ffffffffffffffff' ? '0000000000000000' : 'ffffffffffffffff',
      id: `${Date.now()}-0`,
    })
    expect((await sync(second, reader, `?since=${foreign}`)).status).toBe(410)
    const socket = await connect(first, reader, foreign)
    await socket.next<Frame>((frame) => frame.type === 'resync_required')
    expect(metricValue(await second.metrics(), 'realtime_resyncs_total', { reason: 'epoch' })).toBe(1)
  })

  test('a cursor before events trimmed by STREAM_MAX_EVENTS is refused; a recent one still resumes', async () => {
    const [sender, reader] = [Bun.randomUUIDv7(), Bun.randomUUIDv7()]
    const socket = await openSocket(small.wsUrl, await token(reader))
    sockets.push(socket)
    const start = await readyCursor(socket)
    for (const seq of range(1, 80))
      await smallPublisher.publishEvent(messageEvent(sender, [reader], seq, 'c-trim'))
    await waitFor(() => messagesOf(socket).length === 80, { what: 'the live messages' })
    socket.close()
    const recent = messagesOf(socket)[75]?.cursor as string
    const trimmed = await sync(small, reader, `?since=${start}`)
    expect(trimmed.status).toBe(410)
    expect(metricValue(await small.metrics(), 'realtime_resyncs_total', { reason: 'trimmed' })).toBe(1)
    expect(seqs((await syncPage(small, reader, `?since=${recent}`)).events)).toEqual([77, 78, 79, 80])
  })
})

describe('GET /api/v1/sync', () => {
  test('pages through the stream with hasMore; without since it returns the current cursor', async () => {
    const [sender, reader] = [Bun.randomUUIDv7(), Bun.randomUUIDv7()]
    const start = await syncPage(first, reader)
    expect(start).toEqual({ events: [], cursor: expect.any(String), hasMore: false })
    for (const seq of range(1, 250))
      await publisher.publishEvent(messageEvent(sender, [reader], seq, 'c-pages'))
    await waitFor(async () => (await redis.xlen(streamKey(reader))) === 250, { what: 'the messages' })
    const pages: SyncPage[] = []
    let cursor = start.cursor
    for (let page = 0; page < 3; page++) {
      const response = await sync(page % 2 ? second : first, reader, `?since=${cursor}&limit=100`)
      expect(response.headers.get('ratelimit-policy')).toContain('authenticated')
      pages.push((await response.json()) as SyncPage)
      cursor = pages.at(-1)?.cursor as string
    }
    expect(pages.map((page) => [page.events.length, page.hasMore])).toEqual([
      [100, true],
      [100, true],
      [50, false],
    ])
    expect(seqs(pages.flatMap((page) => page.events))).toEqual(range(1, 250))
    expect(pages[0]?.events[0]).toEqual({
      type: 'message.sent',
      id: expect.any(String),
      cursor: expect.any(String),
      data: expect.objectContaining({ messageId: 'c-pages-1', seq: 1, senderId: sender }),
    })
    expect(await syncPage(first, reader, `?since=${cursor}`)).toEqual({ events: [], cursor, hasMore: false })
    expect(metricValue(await first.metrics(), 'realtime_replays_total', { via: 'sync' })).toBeGreaterThan(0)
  })

  test('401 without a token or with a revoked session; 422 naming the field for a bad limit or cursor', async () => {
    const unauthenticated = await fetch(`${first.url}/api/v1/sync?limit=0`)
    expect(unauthenticated.status).toBe(401)
    expect(unauthenticated.headers.get('content-type')).toContain('application/problem+json')

    const reader = Bun.randomUUIDv7()
    for (const [query, field] of [
      ['?limit=0', 'query.limit'],
      ['?limit=501', 'query.limit'],
      ['?limit=ten', 'query.limit'],
      ['?since=not-a-cursor', 'query.since'],
      [`?since=${Buffer.from('x:1-0').toString('base64url')}`, 'query.since'],
    ] as const) {
      const response = await sync(second, reader, query)
      expect(response.status).toBe(422)
      const problem = (await response.json()) as { errors: { field: string }[] }
      expect(problem.errors.map((error) => error.field)).toEqual([field])
    }
    // The WebSocket refuses a malformed resume point before the upgrade.
    await expect(connect(first, reader, 'not-a-cursor')).rejects.toThrow()

    const sessionId = crypto.randomUUID()
    const revokedToken = await signer.sign({ sub: reader, sid: sessionId })
    await publisher.publishEvent(
      buildEvent('parley/auth', 'user.session_revoked', {
        userId: reader,
        sessionId,
        reason: 'logout',
        revokedAt: new Date().toISOString(),
      }),
    )
    await waitFor(
      async () =>
        (await fetch(`${first.url}/api/v1/sync`, { headers: { authorization: `Bearer ${revokedToken}` } }))
          .status === 401,
      { what: 'the revocation' },
    )
  })

  test('is charged to the authenticated rate limit (429 with Retry-After)', async () => {
    const reader = Bun.randomUUIDv7()
    const statuses: number[] = []
    let retryAfter: string | null = null
    for (let call = 0; call < 11; call++) {
      const response = await sync(small, reader)
      statuses.push(response.status)
      if (response.status === 429) retryAfter = response.headers.get('retry-after')
    }
    expect(statuses).toEqual([...Array(10).fill(200), 429])
    expect(Number(retryAfter)).toBeGreaterThan(0)
  })

  test('is documented: every answer, problems as problem+json, the resync cursor', () => {
    const operation = GATEWAY_DOCUMENT.paths?.['/api/v1/sync']?.get as {
      parameters: { name: string }[]
      responses: Record<
        string,
        { content: Record<string, { schema: { properties?: Record<string, unknown> } }> }
      >
    }
    expect(operation.parameters.map((parameter) => parameter.name)).toEqual(['since', 'limit'])
    expect(Object.keys(operation.responses).sort()).toEqual(['200', '401', '410', '422', '429'])
    for (const status of ['401', '410', '422', '429'])
      expect(operation.responses[status]?.content['application/problem+json']).toBeDefined()
    expect(
      operation.responses['410']?.content['application/problem+json']?.schema.properties?.cursor,
    ).toBeDefined()
    const ws = JSON.stringify(GATEWAY_DOCUMENT.paths?.['/api/v1/ws'])
    for (const word of ['since', 'ready', 'resync_required', 'cursor']) expect(ws).toContain(word)
  })
})

describe('audience', () => {
  test('a non-participant never receives another conversation’s events, live or from the stream', async () => {
    const [alice, bob, carol] = [Bun.randomUUIDv7(), Bun.randomUUIDv7(), Bun.randomUUIDv7()]
    const [aliceSocket, carolSocket] = await Promise.all([connect(first, alice), connect(second, carol)])
    const carolCursor = await readyCursor(carolSocket)
    await readyCursor(aliceSocket)
    const events: CloudEvent[] = [
      buildEvent('parley/chat', 'conversation.created', {
        conversationId: 'c-private',
        title: null,
        createdBy: alice,
        participantIds: [alice, bob],
        createdAt: new Date().toISOString(),
      }),
      messageEvent(alice, [bob], 1, 'c-private'),
      buildEvent('parley/chat', 'conversation.read', {
        conversationId: 'c-private',
        userId: bob,
        seq: 1,
        messageId: 'c-private-1',
        participantIds: [alice, bob],
        readAt: new Date().toISOString(),
      }),
      buildEvent('parley/notification', 'notification.created', {
        notificationId: crypto.randomUUID(),
        userId: bob,
        type: 'mention',
        payload: {},
        createdAt: new Date().toISOString(),
      }),
    ]
    for (const event of events) await publisher.publishEvent(event)
    // Alice sees the conversation's three events (not bob's notification).
    await waitFor(() => streamFrames(aliceSocket).length === 4, { what: "alice's events" })
    expect(
      streamFrames(aliceSocket)
        .slice(1)
        .map((frame) => frame.type),
    ).toEqual(['conversation.created', 'message.sent', 'conversation.read'])
    await waitFor(async () => (await redis.xlen(streamKey(bob))) === 4, { what: "bob's four events" })
    await Bun.sleep(200)
    expect(streamFrames(carolSocket)).toEqual([{ type: 'ready', cursor: carolCursor }])
    expect((await syncPage(first, carol, `?since=${carolCursor}`)).events).toEqual([])
  })
})
