import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { ConfigError, Metrics } from '@parley/common'
import { closeRedis, createRedis } from '@parley/common/redis'
import {
  createTestSigner,
  createTestVhost,
  rawHttp,
  type TestVhost,
  testInfra,
  testLogger,
  testRedisPrefix,
  waitFor,
} from '@parley/testkit'
import { DEFAULT_POLICIES, parsePolicies } from '../src/modules/rate-limit/model'
import { MemoryGcra, RateLimiter } from '../src/modules/rate-limit/service'
import {
  closedPort,
  metricValue,
  type RecordedRequest,
  startGateway,
  startJwksServer,
  startUpstream,
  type TestGateway,
  type TestUpstream,
} from './harness'

const POLICIES = JSON.stringify({
  login: { limit: 3, windowSeconds: 60 },
  loginEmail: { limit: 6, windowSeconds: 900 },
  register: { limit: 2, windowSeconds: 3600 },
  verification: { limit: 2, windowSeconds: 900 },
  conversations: { limit: 3, windowSeconds: 3600 },
  invitations: { limit: 10, windowSeconds: 3600 },
  authenticated: { limit: 5, windowSeconds: 60 },
})

let vhost: TestVhost
let signer: Awaited<ReturnType<typeof createTestSigner>>
let jwks: ReturnType<typeof startJwksServer>
let upstream: TestUpstream
let gateway: TestGateway

beforeAll(async () => {
  vhost = await createTestVhost()
  signer = await createTestSigner()
  jwks = startJwksServer(signer.jwks)
  upstream = startUpstream()
  gateway = await startGateway(
    {
      AMQP_URL: vhost.url,
      JWKS_URL: jwks.url,
      AUTH_URL: upstream.url,
      USER_URL: upstream.url,
      CHAT_URL: upstream.url,
      NOTIFICATION_URL: upstream.url,
      RATE_LIMIT_POLICIES: POLICIES,
      // Tests stand in for distinct clients through one trusted proxy hop.
      TRUST_PROXY_HOPS: '1',
    },
    { redisKeyPrefix: testRedisPrefix() },
  )
})

afterAll(async () => {
  await gateway?.stop()
  await upstream?.stop()
  await jwks?.stop()
  await vhost?.drop()
})

/** A client IP of its own for each test, so tests share no quota. */
function clientIp(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(3))
  return `10.${bytes[0]}.${bytes[1]}.${bytes[2]}`
}

