import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { Problem } from '@parley/contracts'
import { rawHttp } from '@parley/testkit'
import { Elysia } from 'elysia'
import { httpKit } from '../src/http'
import { canonicalPath } from '../src/paths'
import { createRuntime } from '../src/runtime'

describe('canonicalPath', () => {
  test.each([
    ['/auth/login', '/auth/login'],
    ['/auth/login/', '/auth/login'],
    ['//auth//login//', '/auth/login'],
    ['/auth/logi%6E', '/auth/login'],
    ['/auth/%7Euser%2d1', '/auth/~user-1'],
    ['/reactions/%f0%9f%91%8d', '/reactions/%F0%9F%91%8D'],
    ['/a%20b', '/a%20b'],
    ['/', '/'],
  ])('%s → %s', (input, canonical) => {
    expect(canonicalPath(input)).toEqual({ ok: true, path: canonical })
  })

  test.each([
    ['/auth%2Flogin', 'encoded "/"'],
    ['/auth%2flogin', 'encoded "/"'],
    ['/auth%5Clogin', 'encoded "/" or "\\"'],
    ['/auth/login%00', 'control character'],
    ['/auth/login%0D%0Ax', 'control character'],
    ['/auth/%zz', 'malformed percent escape'],
    ['/auth/login%', 'malformed percent escape'],
    ['/auth/%2E%2E/admin', '"." or ".."'],
    ['/auth/%2E', '"." or ".."'],
  ])('%s is refused', (input, reason) => {
    const check = canonicalPath(input)
    expect(check.ok).toBe(false)
    if (!check.ok) expect(check.reason).toContain(reason)
  })
})

/** A service edge with one route, served by a real listener so paths reach it as written. */
function serviceWith(paths: 'strict' | 'canonicalise') {
  const runtime = createRuntime('paths', 'silent')
  const app = new Elysia()
    .use(
      httpKit({
        service: 'paths',
        logger: runtime.logger,
        metrics: runtime.metrics,
        bodyLimitBytes: 1024,
        paths,
      }),
    )
    .post('/auth/login', () => ({ handled: 'login' }))
    .get('/users/:id', ({ params }) => ({ id: params.id }))
  app.listen({ port: 0, hostname: '127.0.0.1' })
  return { app, runtime, url: `http://127.0.0.1:${app.server?.port}` }
}

describe('services are strict about paths', () => {
  let service: ReturnType<typeof serviceWith>
  beforeAll(() => {
    service = serviceWith('strict')
  })
  afterAll(() => service.app.stop(true))

  test('the canonical spelling is served', async () => {
    const response = await rawHttp(service.url, 'POST', '/auth/login')
    expect(response.status).toBe(200)
    expect(JSON.parse(response.body)).toEqual({ handled: 'login' })
  })

  // Elysia alone serves `/auth/login/` (and resolves `.`/`..`) with the login handler.
  test.each(['/auth/login/', '//auth/login', '/auth//login', '/auth/logi%6E', '/auth/login//'])(
    '%s is not found',
    async (target) => {
      const response = await rawHttp(service.url, 'POST', target)
      expect(response.status).toBe(404)
      expect(response.headers.get('content-type')).toBe('application/problem+json')
      expect(response.headers.get('x-request-id')).toBeTruthy()
    },
  )

  test('refused paths are counted like any other answer', async () => {
    const refused = await service.app.handle(new Request('http://localhost/auth/login/', { method: 'POST' }))
    expect(refused.status).toBe(404)
    const text = await service.runtime.metrics.registry.metrics()
    expect(text).toMatch(/http_request_duration_seconds_count\{[^}]*route="unmatched",status="404"\} [1-9]/)
  })

  test.each(['/users/a%2Fb', '/users/a%5Cb', '/users/%00', '/users/a%0Ab'])(
    '%s has no canonical form: 400 naming the path',
    async (target) => {
      const response = await rawHttp(service.url, 'GET', target)
      expect(response.status).toBe(400)
      const problem = JSON.parse(response.body) as Problem
      expect(problem.errors?.[0]?.field).toBe('path')
    },
  )
})

describe('the gateway canonicalises instead', () => {
  let gateway: ReturnType<typeof serviceWith>
  beforeAll(() => {
    gateway = serviceWith('canonicalise')
  })
  afterAll(() => gateway.app.stop(true))

  test('non-canonical spellings reach routing; paths without a canonical form do not', async () => {
    expect((await rawHttp(gateway.url, 'POST', '/auth/login/')).status).toBe(200)
    expect((await rawHttp(gateway.url, 'GET', '/users/a%2Fb')).status).toBe(400)
  })
})
