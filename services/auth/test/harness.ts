import { setDefaultTimeout } from 'bun:test'
import { generateKeyPairSync } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { createRuntime, type OpsApp, opsApp, parseConfig, type Runtime } from '@parley/common'
import { EventBus } from '@parley/common/events'
import type { CloudEvent, EventType, Problem } from '@parley/contracts'
import {
  createTestDatabase,
  createTestVhost,
  jsonRequest,
  type TestDatabase,
  type TestVhost,
  testInfra,
  testLogger,
  testRedisPrefix,
  waitFor,
} from '@parley/testkit'
import { decodeJwt } from 'jose'
import postgres from 'postgres'
import { type App, buildApp } from '../src/app'
import { type Config, Env } from '../src/config'
import { type AuthDeps, connect } from '../src/deps'

// Tests wait for events through the real broker: allow for a loaded machine.
setDefaultTimeout(30_000)

export const MIGRATIONS = fileURLToPath(new URL('../drizzle', import.meta.url))

/** argon2id at a cost tests can afford; one test exercises the defaults. */
export const CHEAP_ARGON2 = { ARGON2_MEMORY_KIB: '1024', ARGON2_TIME_COST: '1' }

export type Reply<T = unknown> = { status: number; headers: Headers; body: T }

export type AuthInstance = {
  app: App
  /** The ops port's app: /ready, /metrics. */
  ops: OpsApp
  deps: AuthDeps
  config: Config
  runtime: Runtime
  call: <T = Record<string, unknown>>(
    method: string,
    path: string,
    options?: { body?: unknown; token?: string; headers?: Record<string, string> },
  ) => Promise<Reply<T>>
  close: () => Promise<void>
}

export type SignedInUser = {
  id: string
  email: string
  password: string
  displayName: string
  accessToken: string
  refreshToken: string
}

/** Environment variables; `undefined` removes one (so its default applies). */
export type EnvOverrides = Record<string, string | undefined>

/** A running auth app (connect + buildApp) over the given environment. */
export async function startAuth(env: EnvOverrides): Promise<AuthInstance> {
  const config = parseConfig(Env, env)
  const runtime = createRuntime('auth', 'silent', testLogger('auth'))
  const deps = await connect(config, runtime)
  runtime.lifecycle.markReady()
  const app = buildApp(deps)
  const call = async <T>(
    method: string,
    path: string,
    options: { body?: unknown; token?: string; headers?: Record<string, string> } = {},
  ): Promise<Reply<T>> => {
    const headers = {
      ...options.headers,
      ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
    }
    const response = await app.handle(jsonRequest(method, path, options.body, headers))
    const text = await response.text()
    return {
      status: response.status,
      headers: response.headers,
      body: (text ? JSON.parse(text) : undefined) as T,
    }
  }
  const ops = opsApp(runtime, deps.readiness)
  return { app, ops, deps, config, runtime, call, close: () => runtime.lifecycle.shutdown() }
}

/**
 * Everything one test file owns: a database, a vhost, a Redis prefix, an auth app over them
 * and an observer queue collecting every event auth publishes.
 */