function login(base: string, ip: string, email: string) {
  return fetch(`${base}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-forwarded-for': ip },
    body: JSON.stringify({ email, password: 'correct horse battery staple' }),
  })
}

describe('policies', () => {
  test('defaults apply and RATE_LIMIT_POLICIES overrides them by name', () => {
    expect(parsePolicies('{}')).toEqual(DEFAULT_POLICIES)
    const policies = parsePolicies('{"login":{"limit":10,"windowSeconds":30}}')
    expect(policies.login).toEqual({ limit: 10, windowSeconds: 30 })
    expect(policies.register).toEqual(DEFAULT_POLICIES.register)
  })

  test.each([
    ['not json', 'a JSON object'],
    ['{"logn":{"limit":1,"windowSeconds":1}}', '/logn'],
    ['{"login":{"limit":0,"windowSeconds":60}}', '/login/limit'],
    ['{"login":{"limit":5}}', '/login/windowSeconds'],
  ])('%s is refused naming the variable', (raw, detail) => {
    let error: unknown
    try {
      parsePolicies(raw)
    } catch (caught) {
      error = caught
    }
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).variable).toBe('RATE_LIMIT_POLICIES')
    expect((error as ConfigError).message).toContain(detail)
  })

  test('the in-process GCRA allows a burst of `limit`, then one request per interval', () => {
    const gcra = new MemoryGcra()
    const now = 1_000_000
    // 3 per 60 s: interval 20 s, tolerance 60 s.
    expect(gcra.take('k', 20_000, 60_000, now)[0]).toBe(1)
    expect(gcra.take('k', 20_000, 60_000, now)[0]).toBe(1)
    expect(gcra.take('k', 20_000, 60_000, now)[0]).toBe(1)
    const denied = gcra.take('k', 20_000, 60_000, now)
    expect(denied[0]).toBe(0)
    expect(denied[2]).toBe(20_000)
    expect(gcra.take('k', 20_000, 60_000, now + 19_999)[0]).toBe(0)
    expect(gcra.take('k', 20_000, 60_000, now + 20_000)[0]).toBe(1)
    expect(gcra.take('other', 20_000, 60_000, now)[0]).toBe(1)
  })
})

describe('limits in Redis', () => {
  test('login: per IP + email, headers on every answer, 429 problem with Retry-After when exceeded', async () => {
    const ip = clientIp()
    for (const remaining of [2, 1, 0]) {
      const response = await login(gateway.url, ip, 'victim@example.com')
      expect(response.status).toBe(200)
      expect(response.headers.get('ratelimit-policy')).toBe('"login";q=3;w=60')
      expect(response.headers.get('ratelimit')).toMatch(new RegExp(`^"login";r=${remaining};t=\\d+$`))
      // The buffered login body reaches the service intact.
      const echoed = (await response.json()) as RecordedRequest
      expect(JSON.parse(echoed.body)).toEqual({
        email: 'victim@example.com',
        password: 'correct horse battery staple',
      })
    }
    const before = upstream.requests.length
    const limited = await login(gateway.url, ip, 'Victim@Example.com ')
    expect(limited.status).toBe(429)
    expect(limited.headers.get('content-type')).toContain('application/problem+json')
    const retryAfter = Number(limited.headers.get('retry-after'))
    expect(retryAfter).toBeGreaterThanOrEqual(1)
    expect(retryAfter).toBeLessThanOrEqual(20)
    expect(limited.headers.get('ratelimit-policy')).toBe('"login";q=3;w=60')
    expect(limited.headers.get('ratelimit')).toMatch(/^"login";r=0;t=\d+$/)
    expect(((await limited.json()) as { status: number }).status).toBe(429)
    expect(upstream.requests.length).toBe(before)

    // Another account from the same IP, and the same account from another IP, are not blocked.
    expect((await login(gateway.url, ip, 'someone-else@example.com')).status).toBe(200)
    expect((await login(gateway.url, clientIp(), 'victim@example.com')).status).toBe(200)
    expect(
      metricValue(await gateway.metrics(), 'ratelimit_decisions_total', {
        policy: 'login',
        decision: 'deny',
        store: 'redis',
      }),
    ).toBeGreaterThanOrEqual(1)
  })

  test('register: strict per IP', async () => {
    const ip = clientIp()
    const register = (from: string) =>
      fetch(`${gateway.url}/api/v1/auth/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-forwarded-for': from },
        body: JSON.stringify({
          email: `${crypto.randomUUID()}@example.com`,
          displayName: 'A',
          password: 'x'.repeat(12),
        }),
      })
    expect((await register(ip)).status).toBe(200)
    expect((await register(ip)).status).toBe(200)
    const limited = await register(ip)
    expect(limited.status).toBe(429)
    expect(limited.headers.get('ratelimit-policy')).toBe('"register";q=2;w=3600')
    expect((await register(clientIp())).status).toBe(200)
  })

  test('authenticated routes: per user, whatever the IP', async () => {
    const alice = await signer.sign({ sub: Bun.randomUUIDv7() })
    const bob = await signer.sign({ sub: Bun.randomUUIDv7() })
    const call = (token: string) =>
      fetch(`${gateway.url}/api/v1/conversations`, {
        headers: { authorization: `Bearer ${token}`, 'x-forwarded-for': clientIp() },
      })
    for (let index = 0; index < 5; index++) {
      const response = await call(alice)
      expect(response.status).toBe(200)
      expect(response.headers.get('ratelimit-policy')).toBe('"authenticated";q=5;w=60')
    }
    const limited = await call(alice)
    expect(limited.status).toBe(429)
    expect(limited.headers.get('retry-after')).not.toBeNull()
    expect((await call(bob)).status).toBe(200)
  })

  test('the verification-code routes have their own strict per-user policy', async () => {
    const token = await signer.sign({ sub: Bun.randomUUIDv7() })
    const request = () =>
      fetch(`${gateway.url}/api/v1/auth/verify-email/request`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}` },
      })
    expect((await request()).headers.get('ratelimit-policy')).toBe('"verification";q=2;w=900')
    expect((await request()).status).toBe(200)
    expect((await request()).status).toBe(429)
    // Other routes of the same user still have quota.
    const other = await fetch(`${gateway.url}/api/v1/users/me`, {
      headers: { authorization: `Bearer ${token}` },
    })
    expect(other.status).toBe(200)
  })
})

describe('limits of their own', () => {
  test('login: per email from any IP, on top of per IP + email', async () => {
    const email = `${crypto.randomUUID()}@example.com`
    // Six addresses, one attempt each: the per IP + email limit (3) never trips.
    for (let attempt = 0; attempt < 6; attempt++)
      expect((await login(gateway.url, clientIp(), email)).status).toBe(200)
    const before = upstream.requests.length
    const limited = await login(gateway.url, clientIp(), email.toUpperCase())
    expect(limited.status).toBe(429)
    expect(limited.headers.get('ratelimit-policy')).toBe('"loginEmail";q=6;w=900')
    expect(upstream.requests.length).toBe(before)
    expect((await login(gateway.url, clientIp(), `${crypto.randomUUID()}@example.com`)).status).toBe(200)
  })

  test('conversation creation per user, invitations per invitee', async () => {
    const token = await signer.sign({ sub: Bun.randomUUIDv7() })
    const users = (count: number) => Array.from({ length: count }, () => Bun.randomUUIDv7())
    const send = (path: string, body: unknown) =>
      fetch(`${gateway.url}/api/v1${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      })
    const created = await send('/conversations', { participantIds: users(4) })
    expect(created.status).toBe(200)
    expect(created.headers.get('ratelimit-policy')).toBe('"invitations";q=10;w=3600')
    expect(created.headers.get('ratelimit')).toMatch(/^"invitations";r=6;t=\d+$/)
    // The buffered body reaches the service intact.
    const echoed = (await created.json()) as RecordedRequest
    expect(JSON.parse(echoed.body).participantIds).toHaveLength(4)

    const conversation = Bun.randomUUIDv7()
    expect((await send(`/conversations/${conversation}/participants`, { userIds: users(5) })).status).toBe(
      200,
    )
    const before = upstream.requests.length
    // 9 of 10 invitations used: two more invitees do not fit.
    const tooMany = await send(`/conversations/${conversation}/participants`, { userIds: users(2) })
    expect(tooMany.status).toBe(429)
    expect(tooMany.headers.get('ratelimit-policy')).toBe('"invitations";q=10;w=3600')
    expect(upstream.requests.length).toBe(before)

    // A conversation with nobody else still counts as a creation and one invitation unit.
    expect((await send('/conversations', { participantIds: [] })).status).toBe(200)
    const third = await send('/conversations', { participantIds: 'not an array' })
    expect(third.status).toBe(429)

    const other = await signer.sign({ sub: Bun.randomUUIDv7() })
    const fresh = await fetch(`${gateway.url}/api/v1/conversations`, {
      method: 'POST',
      headers: { authorization: `Bearer ${other}`, 'content-type': 'application/json' },
      body: JSON.stringify({ participantIds: users(3) }),
    })
    expect(fresh.status).toBe(200)
  })

  test('conversation creations past the per-user limit are refused even with no invitees', async () => {
    const token = await signer.sign({ sub: Bun.randomUUIDv7() })
    const create = () =>
      fetch(`${gateway.url}/api/v1/conversations`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ participantIds: [] }),
      })
    for (let index = 0; index < 3; index++) expect((await create()).status).toBe(200)
    const limited = await create()
    expect(limited.status).toBe(429)
    expect(limited.headers.get('ratelimit-policy')).toBe('"conversations";q=3;w=3600')
  })
})

