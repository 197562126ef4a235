import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { Metrics } from '@parley/common'
import { buildEvent, EventBus } from '@parley/common/events'
import { closeRedis, createRedis, type Redis } from '@parley/common/redis'
import { presenceKey } from '@parley/contracts'
import {
  createTestSigner,
  createTestVhost,
  type TestVhost,
  testInfra,
  testLogger,
  testRedisPrefix,
  waitFor,
} from '@parley/testkit'
import { EPOCH_KEY, type StreamPush } from '../src/modules/sync/service'
import {
  metricValue,
  openSocket,
  rawWebSocket,
  startGateway,
  startJwksServer,
  type TestGateway,
  type TestSocket,
} from './harness'

let vhost: TestVhost
let signer: Awaited<ReturnType<typeof createTestSigner>>
let jwks: ReturnType<typeof startJwksServer>
let first: TestGateway
let second: TestGateway
let publisher: EventBus
let redis: Redis
const redisKeyPrefix = testRedisPrefix()
const sockets: TestSocket[] = []

beforeAll(async () => {
  vhost = await createTestVhost()
  signer = await createTestSigner()
  jwks = startJwksServer(signer.jwks)
  const env = {
    AMQP_URL: vhost.url,
    JWKS_URL: jwks.url,
    WS_MAX_CONNECTIONS_PER_USER: '2',
    WS_PING_INTERVAL_MS: '200',
    WS_MAX_BUFFERED_BYTES: '65536',
  }
  // Two replicas sharing Redis and the broker, like two pods.
  ;[first, second] = await Promise.all([
    startGateway(env, { redisKeyPrefix }),
    startGateway(env, { redisKeyPrefix }),
  ])
  publisher = new EventBus({
    url: vhost.url,
    exchange: 'parley.events',
    source: 'parley/chat',
    prefetch: 10,
    logger: testLogger(),
    metrics: new Metrics('test'),
  })
  await publisher.start()
  await publisher.connected()
  redis = createRedis(testInfra.redisUrl, testLogger(), { keyPrefix: redisKeyPrefix })
  await waitFor(() => redis.status === 'ready', { what: 'redis' })
})

afterAll(async () => {
  for (const socket of sockets) socket.close()
  await publisher?.close()
  await Promise.all([first?.stop(), second?.stop()])
  await jwks?.stop()
  if (redis) await closeRedis(redis)
  await vhost?.drop()
})

async function connectAs(gateway: TestGateway, userId: string): Promise<TestSocket> {
  const socket = await openSocket(gateway.wsUrl, await signer.sign({ sub: userId }))
  sockets.push(socket)
  return socket
}

/** Waits until the hub registered the user's connection (admission is asynchronous). */
async function presenceOf(userId: string): Promise<string[]> {
  return redis.zrangebyscore(presenceKey(userId), Date.now(), '+inf')
}

