import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { Metrics } from '@parley/common'
import { EventBus } from '@parley/common/events'
import { closeRedis, createRedis } from '@parley/common/redis'
import {
  createTestSigner,
  createTestVhost,
  type TestVhost,
  testInfra,
  testLogger,
  testRedisPrefix,
  waitFor,
} from '@parley/testkit'
import { RevocationStore } from '../src/modules/edge-auth/service'
import {
  closedPort,
  metricValue,
  startGateway,
  startJwksServer,
  startUpstream,
  type TestGateway,
  type TestUpstream,
} from './harness'

let vhost: TestVhost
let signer: Awaited<ReturnType<typeof createTestSigner>>
let jwks: ReturnType<typeof startJwksServer>
let gateway: TestGateway
let upstream: TestUpstream
let publisher: EventBus
const redisKeyPrefix = testRedisPrefix()

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
      JWKS_REFETCH_COOLDOWN_MS: '0',
    },
    { redisKeyPrefix },
  )
  publisher = new EventBus({
    url: vhost.url,
    exchange: 'parley.events',
    source: 'parley/auth',
    prefetch: 10,
    logger: testLogger(),
    metrics: new Metrics('test'),
  })
  await publisher.start()
  await publisher.connected()
})

afterAll(async () => {
  await publisher?.close()
  await gateway?.stop()
  await upstream?.stop()
  await jwks?.stop()
  await vhost?.drop()
})

const get = (path: string, headers: Record<string, string> = {}) =>
  fetch(`${gateway.url}${path}`, { headers })
const withToken = (token: string) => ({ authorization: `Bearer ${token}` })

function base64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url')
}

async function expectUnauthorized(response: Response, detail?: string) {
  expect(response.status).toBe(401)
  expect(response.headers.get('content-type')).toContain('application/problem+json')
  expect(response.headers.get('www-authenticate')).toBe('Bearer')
  const problem = (await response.json()) as { status: number; detail: string }
  expect(problem.status).toBe(401)
  if (detail) expect(problem.detail).toContain(detail)
}

describe('public allow-list', () => {
  test.each([
    ['POST', '/api/v1/auth/register'],
    ['POST', '/api/v1/auth/login'],
    ['POST', '/api/v1/auth/refresh'],
    ['GET', '/api/v1/auth/.well-known/jwks.json'],
  ])('%s %s reaches the service without a token', async (method, path) => {
    const response = await fetch(`${gateway.url}${path}`, {
      method,
      ...(method === 'POST'
        ? {
            body: JSON.stringify({ email: 'a@example.com' }),
            headers: { 'content-type': 'application/json' },
          }
        : {}),
    })
    expect(response.status).toBe(200)
  })

  test.each([
    ['POST', '/api/v1/auth/logout'],
    ['POST', '/api/v1/auth/revoke'],
    ['GET', '/api/v1/auth/me'],
    ['POST', '/api/v1/auth/verify-email/request'],
    ['GET', '/api/v1/users/me'],
    ['GET', '/api/v1/conversations'],
    ['GET', '/api/v1/notifications'],
    ['GET', '/api/v1/auth/register'],
  ])('%s %s needs a token and never reaches the service without one', async (method, path) => {
    const before = upstream.requests.length
    await expectUnauthorized(await fetch(`${gateway.url}${path}`, { method }))
    expect(upstream.requests.length).toBe(before)
  })

  test('the public port serves /health and /docs, but /ready and /metrics only on the ops port', async () => {
    for (const path of ['/health', '/docs']) expect((await get(path)).status).toBeLessThan(400)
    for (const path of ['/ready', '/metrics']) {
      const response = await get(path)
      expect({ path, status: response.status }).toEqual({ path, status: 404 })
      expect(response.headers.get('content-type')).toContain('application/problem+json')
      expect(upstream.requests.some((request) => request.path === path)).toBe(false)
    }
    for (const path of ['/health', '/ready', '/metrics'])
      expect((await fetch(`${gateway.opsUrl}${path}`)).status).toBe(200)
    const ready = (await (await fetch(`${gateway.opsUrl}/ready`)).json()) as { checks: object }
    expect(Object.keys(ready.checks)).toContain('broker')
  })
})

