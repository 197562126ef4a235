import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { Metrics } from '@parley/common'
import { EventBus } from '@parley/common/events'
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
import { PRESENCE_SEEN_KEY, presenceStatusKey } from '../src/modules/ephemeral/service'
import {
  metricValue,
  openSocket,
  startGateway,
  startJwksServer,
  startUpstream,
  type TestGateway,
  type TestSocket,
  type TestUpstream,
} from './harness'

type Frame = { type: string; [field: string]: unknown }

let vhost: TestVhost
let signer: Awaited<ReturnType<typeof createTestSigner>>
let jwks: ReturnType<typeof startJwksServer>
let chat: TestUpstream
let first: TestGateway
let second: TestGateway
let publisher: EventBus
let redis: Redis
const redisKeyPrefix = testRedisPrefix()
const sockets: TestSocket[] = []
/** What the stub chat knows: conversation id → participant ids. */
const conversations = new Map<string, string[]>()
const TYPING_LIMIT = 5

/** The caller of a stub chat request (the gateway forwards the user's own token). */
function callerOf(request: Request): string {
  const token = request.headers.get('authorization')?.replace(/^Bearer /, '') ?? ''
  const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as {
    sub: string
  }
  return payload.sub
}

const asConversation = (id: string, participantIds: string[]) => ({
  id,
  participants: participantIds.map((userId) => ({ userId, displayName: null, lastReadMessageId: null })),
})

/** Answers like chat: a participant's conversation, or 404; the caller's conversations, one page. */
function chatStub(request: Request): Response {
  const caller = callerOf(request)
  const { pathname } = new URL(request.url)
  if (pathname === '/conversations') {
    const items = [...conversations]
      .filter(([, participants]) => participants.includes(caller))
      .map(([id, participants]) => asConversation(id, participants))
    return Response.json({ items, nextCursor: null })
  }
  const id = pathname.slice('/conversations/'.length)
  const participants = conversations.get(id)
  if (!participants?.includes(caller)) return Response.json({ status: 404 }, { status: 404 })
  return Response.json(asConversation(id, participants))
}