describe('a path spelled differently is limited and forwarded as its canonical route', () => {
  // Reproduced before canonicalisation: `/auth/login/` with any valid bearer token was counted
  // under `authenticated` and the auth service still served it as login.
  test.each([
    '/api/v1/auth/login/',
    '/api/v1//auth//login',
    '/api/v1/auth/logi%6E',
    '/api/v1/auth/./login',
    '/api/v1/users/../auth/login',
    '/api/v1/users/%2e%2e/auth/login',
    '/api/v1/auth/LOGIN',
  ])('%s', async (target) => {
    const ip = clientIp()
    const token = await signer.sign({ sub: Bun.randomUUIDv7() })
    const body = JSON.stringify({ email: `${crypto.randomUUID()}@example.com`, password: 'wrong password!' })
    const headers = {
      'content-type': 'application/json',
      'x-forwarded-for': ip,
      authorization: `Bearer ${token}`,
    }
    const statuses: number[] = []
    for (let attempt = 0; attempt < 4; attempt++)
      statuses.push((await rawHttp(gateway.url, 'POST', target, headers, body)).status)
    expect(statuses).toEqual([200, 200, 200, 429])
    const forwarded = upstream.requests.at(-1)
    expect(forwarded?.path).toBe(target.endsWith('LOGIN') ? '/auth/LOGIN' : '/auth/login')
  })

  test.each(['/api/v1/auth%2Flogin', '/api/v1/auth/login%5C', '/api/v1/auth/login%00'])(
    '%s has no canonical form: 400, not forwarded',
    async (target) => {
      const before = upstream.requests.length
      const response = await rawHttp(gateway.url, 'POST', target, { 'x-forwarded-for': clientIp() })
      expect(response.status).toBe(400)
      expect(response.headers.get('content-type')).toBe('application/problem+json')
      expect(upstream.requests.length).toBe(before)
    },
  )
})