export async function createHarness(env: EnvOverrides = {}) {
  const database: TestDatabase = await createTestDatabase(MIGRATIONS)
  const vhost: TestVhost = await createTestVhost()
  const redisPrefix = testRedisPrefix()
  const baseEnv: Record<string, string> = {
    DATABASE_URL: database.url,
    DATABASE_POOL_MAX: '5',
    REDIS_URL: testInfra.redisUrl,
    REDIS_KEY_PREFIX: redisPrefix,
    AMQP_URL: vhost.url,
    // Production mode with a configured key, shared by every instance of this file.
    PARLEY_ENV: 'production',
    JWT_PRIVATE_KEY: generateKeyPairSync('ed25519')
      .privateKey.export({ type: 'pkcs8', format: 'pem' })
      .toString(),
    ...CHEAP_ARGON2,
  }
  const observerRuntime = createRuntime('observer', 'silent', testLogger('observer'))
  const observer = new EventBus({
    url: vhost.url,
    exchange: 'parley.events',
    source: 'parley/test',
    prefetch: 50,
    logger: observerRuntime.logger,
    metrics: observerRuntime.metrics,
  })
  const events: CloudEvent[] = []
  const record = async (event: CloudEvent) => {
    events.push(event)
  }
  // Every event type auth publishes.
  await observer.subscribe({
    queue: 'test.observer',
    handlers: {
      'user.registered': record,
      'user.email_verification_requested': record,
      'user.email_verified': record,
      'user.sessions_revoked': record,
      'user.session_revoked': record,
    },
  })
  await observer.start()
  await observer.connected()
  const auth = await startAuth({ ...baseEnv, ...env })
  // Its queues exist from here on: events published by the test are not dropped as unroutable.
  await auth.deps.bus.connected()
  const sql = postgres(database.url, { max: 2, onnotice: () => undefined })
  const extra: AuthInstance[] = []

  let registered = 0
  const harness = {
    ...auth,
    database,
    vhost,
    redisPrefix,
    baseEnv,
    sql,
    events,
    observer,
    /**
     * Another app instance on the same database, vhost and prefix, with some variables changed.
     * It consumes from the same queues: close it when the test is done with it.
     */
    async startAnother(overrides: EnvOverrides) {
      const another = await startAuth({ ...baseEnv, ...env, ...overrides })
      extra.push(another)
      return another
    },
    /** The events of one type received so far. */
    eventsOf<T extends EventType>(type: T): CloudEvent<T>[] {
      return events.filter((event): event is CloudEvent<T> => event.type === type)
    },
    /** Waits for an event auth published (through outbox, relay and broker). */
    async eventOf<T extends EventType>(type: T, matches: (event: CloudEvent<T>) => boolean) {
      return waitFor(() => harness.eventsOf(type).find(matches), { timeoutMs: 15_000, what: `${type} event` })
    },
    sidOf(user: { accessToken: string }): string {
      return String(decodeJwt(user.accessToken).sid)
    },
    async count(table: 'credentials' | 'sessions' | 'outbox') {
      const [row] = await sql<{ count: number }[]>`select count(*)::int as count from ${sql(table)}`
      return row?.count ?? 0
    },
    async register(overrides: Partial<{ email: string; password: string; displayName: string }> = {}) {
      registered++
      const email = overrides.email ?? `user${registered}.${crypto.randomUUID().slice(0, 8)}@example.com`
      const password = overrides.password ?? `correct horse ${crypto.randomUUID()}`
      const displayName = overrides.displayName ?? `User ${registered}`
      const reply = await auth.call<{ accessToken: string; refreshToken: string; user: { id: string } }>(
        'POST',
        '/auth/register',
        { body: { email, password, displayName } },
      )
      if (reply.status !== 201)
        throw new Error(`register answered ${reply.status}: ${JSON.stringify(reply.body)}`)
      const user: SignedInUser = {
        id: reply.body.user.id,
        email: email.trim().toLowerCase(),
        password,
        displayName,
        accessToken: reply.body.accessToken,
        refreshToken: reply.body.refreshToken,
      }
      return user
    },
    async close() {
      await Promise.all(extra.map((instance) => instance.close()))
      await auth.close()
      await observer.close()
      await sql.end()
      await database.drop()
      await vhost.drop()
    },
  }
  return harness
}

export type Harness = Awaited<ReturnType<typeof createHarness>>

/** Sum of a metric's samples whose labels include `labels`, read from the ops port's /metrics. */
export async function metricValue(
  ops: OpsApp,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const text = await (await ops.handle(new Request('http://localhost/metrics'))).text()
  let total = 0
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!match || match[1] !== name) continue
    const present = match[2] ?? ''
    if (Object.entries(labels).every(([key, value]) => present.includes(`${key}="${value}"`)))
      total += Number(match[3])
  }
  return total
}

export function problemOf(reply: Reply): Problem {
  return reply.body as Problem
}