beforeAll(async () => {
  vhost = await createTestVhost()
  signer = await createTestSigner()
  jwks = startJwksServer(signer.jwks)
  chat = startUpstream(chatStub)
  const env = {
    AMQP_URL: vhost.url,
    JWKS_URL: jwks.url,
    CHAT_URL: chat.url,
    WS_PING_INTERVAL_MS: '200',
    RATE_LIMIT_POLICIES: JSON.stringify({ typing: { limit: TYPING_LIMIT, windowSeconds: 60 } }),
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
  await Promise.all([jwks?.stop(), chat?.stop()])
  if (redis) {
    const keys = await redis.keys(`${redisKeyPrefix}*`)
    if (keys.length > 0) await redis.del(...keys.map((key) => key.slice(redisKeyPrefix.length)))
    await closeRedis(redis)
  }
  await vhost?.drop()
})

const newUser = () => Bun.randomUUIDv7()

/** Opens a socket and waits until the gateway set it up (the snapshot is its last step). */
async function connectAs(gateway: TestGateway, userId: string): Promise<TestSocket> {
  const socket = await openSocket(gateway.wsUrl, await signer.sign({ sub: userId }))
  sockets.push(socket)
  await socket.next((frame: Frame) => frame.type === 'presence.snapshot')
  return socket
}

function conversation(participantIds: string[]): string {
  const id = crypto.randomUUID()
  conversations.set(id, participantIds)
  return id
}

const send = (socket: TestSocket, frame: object) => socket.socket.send(JSON.stringify(frame))
const framesOf = (socket: TestSocket, type: string) =>
  (socket.messages as Frame[]).filter((message) => message.type === type)
const presenceFrames = (socket: TestSocket, userId: string) =>
  framesOf(socket, 'presence').filter((frame) => frame.userId === userId)

/** Lets pub/sub and the other replica catch up before asserting that nothing arrived. */
const settle = () => Bun.sleep(400)

describe('typing indicators', () => {
  test('reach the other participants on every replica, not the sender nor non-participants', async () => {
    const [alice, bob, carol] = [newUser(), newUser(), newUser()]
    const id = conversation([alice, bob])
    conversation([carol, newUser()])
    const aliceHere = await connectAs(first, alice)
    const aliceThere = await connectAs(second, alice)
    const bobThere = await connectAs(second, bob)
    const bobHere = await connectAs(first, bob)
    const carolThere = await connectAs(second, carol)

    send(aliceHere, { type: 'typing', conversationId: id, state: 'start' })
    const expected = { type: 'typing', conversationId: id, userId: alice, state: 'start' }
    expect(await bobThere.next((frame: Frame) => frame.type === 'typing')).toEqual(expected)
    expect(await bobHere.next((frame: Frame) => frame.type === 'typing')).toEqual(expected)
    send(aliceHere, { type: 'typing', conversationId: id, state: 'stop' })
    await bobThere.next((frame: Frame) => frame.type === 'typing' && frame.state === 'stop')
    await settle()
    expect(framesOf(aliceHere, 'typing')).toEqual([])
    expect(framesOf(aliceThere, 'typing')).toEqual([])
    expect(framesOf(carolThere, 'typing')).toEqual([])
    expect(framesOf(aliceHere, 'error')).toEqual([])
    const fanout = metricValue(await second.metrics(), 'typing_fanout_total')
    expect(fanout).toBeGreaterThanOrEqual(2)
  })

  test('in a conversation the socket did not list, membership is asked of chat as the typist', async () => {
    const [alice, bob] = [newUser(), newUser()]
    const aliceSocket = await connectAs(first, alice)
    const bobSocket = await connectAs(second, bob)
    // Created after both connected, and no event: the gateway has to look it up.
    const id = conversation([alice, bob])
    send(aliceSocket, { type: 'typing', conversationId: id, state: 'start' })
    await bobSocket.next((frame: Frame) => frame.type === 'typing' && frame.conversationId === id)
    const lookup = chat.requests.find((request) => request.path === `/conversations/${id}`)
    expect(lookup?.headers.authorization).toStartWith('Bearer ')
    expect(callerOf(new Request('http://x', { headers: lookup?.headers }))).toBe(alice)
  })

  test("a non-participant's typing is refused with an error frame and fanned out to nobody", async () => {
    const [alice, bob, mallory] = [newUser(), newUser(), newUser()]
    const id = conversation([alice, bob])
    const aliceSocket = await connectAs(first, alice)
    const bobSocket = await connectAs(second, bob)
    const mallorySocket = await connectAs(first, mallory)
    const before = metricValue(await first.metrics(), 'typing_frames_rejected_total', {
      reason: 'not_participant',
    })

    send(mallorySocket, { type: 'typing', conversationId: id, state: 'start' })
    expect(await mallorySocket.next((frame: Frame) => frame.type === 'error')).toEqual({
      type: 'error',
      code: 'not_participant',
      conversationId: id,
    })
    // A conversation unknown to this replica: chat answers 404 to Mallory.
    send(mallorySocket, { type: 'typing', conversationId: crypto.randomUUID(), state: 'start' })
    await waitFor(() => framesOf(mallorySocket, 'error').length === 2, { what: 'a second refusal' })
    await settle()
    expect(framesOf(bobSocket, 'typing')).toEqual([])
    expect(framesOf(aliceSocket, 'typing')).toEqual([])
    const after = metricValue(await first.metrics(), 'typing_frames_rejected_total', {
      reason: 'not_participant',
    })
    expect(after - before).toBe(2)
  })

  test('a malformed frame is answered with an error naming the field and the socket stays open', async () => {
    const alice = newUser()
    const socket = await connectAs(first, alice)
    send(socket, { type: 'typing', conversationId: crypto.randomUUID(), state: 'maybe' })
    expect(await socket.next((frame: Frame) => frame.type === 'error')).toMatchObject({
      code: 'invalid_frame',
      field: 'state',
    })
    send(socket, { type: 'typing', conversationId: 'not-an-id', state: 'start' })
    await socket.next((frame: Frame) => frame.type === 'error' && frame.field === 'conversationId')
    send(socket, { type: 'presence', status: 'busy' })
    await socket.next((frame: Frame) => frame.type === 'error' && frame.field === 'status')
    send(socket, { type: 'ping' })
    await socket.next((frame: Frame) => frame.type === 'pong')
    expect(socket.socket.readyState).toBe(WebSocket.OPEN)
  })

  test('a socket that keeps sending malformed frames is closed with 1008', async () => {
    const socket = await connectAs(first, newUser())
    for (let index = 0; index < 30; index++) send(socket, { type: 'typing' })
    expect((await socket.closed).code).toBe(1008)
  })

  test('is rate-limited per user and conversation', async () => {
    const [alice, bob] = [newUser(), newUser()]
    const id = conversation([alice, bob])
    const other = conversation([alice, bob])
    const aliceSocket = await connectAs(first, alice)
    const bobSocket = await connectAs(second, bob)
    for (let index = 0; index <= TYPING_LIMIT; index++)
      send(aliceSocket, { type: 'typing', conversationId: id, state: 'start' })
    const refusal = await aliceSocket.next((frame: Frame) => frame.type === 'error')
    expect(refusal).toMatchObject({ code: 'rate_limited', conversationId: id })
    expect(refusal.retryAfterSeconds).toBeGreaterThanOrEqual(1)
    // Another conversation has its own quota.
    send(aliceSocket, { type: 'typing', conversationId: other, state: 'start' })
    await bobSocket.next((frame: Frame) => frame.type === 'typing' && frame.conversationId === other)
    await settle()
    expect(framesOf(bobSocket, 'typing').filter((frame) => frame.conversationId === id)).toHaveLength(
      TYPING_LIMIT,
    )
    expect(framesOf(aliceSocket, 'error')).toHaveLength(1)
  })

  test('is never stored: no stream or key mentions the conversation but its rate-limit key', async () => {
    const [alice, bob] = [newUser(), newUser()]
    const id = conversation([alice, bob])
    const aliceSocket = await connectAs(first, alice)
    const bobSocket = await connectAs(second, bob)
    send(aliceSocket, { type: 'typing', conversationId: id, state: 'start' })
    await bobSocket.next((frame: Frame) => frame.type === 'typing')
    const keys = (await redis.keys(`${redisKeyPrefix}*`)).map((key) => key.slice(redisKeyPrefix.length))
    expect(keys.filter((key) => key.includes(id))).toEqual([
      `ratelimit:typing:user:${alice}:conversation:${id}`,
    ])
    // No stream (the users' resumable event streams included) carries it.
    for (const key of keys)
      if ((await redis.type(key)) === 'stream')
        expect(JSON.stringify(await redis.xrange(key, '-', '+'))).not.toContain(id)
    // For the typist, only rate limits and presence are written.
    expect(keys.filter((key) => key.includes(alice) && !/^(ratelimit:|presence)/.test(key))).toEqual([])
  })

  test("a start is stopped when the typist's socket closes", async () => {
    const [alice, bob] = [newUser(), newUser()]
    const id = conversation([alice, bob])
    const aliceSocket = await connectAs(first, alice)
    const bobSocket = await connectAs(second, bob)
    send(aliceSocket, { type: 'typing', conversationId: id, state: 'start' })
    await bobSocket.next((frame: Frame) => frame.type === 'typing')
    aliceSocket.close()
    expect(await bobSocket.next((frame: Frame) => frame.type === 'typing' && frame.state === 'stop')).toEqual(
      { type: 'typing', conversationId: id, userId: alice, state: 'stop' },
    )
  })
})

describe('presence changes', () => {
  test('online on the first socket, away when every socket is, offline after the last; only to contacts', async () => {
    const [alice, bob, carol] = [newUser(), newUser(), newUser()]
    conversation([alice, bob])
    conversation([carol, newUser()])
    const bobSocket = await connectAs(second, bob)
    const carolSocket = await connectAs(first, carol)
    const publishedBefore = metricValue(await first.metrics(), 'presence_changes_published_total', {
      status: 'online',
    })

    const laptop = await connectAs(first, alice)
    await bobSocket.next((frame: Frame) => frame.type === 'presence' && frame.userId === alice)
    expect(presenceFrames(bobSocket, alice)).toEqual([{ type: 'presence', userId: alice, status: 'online' }])
    expect(
      metricValue(await first.metrics(), 'presence_changes_published_total', { status: 'online' }) -
        publishedBefore,
    ).toBe(1)
    // A second device on the other replica: still just online.
    const phone = await connectAs(second, alice)
    expect(await redis.zcard(presenceKey(alice))).toBe(2)
    send(laptop, { type: 'presence', status: 'away' })
    await settle()
    expect(presenceFrames(bobSocket, alice)).toHaveLength(1)

    send(phone, { type: 'presence', status: 'away' })
    await waitFor(() => presenceFrames(bobSocket, alice).length === 2, { what: 'away' })
    send(phone, { type: 'presence', status: 'online' })
    await waitFor(() => presenceFrames(bobSocket, alice).length === 3, { what: 'back online' })
    // The laptop is still connected, and away.
    phone.close()
    await waitFor(() => presenceFrames(bobSocket, alice).length === 4, { what: 'away again' })
    laptop.close()
    await waitFor(() => presenceFrames(bobSocket, alice).length === 5, { what: 'offline' })
    expect(presenceFrames(bobSocket, alice).map((frame) => frame.status)).toEqual([
      'online',
      'away',
      'online',
      'away',
      'offline',
    ])
    expect(presenceFrames(carolSocket, alice)).toEqual([])
    expect(await redis.get(presenceStatusKey(alice))).toBeNull()
    expect(metricValue(await second.metrics(), 'presence_changes_delivered_total')).toBeGreaterThanOrEqual(5)
  })

  test('a new socket gets a snapshot of its contacts that are online or away', async () => {
    const [alice, bob, carol, dave] = [newUser(), newUser(), newUser(), newUser()]
    conversation([alice, bob, carol])
    conversation([alice, dave])
    await connectAs(first, bob)
    const carolSocket = await connectAs(second, carol)
    send(carolSocket, { type: 'presence', status: 'away' })
    await waitFor(async () => (await redis.get(presenceStatusKey(carol))) === 'away', { what: 'away' })
    const aliceSocket = await connectAs(second, alice)
    const snapshot = await aliceSocket.next((frame: Frame) => frame.type === 'presence.snapshot')
    const contacts = snapshot.contacts as { userId: string; status: string }[]
    expect(contacts.toSorted((a, b) => a.userId.localeCompare(b.userId))).toEqual(
      [
        { userId: bob, status: 'online' },
        { userId: carol, status: 'away' },
      ].toSorted((a, b) => a.userId.localeCompare(b.userId)),
    )
  })

  test('a reconnect storm asks chat for PRESENCE_CONTACT_LOADS contact lists at a time; every socket gets its snapshot', async () => {
    let inFlight = 0
    let most = 0
    const slowChat = startUpstream(async (request) => {
      inFlight++
      most = Math.max(most, inFlight)
      await Bun.sleep(40)
      inFlight--
      return chatStub(request)
    })
    const gateway = await startGateway(
      {
        AMQP_URL: vhost.url,
        JWKS_URL: jwks.url,
        CHAT_URL: slowChat.url,
        WS_PING_INTERVAL_MS: '200',
        PRESENCE_CONTACT_LOADS: '2',
      },
      { redisKeyPrefix },
    )
    try {
      const users = Array.from({ length: 12 }, newUser)
      for (let i = 0; i < users.length; i += 2) conversation([users[i] as string, users[i + 1] as string])
      const opened = await Promise.all(users.map((user) => connectAs(gateway, user)))
      expect(opened).toHaveLength(12)
      expect(slowChat.requests.filter((request) => request.path.startsWith('/conversations?'))).toHaveLength(
        12,
      )
      expect(most).toBe(2)
      expect(metricValue(await gateway.metrics(), 'presence_contact_loads_waiting')).toBe(0)
    } finally {
      await gateway.stop()
      await slowChat.stop()
    }
  })

  test('membership events add and remove contacts', async () => {
    const [alice, dave] = [newUser(), newUser()]
    const daveSocket = await connectAs(second, dave)
    const aliceSocket = await connectAs(first, alice)
    // Not contacts yet: Alice's away reaches nobody on Dave's side.
    send(aliceSocket, { type: 'presence', status: 'away' })
    await waitFor(async () => (await redis.get(presenceStatusKey(alice))) === 'away', { what: 'away' })
    await settle()
    expect(presenceFrames(daveSocket, alice)).toEqual([])

    const id = crypto.randomUUID()
    await publisher.publish('conversation.participants_added', {
      conversationId: id,
      addedBy: alice,
      userIds: [dave],
      participantIds: [alice, dave],
      addedAt: new Date().toISOString(),
    })
    await settle()
    // Typing in it needs no lookup: the event told every replica who is in it.
    send(aliceSocket, { type: 'typing', conversationId: id, state: 'start' })
    await daveSocket.next((frame: Frame) => frame.type === 'typing' && frame.conversationId === id)
    expect(chat.requests.some((request) => request.path === `/conversations/${id}`)).toBe(false)
    send(aliceSocket, { type: 'presence', status: 'online' })
    await daveSocket.next((frame: Frame) => frame.type === 'presence' && frame.userId === alice)
    expect(presenceFrames(daveSocket, alice)).toEqual([{ type: 'presence', userId: alice, status: 'online' }])

    await publisher.publish('conversation.participant_left', {
      conversationId: id,
      userId: dave,
      participantIds: [alice],
      leftAt: new Date().toISOString(),
    })
    // Once Dave's replica applied the leave, his typing there is refused.
    await waitFor(
      async () => {
        send(daveSocket, { type: 'typing', conversationId: id, state: 'stop' })
        return daveSocket
          .next((frame: Frame) => frame.type === 'error' && frame.code === 'not_participant', 300)
          .catch(() => undefined)
      },
      { what: 'the leave to reach the replicas' },
    )
    // Dave left: Alice's presence no longer reaches him.
    const seen = presenceFrames(daveSocket, alice).length
    send(aliceSocket, { type: 'presence', status: 'away' })
    await waitFor(async () => (await redis.get(presenceStatusKey(alice))) === 'away', { what: 'away' })
    await settle()
    expect(presenceFrames(daveSocket, alice)).toHaveLength(seen)
  })

  test('a user whose replica died goes offline for their contacts once their connections expire', async () => {
    const [alice, bob] = [newUser(), newUser()]
    conversation([alice, bob])
    const bobSocket = await connectAs(first, bob)
    // What a crashed replica leaves behind: a connection whose expiry passed, status still online.
    const past = Date.now() - 1_000
    await redis
      .multi()
      .zadd(presenceKey(alice), past, crypto.randomUUID())
      .set(presenceStatusKey(alice), 'online', 'PX', 60_000)
      .zadd(PRESENCE_SEEN_KEY, past, alice)
      .exec()
    expect(
      await bobSocket.next((frame: Frame) => frame.type === 'presence' && frame.userId === alice),
    ).toEqual({ type: 'presence', userId: alice, status: 'offline' })
    expect(await redis.get(presenceStatusKey(alice))).toBeNull()
  })
})
