import { AccessTokenVerifier, createRuntime, Metrics, opsApp, parseConfig } from '@parley/common'
import { buildEvent, EventBus } from '@parley/common/events'
import { createPostgres } from '@parley/common/postgres'
import { closeRedis, createRedis } from '@parley/common/redis'
import type { CloudEvent, EventData, EventType } from '@parley/contracts'
import {
  createTestDatabase,
  createTestSigner,
  createTestVhost,
  jsonRequest,
  testInfra,
  testLogger,
  testRedisPrefix,
  waitFor,
} from '@parley/testkit'
import { buildApp } from '../src/app'
import { Env } from '../src/config'
import { MIGRATIONS } from '../src/db'
import * as schema from '../src/db/schema'
import { profiles } from '../src/db/schema'
import { connect } from '../src/deps'

export type Harness = Awaited<ReturnType<typeof startUserService>>

/**
 * The user service wired exactly as in production (connect + buildApp) against this test
 * file's own database, vhost and Redis prefix, plus a stand-in for the auth service that
 * signs tokens and publishes its events.
 */
export async function startUserService(options: { redisUrl?: string } = {}) {
  const database = await createTestDatabase(MIGRATIONS)
  const vhost = await createTestVhost()
  const redisPrefix = testRedisPrefix()
  const signer = await createTestSigner()
  const logger = testLogger('user')
  const runtime = createRuntime('user', 'silent', logger)
  const config = parseConfig(Env, {
    DATABASE_URL: database.url,
    DATABASE_POOL_MAX: '5',
    REDIS_URL: options.redisUrl ?? testInfra.redisUrl,
    AMQP_URL: vhost.url,
    JWKS_URL: 'http://127.0.0.1:9/unused',
  })
  const deps = await connect(config, runtime, {
    verifier: new AccessTokenVerifier({
      jwks: signer.jwks,
      issuer: signer.issuer,
      audience: signer.audience,
    }),
    redisKeyPrefix: redisPrefix,
  })
  const app = buildApp(deps)
  const ops = opsApp(runtime, deps.readiness)
  runtime.lifecycle.markReady()
  // The consumers are bound once the broker check passes: only then can events be published.
  await waitFor(
    async () => {
      const response = await ops.handle(new Request('http://localhost/ready'))
      const body = (await response.json()) as { checks: Record<string, string> }
      return body.checks.broker === 'ok'
    },
    { what: 'user service connected to the broker' },
  )

  const auth = new EventBus({
    url: vhost.url,
    exchange: config.AMQP_EXCHANGE,
    source: 'parley/auth',
    prefetch: 10,
    logger,
    metrics: new Metrics('auth'),
  })
  await auth.start()
  await auth.connected()

  const postgres = createPostgres(database.url, { schema, max: 2 })
  const redis = createRedis(testInfra.redisUrl, logger, { keyPrefix: redisPrefix })

  return {
    app,
    /** The ops port's app: /ready, /metrics. */
    ops,
    config,
    db: postgres.db,
    sql: postgres.sql,
    /** Redis under this file's prefix (to inspect the cache). */
    redis,
    vhost,
    runtime,

    token: (userId: string, claims: { email?: string } = {}) => signer.sign({ sub: userId, ...claims }),

    async request(method: string, path: string, options: { token?: string; body?: unknown } = {}) {
      const response = await app.handle(
        jsonRequest(
          method,
          path,
          options.body,
          options.token ? { authorization: `Bearer ${options.token}` } : {},
        ),
      )
      const text = await response.text()
      return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : undefined }
    },

    /** Publishes an event as the auth service would (a fresh id unless one is given). */
    publish<T extends EventType>(type: T, data: EventData<T>, options: { id?: string } = {}) {
      const event = buildEvent('parley/auth', type, data, options)
      return auth.publishEvent(event).then(() => event)
    },

    /** Collects the events of `types` published on this vhost from now on. */
    async capture<T extends EventType>(types: T[]): Promise<CloudEvent<T>[]> {
      const events: CloudEvent<T>[] = []
      const record = async (event: CloudEvent<T>) => {
        events.push(event)
      }
      await auth.subscribe({
        queue: 'test.capture',
        transient: true,
        handlers: Object.fromEntries(types.map((type) => [type, record])) as Record<T, typeof record>,
      })
      return events
    },

    /** Creates profiles straight in the database (search fixtures). */
    async insertProfiles(rows: { id: string; email: string; displayName: string }[]) {
      const createdAt = new Date()
      for (let start = 0; start < rows.length; start += 500)
        await postgres.db
          .insert(profiles)
          .values(rows.slice(start, start + 500).map((row) => ({ ...row, createdAt })))
    },

    async stop() {
      await runtime.lifecycle.shutdown()
      await auth.close()
      await postgres.close()
      // KEYS patterns are not prefixed by the client, its arguments to DEL are.
      const keys = await redis.keys(`${redisPrefix}*`).catch(() => [])
      if (keys.length > 0) await redis.del(...keys.map((key) => key.slice(redisPrefix.length)))
      await closeRedis(redis)
      await database.drop()
      await vhost.drop()
    },
  }
}

export function registration(userId: string, overrides: Partial<EventData<'user.registered'>> = {}) {
  return {
    userId,
    email: `${userId.slice(-12)}@example.com`,
    displayName: `User ${userId.slice(-6)}`,
    emailVerified: false,
    roles: ['user'],
    createdAt: new Date().toISOString(),
    ...overrides,
  } satisfies EventData<'user.registered'>
}