describe('GCRA script', () => {
  test('concurrent requests decided in one script call are counted one by one', async () => {
    const redis = createRedis(testInfra.redisUrl, testLogger(), { keyPrefix: testRedisPrefix() })
    try {
      await waitFor(() => redis.status === 'ready', { what: 'redis' })
      const limiter = new RateLimiter(redis, parsePolicies(POLICIES), testLogger(), new Metrics('test'))
      const decisions = await Promise.all([
        ...Array.from({ length: 8 }, () => limiter.consume('authenticated', 'user:burst')),
        limiter.consume('authenticated', 'user:other'),
      ])
      const burst = decisions.slice(0, 8)
      expect(burst.filter((decision) => decision.allowed)).toHaveLength(5)
      expect(burst.map((decision) => decision.remaining)).toEqual([4, 3, 2, 1, 0, 0, 0, 0])
      expect(decisions[8]).toMatchObject({ allowed: true, remaining: 4, store: 'redis' })
      limiter.close()
    } finally {
      await closeRedis(redis)
    }
  })

  test('a quota so large that one interval is below clock precision still counts in Redis', async () => {
    const redis = createRedis(testInfra.redisUrl, testLogger(), { keyPrefix: testRedisPrefix() })
    try {
      await waitFor(() => redis.status === 'ready', { what: 'redis' })
      const limiter = new RateLimiter(
        redis,
        parsePolicies('{"authenticated":{"limit":1000000000,"windowSeconds":60}}'),
        testLogger(),
        new Metrics('test'),
      )
      const decision = await limiter.consume('authenticated', 'user:huge')
      expect(decision).toMatchObject({ allowed: true, store: 'redis' })
      limiter.close()
    } finally {
      await closeRedis(redis)
    }
  })
})

describe('Redis unreachable', () => {
  test('limits fall back to in-process: still served, still limited, counted, never a 500', async () => {
    const degraded = await startGateway(
      {
        AMQP_URL: vhost.url,
        JWKS_URL: jwks.url,
        AUTH_URL: upstream.url,
        USER_URL: upstream.url,
        REDIS_URL: `redis://127.0.0.1:${await closedPort()}`,
        RATE_LIMIT_POLICIES: POLICIES,
      },
      { redisKeyPrefix: testRedisPrefix(), redisUnreachable: true },
    )
    try {
      const token = await signer.sign({ sub: Bun.randomUUIDv7() })
      for (let index = 0; index < 5; index++) {
        const response = await fetch(`${degraded.url}/api/v1/users/me`, {
          headers: { authorization: `Bearer ${token}` },
        })
        expect(response.status).toBe(200)
        expect(response.headers.get('ratelimit')).toMatch(
          new RegExp(`^"authenticated";r=${4 - index};t=\\d+$`),
        )
      }
      const limited = await fetch(`${degraded.url}/api/v1/users/me`, {
        headers: { authorization: `Bearer ${token}` },
      })
      expect(limited.status).toBe(429)
      expect(limited.headers.get('retry-after')).not.toBeNull()

      const ip = clientIp()
      for (let index = 0; index < 3; index++)
        expect((await login(degraded.url, ip, 'a@example.com')).status).toBe(200)
      expect((await login(degraded.url, ip, 'a@example.com')).status).toBe(429)

      const metrics = await degraded.metrics()
      // 5 authenticated + 3 login + 4 loginEmail (the 4th login is denied per IP + email only).
      expect(metricValue(metrics, 'ratelimit_decisions_total', { store: 'memory', decision: 'allow' })).toBe(
        12,
      )
      expect(metricValue(metrics, 'ratelimit_decisions_total', { store: 'memory', decision: 'deny' })).toBe(2)
      expect(metricValue(metrics, 'ratelimit_decisions_total', { store: 'redis' })).toBe(0)
    } finally {
      await degraded.stop()
    }
  })
})