describe('handshake', () => {
  test('without a token, with a bad token, or with the token in the query string, it is refused', async () => {
    await expect(openSocket(first.wsUrl, undefined)).rejects.toThrow()
    await expect(openSocket(first.wsUrl, 'not-a-token')).rejects.toThrow()
    const forger = await createTestSigner()
    await expect(openSocket(first.wsUrl, await forger.sign({ sub: Bun.randomUUIDv7() }))).rejects.toThrow()
    const token = await signer.sign({ sub: Bun.randomUUIDv7() })
    await expect(openSocket(`${first.wsUrl}?access_token=${token}`, undefined)).rejects.toThrow()

    const refused = await fetch(`${first.url}/api/v1/ws`, {
      headers: { upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-protocol': 'parley.v1' },
    })
    expect(refused.status).toBe(401)
    expect(refused.headers.get('content-type')).toContain('application/problem+json')
  })

  test('a valid token in the subprotocol opens the socket and the server selects parley.v1', async () => {
    const socket = await connectAs(first, Bun.randomUUIDv7())
    expect(socket.socket.protocol).toBe('parley.v1')
    socket.socket.send(JSON.stringify({ type: 'ping' }))
    await socket.next((message: { type: string }) => message.type === 'pong')
  })
})

describe('client frames', () => {
  test('a frame over 16 KiB closes the socket', async () => {
    const socket = await connectAs(first, Bun.randomUUIDv7())
    socket.socket.send('x'.repeat(32 * 1024))
    // Bun drops the connection (the client sees 1006) rather than sending 1009.
    expect([1006, 1009]).toContain((await socket.closed).code)
  })
})

describe('fan-out across replicas', () => {
  test('message.sent reaches the recipient on the other replica and the sender, nobody else', async () => {
    const [alice, bob, carol] = [Bun.randomUUIDv7(), Bun.randomUUIDv7(), Bun.randomUUIDv7()]
    const aliceSocket = await connectAs(first, alice)
    const bobSocket = await connectAs(second, bob)
    const carolSocket = await connectAs(first, carol)
    await waitFor(async () => (await presenceOf(bob)).length === 1, { what: "bob's presence" })

    const event = buildEvent('parley/chat', 'message.sent', {
      messageId: 'm1',
      conversationId: 'c1',
      senderId: alice,
      recipientIds: [bob],
      preview: 'hello bob',
      createdAt: new Date().toISOString(),
    })
    await publisher.publishEvent(event)
    const received = await bobSocket.next<{ type: string }>((message) => message.type === 'message.sent')
    expect(received as unknown).toEqual({
      type: 'message.sent',
      id: event.id,
      cursor: expect.any(String),
      data: event.data,
    })
    await aliceSocket.next((message: { id: string }) => message.id === event.id)

    const created = buildEvent('parley/chat', 'conversation.created', {
      conversationId: 'c2',
      title: null,
      createdBy: carol,
      participantIds: [carol, bob],
      createdAt: new Date().toISOString(),
    })
    await publisher.publishEvent(created)
    await bobSocket.next((message: { id: string }) => message.id === created.id)
    await carolSocket.next((message: { id: string }) => message.id === created.id)
    expect(carolSocket.messages.some((message) => (message as { id: string }).id === event.id)).toBe(false)
    expect(aliceSocket.messages.some((message) => (message as { id: string }).id === created.id)).toBe(false)
  })
})

describe('presence', () => {
  test('a connection adds a live entry to presence:<userId>, kept fresh by heartbeats and removed on close', async () => {
    const userId = Bun.randomUUIDv7()
    const socket = await connectAs(second, userId)
    const [connectionId] = await waitFor(async () => {
      const live = await presenceOf(userId)
      return live.length === 1 ? live : undefined
    })
    const firstScore = Number(await redis.zscore(presenceKey(userId), connectionId as string))
    expect(firstScore).toBeGreaterThan(Date.now())
    expect(await redis.pttl(presenceKey(userId))).toBeGreaterThan(0)
    // Heartbeats (every 200 ms here) push the expiry forward; the client answers pings.
    await waitFor(
      async () => Number(await redis.zscore(presenceKey(userId), connectionId as string)) > firstScore,
      {
        what: 'a presence refresh',
      },
    )
    expect(socket.socket.readyState).toBe(WebSocket.OPEN)

    socket.close()
    await waitFor(
      async () => (await redis.exists(presenceKey(userId))) === 0 || (await presenceOf(userId)).length === 0,
      {
        what: 'presence removal',
      },
    )
  })
})

describe('limits', () => {
  test('a user over the cap (counted across replicas) is closed with 1008', async () => {
    const userId = Bun.randomUUIDv7()
    await connectAs(first, userId)
    await connectAs(second, userId)
    await waitFor(async () => (await presenceOf(userId)).length === 2, { what: 'two connections' })
    const third = await connectAs(first, userId)
    expect((await third.closed).code).toBe(1008)
    expect((await presenceOf(userId)).length).toBe(2)
  })

  test('a peer that stops answering pings is dropped', async () => {
    const userId = Bun.randomUUIDv7()
    const dead = await rawWebSocket(first.wsUrl, await signer.sign({ sub: userId }))
    await waitFor(async () => (await presenceOf(userId)).length === 1, { what: 'the connection' })
    await dead.ended
    expect(
      metricValue(await first.metrics(), 'websocket_closed_total', { reason: 'ping_timeout' }),
    ).toBeGreaterThanOrEqual(1)
    await waitFor(async () => (await presenceOf(userId)).length === 0, { what: 'presence removal' })
  })

  test('a consumer that stops reading is closed (1013) instead of buffering without bound', async () => {
    const userId = Bun.randomUUIDv7()
    const slow = await rawWebSocket(second.wsUrl, await signer.sign({ sub: userId }))
    // Live once `ready` is sent; then it stops reading.
    await new Promise<void>((resolve) =>
      slow.socket.on('data', (chunk: Buffer) => chunk.includes('"ready"') && resolve()),
    )
    slow.socket.pause()
    await waitFor(async () => (await presenceOf(userId)).length === 1, { what: 'the connection' })
    const epoch = (await redis.get(EPOCH_KEY)) as string
    // An announcement as the stream writer makes it, oversized on purpose: fills the socket buffers fast.
    const push = (index: number): StreamPush => ({
      epoch,
      to: [[userId, `${Date.now() + 60_000}-${index}`]],
      type: 'message.sent',
      id: `big-${index}`,
      time: new Date().toISOString(),
      data: JSON.stringify({ preview: 'x'.repeat(512 * 1024) }),
    })
    let reached = 0
    for (let index = 0; index < 200 && second.deps.hub.deliver(push(index)) === 1; index++) reached++
    expect(reached).toBeLessThan(200)
    expect(metricValue(await second.metrics(), 'websocket_closed_total', { reason: 'slow' })).toBe(1)
    slow.socket.destroy()
  })

  test('sockets of a revoked session are closed with 4401, later sessions stay', async () => {
    const userId = Bun.randomUUIDv7()
    const now = Math.floor(Date.now() / 1000)
    const old = await openSocket(second.wsUrl, await signer.sign({ sub: userId, iat: now - 30 }))
    const fresh = await openSocket(first.wsUrl, await signer.sign({ sub: userId }))
    sockets.push(old, fresh)
    await waitFor(async () => (await presenceOf(userId)).length === 2, { what: 'two connections' })
    await publisher.publishEvent(
      buildEvent('parley/auth', 'user.sessions_revoked', {
        userId,
        revokedBefore: new Date((now - 10) * 1000).toISOString(),
      }),
    )
    expect(await old.closed).toEqual({ code: 4401, reason: 'session revoked' })
    expect(fresh.socket.readyState).toBe(WebSocket.OPEN)
  })

  test('user.session_revoked closes that session’s socket on whichever replica holds it, not the user’s others', async () => {
    const userId = Bun.randomUUIDv7()
    const sessionId = crypto.randomUUID()
    const loggedOut = await openSocket(second.wsUrl, await signer.sign({ sub: userId, sid: sessionId }))
    const otherDevice = await openSocket(
      first.wsUrl,
      await signer.sign({ sub: userId, sid: crypto.randomUUID() }),
    )
    sockets.push(loggedOut, otherDevice)
    await waitFor(async () => (await presenceOf(userId)).length === 2, { what: 'two connections' })
    await publisher.publishEvent(
      buildEvent('parley/auth', 'user.session_revoked', {
        userId,
        sessionId,
        reason: 'logout',
        revokedAt: new Date().toISOString(),
      }),
    )
    expect(await loggedOut.closed).toEqual({ code: 4401, reason: 'session revoked' })
    expect(otherDevice.socket.readyState).toBe(WebSocket.OPEN)
    // The handshake refuses the revoked session from now on.
    const retry = openSocket(first.wsUrl, await signer.sign({ sub: userId, sid: sessionId }))
    await expect(retry).rejects.toThrow('WebSocket handshake failed')
  })

  test('a socket is closed with 4401 once its access token expires', async () => {
    const now = Math.floor(Date.now() / 1000)
    const socket = await openSocket(first.wsUrl, await signer.sign({ sub: Bun.randomUUIDv7(), exp: now + 1 }))
    sockets.push(socket)
    expect(await socket.closed).toEqual({ code: 4401, reason: 'token expired' })
  })

  test('websocket_connections counts open sockets', async () => {
    const before = metricValue(await first.metrics(), 'websocket_connections')
    const socket = await connectAs(first, Bun.randomUUIDv7())
    await waitFor(async () => metricValue(await first.metrics(), 'websocket_connections') === before + 1, {
      what: 'the gauge to rise',
    })
    socket.close()
    await waitFor(async () => metricValue(await first.metrics(), 'websocket_connections') === before, {
      what: 'the gauge to fall',
    })
  })
})
