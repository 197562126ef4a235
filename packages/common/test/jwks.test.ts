import { afterAll, expect, test } from 'bun:test'
import type { Problem } from '@parley/contracts'
import { createTestSigner } from '@parley/testkit'
import { Elysia } from 'elysia'
import type { JSONWebKeySet } from 'jose'
import { AccessTokenVerifier, authPlugin } from '../src/auth'
import { HttpProblem } from '../src/errors'
import { httpKit } from '../src/http'
import { createRuntime } from '../src/runtime'

/** A JWKS endpoint standing in for the auth service, on a port the test may close and reopen. */
function jwksServer(port: number, keys: () => JSONWebKeySet) {
  return Bun.serve({
    hostname: '127.0.0.1',
    port,
    fetch: () => Response.json(keys()),
  })
}

let server: ReturnType<typeof Bun.serve> | undefined
afterAll(() => server?.stop(true))

async function rejection(verifier: AccessTokenVerifier, token: string): Promise<HttpProblem> {
  try {
    await verifier.verify(token)
  } catch (error) {
    if (error instanceof HttpProblem) return error
    throw error
  }
  throw new Error('expected the token to be rejected')
}

async function failureCount(runtime: ReturnType<typeof createRuntime>): Promise<number> {
  const metric = runtime.metrics.registry.getSingleMetric('jwks_refresh_failures_total')
  if (!metric) return 0
  return (await metric.get()).values.reduce((sum, value) => sum + value.value, 0)
}

test('an unreachable JWKS keeps the last good keys; an unknown kid meanwhile is a 503, never a 401', async () => {
  const current = await createTestSigner()
  const rotated = await createTestSigner()
  let published: JSONWebKeySet = current.jwks
  server = jwksServer(0, () => published)
  const port = Number(server.port)
  const runtime = createRuntime('jwks-test', process.env.TEST_LOG_LEVEL ?? 'silent')
  runtime.lifecycle.markReady()
  const verifier = new AccessTokenVerifier({
    jwks: new URL(`http://127.0.0.1:${port}/auth/.well-known/jwks.json`),
    issuer: current.issuer,
    audience: current.audience,
    cacheMaxAgeMs: 100,
    cooldownMs: 0,
    logger: runtime.logger,
    metrics: runtime.metrics,
  })
  const app = new Elysia()
    .use(
      httpKit({
        service: 'jwks-test',
        logger: runtime.logger,
        metrics: runtime.metrics,
        bodyLimitBytes: 1024,
      }),
    )
    .use(authPlugin(verifier))
    .get('/me', ({ identity }) => ({ userId: identity.userId }), { auth: true })
  const get = (token: string) =>
    app.handle(new Request('http://localhost/me', { headers: { authorization: `Bearer ${token}` } }))

  const userId = Bun.randomUUIDv7()
  const token = await current.sign({ sub: userId })
  expect((await verifier.verify(token)).userId).toBe(userId)

  // auth goes away for longer than the cache age: the cached keys keep verifying.
  server.stop(true)
  await Bun.sleep(250)
  expect((await verifier.verify(token)).userId).toBe(userId)
  await Bun.sleep(150)
  const response = await get(token)
  expect(response.status).toBe(200)
  expect(((await response.json()) as { userId: string }).userId).toBe(userId)
  expect(await failureCount(runtime)).toBeGreaterThanOrEqual(1)

  // A key the cache lacks cannot be checked now: 503 with Retry-After, not a logout.
  const rotatedToken = await rotated.sign({ sub: userId })
  const problem = await rejection(verifier, rotatedToken)
  expect(problem.status).toBe(503)
  expect(Number(problem.headers['retry-after'])).toBeGreaterThanOrEqual(1)
  const answered = await get(rotatedToken)
  expect(answered.status).toBe(503)
  expect(answered.headers.get('retry-after')).toMatch(/^[1-9][0-9]*$/)
  expect(answered.headers.get('content-type')).toContain('application/problem+json')
  expect(((await answered.json()) as Problem).status).toBe(503)

  // auth is back with a rotated key: the unknown kid is fetched and accepted.
  published = { keys: [...rotated.jwks.keys, ...current.jwks.keys] }
  server = jwksServer(port, () => published)
  expect((await verifier.verify(rotatedToken)).userId).toBe(userId)
  expect((await get(rotatedToken)).status).toBe(200)
  // With keys fetchable again, a kid nobody published is an invalid token: 401.
  const stranger = await createTestSigner()
  expect((await rejection(verifier, await stranger.sign({ sub: userId }))).status).toBe(401)
})