describe('leases', () => {
  /** A limiter of its own on a Redis connection of its own: a replica, as far as limits go. */
  async function replica(prefix: string, policies: string) {
    const redis = createRedis(testInfra.redisUrl, testLogger(), { keyPrefix: prefix })
    await waitFor(() => redis.status === 'ready', { what: 'redis' })
    const metrics = new Metrics('test')
    const limiter = new RateLimiter(redis, parsePolicies(policies), testLogger(), metrics)
    return {
      limiter,
      metrics,
      async close() {
        await limiter.close()
        await closeRedis(redis)
      },
    }
  }
  const takes = async (metrics: Metrics) =>
    metricValue(await metrics.registry.metrics(), 'ratelimit_redis_takes_total')

  test('a busy subject is admitted from leases: a Redis call per lease, not per request', async () => {
    const one = await replica(testRedisPrefix(), '{"authenticated":{"limit":100000,"windowSeconds":60}}')
    try {
      for (let index = 0; index < 400; index++) {
        const decision = await one.limiter.consume('authenticated', 'user:busy')
        expect(decision).toMatchObject({ allowed: true, store: 'redis' })
      }
      // Leases grow to 256 units (1/20 of the limit, capped): 400 requests need a handful of takes.
      expect(await takes(one.metrics)).toBeLessThan(20)
    } finally {
      await one.close()
    }
  })

  test('units a replica leased and did not use go back to Redis when its lease ends', async () => {
    const prefix = testRedisPrefix()
    const policies = '{"authenticated":{"limit":100,"windowSeconds":3600}}'
    const first = await replica(prefix, policies)
    for (let index = 0; index < 20; index++)
      expect((await first.limiter.consume('authenticated', 'user:returns')).allowed).toBe(true)
    await first.close()
    // The quota refills one unit per 36 s: what is left is the 80 units the first replica did not use.
    const second = await replica(prefix, policies)
    try {
      let admitted = 0
      while ((await second.limiter.consume('authenticated', 'user:returns')).allowed) admitted++
      expect(admitted).toBe(80)
    } finally {
      await second.close()
    }
  })

  test('two gateway replicas under load never admit more than the limit, and hold back at most their leases', async () => {
    // 200 per hour: leases of up to 10 units (1/20), one unit refills every 18 s.
    const env = {
      AMQP_URL: vhost.url,
      JWKS_URL: jwks.url,
      USER_URL: upstream.url,
      RATE_LIMIT_POLICIES: JSON.stringify({ authenticated: { limit: 200, windowSeconds: 3600 } }),
    }
    const prefix = testRedisPrefix()
    const replicas = [
      await startGateway(env, { redisKeyPrefix: prefix }),
      await startGateway(env, { redisKeyPrefix: prefix }),
    ]
    try {
      const token = await signer.sign({ sub: Bun.randomUUIDv7() })
      const statuses: number[] = []
      // 600 requests, 32 at a time, alternating between the replicas.
      for (let wave = 0; wave < 600 / 32; wave++) {
        const answers = await Promise.all(
          Array.from({ length: 32 }, (_, index) =>
            fetch(`${replicas[index % 2]?.url}/api/v1/users/me`, {
              headers: { authorization: `Bearer ${token}` },
            }),
          ),
        )
        for (const answer of answers) {
          statuses.push(answer.status)
          await answer.arrayBuffer()
        }
      }
      const admitted = statuses.filter((status) => status === 200).length
      expect(statuses.filter((status) => status !== 200 && status !== 429)).toEqual([])
      expect(admitted).toBeLessThanOrEqual(200)
      // Refused early only while the other replica still held leased units: at most 2 × 10.
      expect(admitted).toBeGreaterThanOrEqual(180)
    } finally {
      await Promise.all(replicas.map((replica) => replica.stop()))
    }
  })
})