describe('token verification', () => {
  test('a valid token passes', async () => {
    const token = await signer.sign({ sub: Bun.randomUUIDv7() })
    expect((await get('/api/v1/users/me', withToken(token))).status).toBe(200)
  })

  test('a malformed Authorization header is rejected', async () => {
    await expectUnauthorized(await get('/api/v1/users/me', { authorization: 'Basic dXNlcjpwYXNz' }))
    await expectUnauthorized(await get('/api/v1/users/me', withToken('not-a-jwt')))
  })

  test('a token signed by another key is rejected (forged)', async () => {
    const forger = await createTestSigner()
    await expectUnauthorized(
      await get('/api/v1/users/me', withToken(await forger.sign({ sub: Bun.randomUUIDv7() }))),
    )
  })

  test('a token whose payload was altered is rejected', async () => {
    const [header, , signature] = (await signer.sign({ sub: Bun.randomUUIDv7() })).split('.')
    const payload = base64url({
      sub: Bun.randomUUIDv7(),
      roles: ['admin'],
      iss: 'parley-auth',
      aud: 'parley',
      iat: Math.floor(Date.now() / 1000),
      exp: Math.floor(Date.now() / 1000) + 900,
      jti: crypto.randomUUID(),
      sid: crypto.randomUUID(),
    })
    await expectUnauthorized(await get('/api/v1/users/me', withToken(`${header}.${payload}.${signature}`)))
  })

  test('an expired token is rejected', async () => {
    const now = Math.floor(Date.now() / 1000)
    const token = await signer.sign({ sub: Bun.randomUUIDv7(), iat: now - 3600, exp: now - 60 })
    await expectUnauthorized(await get('/api/v1/users/me', withToken(token)), 'expired')
  })

  test('an unsigned `alg: none` token is rejected', async () => {
    const kid = signer.jwks.keys[0]?.kid
    const now = Math.floor(Date.now() / 1000)
    const token = `${base64url({ alg: 'none', typ: 'JWT', kid })}.${base64url({
      sub: Bun.randomUUIDv7(),
      iss: 'parley-auth',
      aud: 'parley',
      iat: now,
      exp: now + 900,
      jti: crypto.randomUUID(),
      sid: crypto.randomUUID(),
    })}.`
    await expectUnauthorized(await get('/api/v1/users/me', withToken(token)))
  })

  test('a token for another audience or issuer is rejected', async () => {
    const otherAudience = await createTestSigner({ audience: 'elsewhere' })
    const otherIssuer = await createTestSigner({ issuer: 'someone-else' })
    jwks.setKeys({ keys: [...signer.jwks.keys, ...otherAudience.jwks.keys, ...otherIssuer.jwks.keys] })
    try {
      await expectUnauthorized(
        await get('/api/v1/users/me', withToken(await otherAudience.sign({ sub: Bun.randomUUIDv7() }))),
      )
      await expectUnauthorized(
        await get('/api/v1/users/me', withToken(await otherIssuer.sign({ sub: Bun.randomUUIDv7() }))),
      )
    } finally {
      jwks.setKeys(signer.jwks)
    }
  })
})

