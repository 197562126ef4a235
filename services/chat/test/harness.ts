import { AccessTokenVerifier, createRuntime, opsApp, parseConfig } from '@parley/common'
import { EventBus } from '@parley/common/events'
import type { CloudEvent, EventType } from '@parley/contracts'
import {
  createTestMongo,
  createTestSigner,
  createTestVhost,
  jsonRequest,
  type TestMongo,
  type TestVhost,
  testInfra,
  testLogger,
  testRedisPrefix,
  testS3Env,
} from '@parley/testkit'
import Redis from 'ioredis'
import { buildApp } from '../src/app'
import { Env } from '../src/config'
import type { AttachmentDoc } from '../src/db'
import { type ChatDeps, connect } from '../src/deps'

export type Reply<T> = { status: number; body: T; headers: Headers }

export type HarnessOptions = {
  /** Run the outbox relay (default true). */
  relay?: boolean
  /** Override the Redis URL, e.g. a closed port to test the bypass. */
  redisUrl?: string
  /** Override the broker URL, e.g. an unreachable one. */
  amqpUrl?: string
  /** Reuse another harness's database, vhost, signer and Redis prefix (a second process on the same data). */
  share?: SharedInfra
  /** More environment variables (e.g. CHAT_MESSAGE_EDIT_WINDOW_SECONDS). */
  env?: Record<string, string>
}

/** What two harnesses standing for two processes of one deployment share. */
export type SharedInfra = {
  mongo: TestMongo
  vhost: TestVhost
  signer: Awaited<ReturnType<typeof createTestSigner>>
  redisKeyPrefix: string
}

/** One chat service on its own MongoDB database, vhost and Redis prefix, driven through app.handle. */
export async function createHarness(options: HarnessOptions = {}) {
  const owned = options.share === undefined
  const mongo = options.share?.mongo ?? createTestMongo()
  const vhost: TestVhost = options.share?.vhost ?? (await createTestVhost())
  const signer = options.share?.signer ?? (await createTestSigner())
  const redisKeyPrefix = options.share?.redisKeyPrefix ?? testRedisPrefix()
  const config = parseConfig(Env, {
    MONGO_URL: mongo.url,
    MONGO_DB: mongo.dbName,
    REDIS_URL: options.redisUrl ?? testInfra.redisUrl,
    AMQP_URL: options.amqpUrl ?? vhost.url,
    JWKS_URL: 'http://127.0.0.1:9/unused-in-tests',
    ...testS3Env(),
    ...options.env,
  })
  const runtime = createRuntime('chat', 'silent', testLogger('chat'))
  const deps = await connect(config, runtime, {
    verifier: new AccessTokenVerifier({
      jwks: signer.jwks,
      issuer: signer.issuer,
      audience: signer.audience,
    }),
    redisKeyPrefix,
    relay: options.relay,
  })
  const app = buildApp(deps)
  const tokens = new Map<string, string>()

  async function tokenFor(userId: string): Promise<string> {
    let token = tokens.get(userId)
    if (!token) {
      token = await signer.sign({ sub: userId })
      tokens.set(userId, token)
    }
    return token
  }

  /** Calls the app as `userId` (undefined: anonymous). */
  async function call<T = unknown>(
    userId: string | undefined,
    method: string,
    path: string,
    body?: unknown,
  ): Promise<Reply<T>> {
    const headers: Record<string, string> = userId
      ? { authorization: `Bearer ${await tokenFor(userId)}` }
      : {}
    const response = await app.handle(jsonRequest(method, path, body, headers))
    const text = await response.text()
    return {
      status: response.status,
      body: (text ? JSON.parse(text) : undefined) as T,
      headers: response.headers,
    }
  }

  /** A user known to the projection (through the projection service, as the consumer would). */
  async function newUser(displayName = 'Test user'): Promise<string> {
    const userId = Bun.randomUUIDv7()
    await deps.users.apply({ userId, displayName, at: new Date() })
    return userId
  }

  /** Many users at once, straight into the projection (fast seeding for limit tests). */
  async function newUsers(count: number, namePrefix = 'Member'): Promise<string[]> {
    const users = Array.from({ length: count }, (_, i) => ({
      _id: Bun.randomUUIDv7(),
      displayName: `${namePrefix} ${i}`,
      updatedAt: new Date(),
    }))
    await deps.db.collection<{ _id: string }>('users').insertMany(users)
    return users.map((user) => user._id)
  }

  return {
    app,
    deps,
    mongo,
    vhost,
    signer,
    redisKeyPrefix,
    call,
    newUser,
    newUsers,
    /** The ops port's /metrics. */
    async metricsText(): Promise<string> {
      return (await opsApp(runtime, deps.readiness).handle(new Request('http://localhost/metrics'))).text()
    },
    /** Stops this process; the data stays (another harness may share it). */
    shutdown: () => runtime.lifecycle.shutdown(),
    /** Stops this process and, if it owns them, drops its database, vhost and Redis keys. */
    async close(): Promise<void> {
      if (owned) await removeObjects(deps).catch(() => undefined)
      await runtime.lifecycle.shutdown()
      if (!owned) return
      const redis = new Redis(testInfra.redisUrl, { lazyConnect: true })
      try {
        await redis.connect()
        const keys = await redis.keys(`${redisKeyPrefix}*`)
        if (keys.length > 0) await redis.del(...keys)
      } finally {
        redis.disconnect()
      }
      await mongo.drop()
      await vhost.drop()
    },
  }
}

export type Harness = Awaited<ReturnType<typeof createHarness>>

/** Deletes the S3 objects of every attachment in the harness's database (the bucket is shared). */
async function removeObjects(deps: ChatDeps): Promise<void> {
  const attachments = await deps.db.collection<AttachmentDoc>('attachments').find().toArray()
  for (const doc of attachments)
    for (const key of [doc.uploadKey, doc.key, doc.thumbnail?.key]) if (key) await deps.objects.delete(key)
}

/** Collects events of `types` from a vhost through its own queue (create it before the writes). */
export async function createEventSink<T extends EventType>(url: string, types: T[]) {
  const runtime = createRuntime('sink', 'silent', testLogger('sink'))
  const bus = new EventBus({
    url,
    exchange: 'parley.events',
    source: 'parley/test',
    prefetch: 50,
    logger: runtime.logger,
    metrics: runtime.metrics,
  })
  const events: CloudEvent[] = []
  const record = async (event: CloudEvent<T>) => {
    events.push(event)
  }
  await bus.subscribe({
    queue: `test.sink.${crypto.randomUUID().slice(0, 8)}`,
    handlers: Object.fromEntries(types.map((type) => [type, record])) as Record<T, typeof record>,
  })
  await bus.start()
  await bus.connected()
  return { events, bus, close: () => bus.close() }
}