describe('JWKS rotation', () => {
  test('a token with an unknown kid makes the gateway refetch the JWKS and accept the new key', async () => {
    const rotated = await createTestSigner()
    const token = await rotated.sign({ sub: Bun.randomUUIDv7() })
    await get('/api/v1/users/me', withToken(await signer.sign({ sub: Bun.randomUUIDv7() })))
    const fetchesBefore = jwks.fetches()

    // Not published yet: refetched, still unknown, rejected.
    await expectUnauthorized(await get('/api/v1/users/me', withToken(token)))
    expect(jwks.fetches()).toBeGreaterThan(fetchesBefore)

    // auth publishes the new key beside the old one: the next unknown-kid refetch finds it.
    jwks.setKeys({ keys: [...rotated.jwks.keys, ...signer.jwks.keys] })
    try {
      expect((await get('/api/v1/users/me', withToken(token))).status).toBe(200)
      // Tokens signed with the previous key keep working.
      expect(
        (await get('/api/v1/users/me', withToken(await signer.sign({ sub: Bun.randomUUIDv7() })))).status,
      ).toBe(200)
      expect(
        metricValue(await gateway.metrics(), 'jwks_fetches_total', { outcome: 'ok' }),
      ).toBeGreaterThanOrEqual(2)
    } finally {
      jwks.setKeys(signer.jwks)
    }
  })
})

describe('session revocation', () => {
  test('user.sessions_revoked rejects tokens issued before it, on every replica, and not later ones', async () => {
    const userId = Bun.randomUUIDv7()
    const now = Math.floor(Date.now() / 1000)
    const oldToken = await signer.sign({ sub: userId, iat: now - 30 })
    const otherUser = await signer.sign({ sub: Bun.randomUUIDv7(), iat: now - 30 })
    expect((await get('/api/v1/users/me', withToken(oldToken))).status).toBe(200)

    await publisher.publish('user.sessions_revoked', {
      userId,
      revokedBefore: new Date((now - 10) * 1000).toISOString(),
    })
    await waitFor(async () => (await get('/api/v1/users/me', withToken(oldToken))).status === 401, {
      what: 'the revoked token to be rejected',
    })
    await expectUnauthorized(await get('/api/v1/users/me', withToken(oldToken)), 'revoked')
    expect((await get('/api/v1/users/me', withToken(await signer.sign({ sub: userId })))).status).toBe(200)
    expect((await get('/api/v1/users/me', withToken(otherUser))).status).toBe(200)

    // Shared through Redis: a second replica that never saw the event rejects the token too.
    const second = await startGateway(
      { AMQP_URL: vhost.url, JWKS_URL: jwks.url, USER_URL: upstream.url },
      { redisKeyPrefix },
    )
    try {
      await expectUnauthorized(
        await fetch(`${second.url}/api/v1/users/me`, { headers: withToken(oldToken) }),
        'revoked',
      )
    } finally {
      await second.stop()
    }
  })

  test('user.session_revoked rejects that session at once, on every replica; the user’s other sessions keep working', async () => {
    const userId = Bun.randomUUIDv7()
    const loggedOut = crypto.randomUUID()
    const token = await signer.sign({ sub: userId, sid: loggedOut })
    const otherDevice = await signer.sign({ sub: userId, sid: crypto.randomUUID() })
    expect((await get('/api/v1/users/me', withToken(token))).status).toBe(200)

    await publisher.publish('user.session_revoked', {
      userId,
      sessionId: loggedOut,
      reason: 'logout',
      revokedAt: new Date().toISOString(),
    })
    await waitFor(async () => (await get('/api/v1/users/me', withToken(token))).status === 401, {
      what: 'the logged-out session to be rejected',
    })
    await expectUnauthorized(await get('/api/v1/users/me', withToken(token)), 'revoked')
    // A token minted later for the same session (a refresh racing the logout) is refused too.
    const later = await signer.sign({ sub: userId, sid: loggedOut, iat: Math.floor(Date.now() / 1000) + 5 })
    await expectUnauthorized(await get('/api/v1/users/me', withToken(later)), 'revoked')
    expect((await get('/api/v1/users/me', withToken(otherDevice))).status).toBe(200)

    const second = await startGateway(
      { AMQP_URL: vhost.url, JWKS_URL: jwks.url, USER_URL: upstream.url },
      { redisKeyPrefix },
    )
    try {
      await expectUnauthorized(
        await fetch(`${second.url}/api/v1/users/me`, { headers: withToken(token) }),
        'revoked',
      )
      expect((await fetch(`${second.url}/api/v1/users/me`, { headers: withToken(otherDevice) })).status).toBe(
        200,
      )
    } finally {
      await second.stop()
    }
    // The second replica read it from Redis, so the durable path had recorded it there.
    const metrics = await gateway.metrics()
    for (const store of ['memory', 'redis'])
      expect(
        metricValue(metrics, 'gateway_revocations_recorded_total', { kind: 'session', store }),
      ).toBeGreaterThanOrEqual(1)
  })

  test('with Redis down, every running replica enforces a revocation from its fan-out queue', async () => {
    const unreachable = `redis://127.0.0.1:${await closedPort()}`
    const replicas = await Promise.all(
      [1, 2].map(() =>
        startGateway(
          { AMQP_URL: vhost.url, JWKS_URL: jwks.url, USER_URL: upstream.url, REDIS_URL: unreachable },
          { redisKeyPrefix: testRedisPrefix(), redisUnreachable: true },
        ),
      ),
    )
    try {
      const userId = Bun.randomUUIDv7()
      const sessionId = crypto.randomUUID()
      const token = await signer.sign({ sub: userId, sid: sessionId })
      const userWideId = Bun.randomUUIDv7()
      const userWide = await signer.sign({ sub: userWideId, iat: Math.floor(Date.now() / 1000) - 30 })
      for (const replica of replicas)
        expect((await fetch(`${replica.url}/api/v1/users/me`, { headers: withToken(token) })).status).toBe(
          200,
        )
      await publisher.publish('user.session_revoked', {
        userId,
        sessionId,
        reason: 'reuse_detected',
        revokedAt: new Date().toISOString(),
      })
      await publisher.publish('user.sessions_revoked', {
        userId: userWideId,
        revokedBefore: new Date().toISOString(),
      })
      for (const replica of replicas) {
        for (const revoked of [token, userWide])
          await waitFor(
            async () =>
              (await fetch(`${replica.url}/api/v1/users/me`, { headers: withToken(revoked) })).status === 401,
            { what: 'each replica to reject the revoked tokens without Redis' },
          )
      }
    } finally {
      await Promise.all(replicas.map((replica) => replica.stop()))
    }
  })

  test('an older revocation never lowers a newer one', async () => {
    const redis = createRedis(testInfra.redisUrl, testLogger(), { keyPrefix: testRedisPrefix() })
    const store = new RevocationStore(
      redis,
      { ttlSeconds: 3600, cacheMs: 0 },
      testLogger(),
      new Metrics('test'),
    )
    try {
      await waitFor(() => redis.status === 'ready', { what: 'redis' })
      const userId = Bun.randomUUIDv7()
      await store.revoke({ kind: 'user', userId, revokedBefore: new Date(2_000_000_000_000) })
      await store.revoke({ kind: 'user', userId, revokedBefore: new Date(1_000_000_000_000) })
      expect(await redis.get(`revoked:${userId}`)).toBe('2000000000')
    } finally {
      await closeRedis(redis)
    }
  })

  test('with Redis unreachable, a revocation this replica consumed is still enforced', async () => {
    const redis = createRedis(`redis://127.0.0.1:${await closedPort()}`, testLogger())
    const store = new RevocationStore(
      redis,
      { ttlSeconds: 3600, cacheMs: 0 },
      testLogger(),
      new Metrics('test'),
    )
    try {
      const userId = Bun.randomUUIDv7()
      const now = Math.floor(Date.now() / 1000)
      // The write fails (the consumer retries it later) but the local copy already holds it.
      await expect(
        store.revoke({ kind: 'user', userId, revokedBefore: new Date(now * 1000) }),
      ).rejects.toThrow()
      const identity = {
        userId,
        sessionId: 's',
        tokenId: 't',
        roles: [],
        emailVerified: false,
        expiresAt: now + 60,
      }
      expect(await store.isRevoked({ ...identity, issuedAt: now - 5 })).toBe(true)
      expect(await store.isRevoked({ ...identity, issuedAt: now + 5 })).toBe(false)
    } finally {
      redis.disconnect()
    }
  })
})
