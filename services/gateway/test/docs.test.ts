import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createRuntime, httpKit, OPTIONAL_BODY } from '@parley/common'
import { Problem } from '@parley/contracts'
import {
  createTestSigner,
  createTestVhost,
  type TestVhost,
  testLogger,
  testRedisPrefix,
} from '@parley/testkit'
import { Elysia, t } from 'elysia'
import { DOCS_ASSETS_PATH } from '../src/modules/docs'
import type { OpenApiDocument } from '../src/modules/docs/service'

type Json = { content?: Record<string, unknown> }

import { startGateway, startJwksServer, startUpstream, type TestGateway, type TestUpstream } from './harness'

/** A service built like the real ones (httpKit's OpenAPI document), listening on a free port. */
function startUserService() {
  const runtime = createRuntime('user', 'silent', testLogger('user'))
  const app = new Elysia()
    .use(
      httpKit({
        service: 'user',
        logger: runtime.logger,
        metrics: runtime.metrics,
        bodyLimitBytes: 1024,
      }),
    )
    .get('/users/me', () => ({ id: '1' }), { detail: { summary: 'The caller' } })
    .patch('/users/me', ({ body }) => body, {
      body: t.Object({ displayName: t.String() }),
      response: { 200: t.Object({ displayName: t.String() }), 422: Problem },
    })
    .get('/users', () => [], {
      query: t.Object({
        limit: t.Optional(t.Integer({ minimum: 1, maximum: 100, description: 'At most this many users' })),
      }),
    })
    .post('/users/me/forget', ({ body }) => body ?? {}, {
      body: t.Optional(t.Object({ everything: t.Boolean() })),
      detail: { [OPTIONAL_BODY]: true },
    })
    .get('/users/:id', ({ params }) => ({ id: params.id }), {
      params: t.Object({ id: t.String() }),
      response: { 200: t.Object({ id: t.String() }), 404: Problem },
    })
    .delete(
      '/users/me/avatar',
      ({ set }) => {
        set.status = 204
      },
      { response: { 204: t.Void(), 404: Problem } },
    )
    .listen({ hostname: '127.0.0.1', port: 0 })
  return { url: `http://127.0.0.1:${app.server?.port}`, stop: () => app.stop(true) }
}

/** A hand-written spec whose `Profile` schema collides with another service's. */
function specServer(paths: string[], profile: object) {
  let spec: OpenApiDocument = {
    openapi: '3.0.3',
    info: { title: 'x', version: '1' },
    paths: Object.fromEntries(
      paths.map((path) => [
        path,
        {
          get: {
            responses: {
              '200': {
                content: { 'application/json': { schema: { $ref: '#/components/schemas/Profile' } } },
              },
            },
          },
        },
      ]),
    ),
    components: { schemas: { Profile: profile } },
  }
  const upstream = startUpstream((request) =>
    new URL(request.url).pathname === '/docs/json'
      ? Response.json(spec)
      : new Response(null, { status: 404 }),
  )
  return {
    ...upstream,
    setSpec: (next: OpenApiDocument) => {
      spec = next
    },
  }
}

let vhost: TestVhost
let signer: Awaited<ReturnType<typeof createTestSigner>>
let jwks: ReturnType<typeof startJwksServer>
let users: ReturnType<typeof startUserService>
let chat: ReturnType<typeof specServer>
let notification: ReturnType<typeof specServer>
let auth: TestUpstream
let gateway: TestGateway

beforeAll(async () => {
  vhost = await createTestVhost()
  signer = await createTestSigner()
  jwks = startJwksServer(signer.jwks)
  users = startUserService()
  chat = specServer(['/conversations', '/conversations/{id}'], {
    type: 'object',
    properties: { a: { type: 'string' } },
  })
  notification = specServer(['/notifications'], { type: 'object', properties: { b: { type: 'number' } } })
  auth = startUpstream((request) =>
    new URL(request.url).pathname === '/docs/json'
      ? new Response('broken', { status: 500 })
      : new Response(null),
  )
  gateway = await startGateway(
    {
      AMQP_URL: vhost.url,
      JWKS_URL: jwks.url,
      AUTH_URL: auth.url,
      USER_URL: users.url,
      CHAT_URL: chat.url,
      NOTIFICATION_URL: notification.url,
    },
    { redisKeyPrefix: testRedisPrefix() },
  )
})

afterAll(async () => {
  await gateway?.stop()
  await Promise.all([users?.stop(), chat?.stop(), notification?.stop(), auth?.stop(), jwks?.stop()])
  await vhost?.drop()
})

async function mergedSpec(): Promise<OpenApiDocument> {
  const response = await fetch(`${gateway.url}/docs/json`)
  expect(response.status).toBe(200)
  return (await response.json()) as OpenApiDocument
}

describe('merged OpenAPI document', () => {
  test('has every service path under /api/v1, tagged by service, plus the WebSocket', async () => {
    const spec = await mergedSpec()
    const paths = Object.keys(spec.paths ?? {})
    expect(paths).toEqual(
      expect.arrayContaining([
        '/api/v1/users/me',
        '/api/v1/users/{id}',
        '/api/v1/conversations',
        '/api/v1/conversations/{id}',
        '/api/v1/notifications',
        '/api/v1/ws',
      ]),
    )
    expect(paths.some((path) => !path.startsWith('/api/v1/'))).toBe(false)
    expect(paths.some((path) => /\/(health|ready|metrics|docs)/.test(path))).toBe(false)
    const tagsOf = (path: string) => (spec.paths?.[path]?.get as { tags?: string[] } | undefined)?.tags
    expect(tagsOf('/api/v1/users/me')).toEqual(['user'])
    expect(tagsOf('/api/v1/conversations')).toEqual(['chat'])
    const responses = spec.paths?.['/api/v1/users/{id}']?.get as { responses: Record<string, Json> }
    expect(Object.keys(responses.responses)).toEqual(expect.arrayContaining(['200', '404', '429']))
    // Documented as served: problems as application/problem+json, a 204 without content.
    expect(Object.keys(responses.responses['200']?.content ?? {})).toEqual(['application/json'])
    expect(Object.keys(responses.responses['404']?.content ?? {})).toEqual(['application/problem+json'])
    const removed = spec.paths?.['/api/v1/users/me/avatar']?.delete as { responses: Record<string, Json> }
    expect(removed.responses['204']).toBeDefined()
    expect(removed.responses['204']?.content).toBeUndefined()
    const ws = spec.paths?.['/api/v1/ws']?.get as {
      responses: Record<string, { content?: Record<string, { schema?: { $id?: string } }> }>
    }
    for (const status of ['401', '429'])
      expect(ws.responses[status]?.content?.['application/json']?.schema?.$id).toBe(Problem.$id)
    expect(spec.info?.title).toBe('Parley API')
    expect(spec.components?.securitySchemes?.bearer).toBeDefined()
  })

  test('operations document the edge answers, JSON bodies only, no coercion branches, optional bodies, described parameters', async () => {
    const spec = await mergedSpec()
    type Operation = {
      requestBody?: { required?: boolean; content?: Record<string, unknown> }
      parameters?: { name: string; description?: string; schema: Record<string, unknown> }[]
      responses: Record<string, Json>
    } & Record<string, unknown>
    const patch = spec.paths?.['/api/v1/users/me']?.patch as Operation
    expect(Object.keys(patch.requestBody?.content ?? {})).toEqual(['application/json'])
    for (const status of ['400', '413', '415', '422', '429', '502', '503', '504'])
      expect(Object.keys(patch.responses[status]?.content ?? {})).toEqual(['application/problem+json'])
    // No body, no 413 or 415.
    const read = spec.paths?.['/api/v1/users/me']?.get as Operation
    expect(Object.keys(read.responses)).toEqual(expect.arrayContaining(['400', '429', '502', '503', '504']))
    expect(read.responses['415']).toBeUndefined()
    // Elysia's `anyOf: [{type: string, format: integer}, integer]` for a query number is the integer.
    const list = spec.paths?.['/api/v1/users']?.get as Operation
    const limitParameter = list.parameters?.find((parameter) => parameter.name === 'limit')
    const limit = limitParameter?.schema
    expect(limit).toMatchObject({ type: 'integer', minimum: 1, maximum: 100 })
    // Its text where Swagger UI and client generators read it.
    expect(limitParameter?.description).toBe('At most this many users')
    expect(limit?.anyOf).toBeUndefined()
    expect(JSON.stringify(spec)).not.toContain('"format":"integer"')
    const forget = spec.paths?.['/api/v1/users/me/forget']?.post as Operation
    expect(forget.requestBody?.required).toBe(false)
    expect(forget[OPTIONAL_BODY]).toBeUndefined()
    expect(patch.requestBody?.required).toBe(true)
  })

  test('a method a path does not have answers 405 with Allow, through the gateway', async () => {
    const token = await signer.sign({ sub: crypto.randomUUID() })
    for (const method of ['PUT', 'DELETE']) {
      const response = await fetch(`${gateway.url}/api/v1/users/me`, {
        method,
        headers: { authorization: `Bearer ${token}` },
      })
      expect(response.status).toBe(405)
      expect(response.headers.get('allow')).toBe('GET, HEAD, PATCH')
      expect(response.headers.get('content-type')).toBe('application/problem+json')
    }
    // The gateway's own routes under the proxied prefix are theirs, not the proxy's.
    for (const [path, allow] of [
      ['/api/v1/sync', 'GET, HEAD'],
      ['/api/v1/ws', 'GET, HEAD'],
    ] as const) {
      const response = await fetch(`${gateway.url}${path}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${token}` },
      })
      expect(response.status).toBe(405)
      expect(response.headers.get('allow')).toBe(allow)
    }
    // A method the gateway does not proxy at all: its own 405, the proxied methods in Allow.
    for (const method of ['TRACE', 'QUERY']) {
      const response = await fetch(`${gateway.url}/api/v1/users/me`, {
        method,
        headers: { authorization: `Bearer ${token}` },
      })
      expect(response.status).toBe(405)
      expect(response.headers.get('allow')?.split(', ').sort()).toEqual([
        'DELETE',
        'GET',
        'HEAD',
        'PATCH',
        'POST',
        'PUT',
      ])
    }
  })

  test('colliding component names are kept apart and references follow', async () => {
    const spec = await mergedSpec()
    const schemas = spec.components?.schemas ?? {}
    expect(schemas.Profile).toEqual({ type: 'object', properties: { a: { type: 'string' } } })
    expect(schemas['notification.Profile']).toEqual({ type: 'object', properties: { b: { type: 'number' } } })
    expect(JSON.stringify(spec.paths?.['/api/v1/notifications'])).toContain(
      '#/components/schemas/notification.Profile',
    )
    expect(JSON.stringify(spec.paths?.['/api/v1/conversations'])).toContain('"#/components/schemas/Profile"')
  })

  test('refreshes from the services; a service that is down keeps its last known spec', async () => {
    chat.setSpec({
      openapi: '3.0.3',
      info: { title: 'chat', version: '2' },
      paths: { '/conversations/{id}/messages': { post: { responses: { '201': { description: 'sent' } } } } },
    })
    await notification.stop()
    await gateway.deps.docs.refresh()
    const paths = Object.keys((await mergedSpec()).paths ?? {})
    expect(paths).toContain('/api/v1/conversations/{id}/messages')
    expect(paths).not.toContain('/api/v1/conversations')
    expect(paths).toContain('/api/v1/notifications')
  })
})

describe('Swagger UI', () => {
  test('/docs serves the UI from the gateway itself, with a CSP that allows only this origin', async () => {
    const response = await fetch(`${gateway.url}/docs`)
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toContain('text/html')
    const html = await response.text()
    expect(html).not.toContain('https://')
    const assets = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((match) => match[1] as string)
    expect(assets).toEqual([
      `${DOCS_ASSETS_PATH}/favicon-32x32.png`,
      `${DOCS_ASSETS_PATH}/swagger-ui.css`,
      `${DOCS_ASSETS_PATH}/swagger-ui-bundle.js`,
      `${DOCS_ASSETS_PATH}/init.js`,
    ])
    expect(html).not.toMatch(/<script>/)
    const csp = response.headers.get('content-security-policy') ?? ''
    expect(csp).toContain("default-src 'none'")
    expect(csp).toContain("script-src 'self';")
    expect(csp).toContain("style-src 'self';")
    expect(csp).toContain("frame-ancestors 'none'")
    expect(response.headers.get('x-content-type-options')).toBe('nosniff')

    const types = await Promise.all(
      assets.map(async (asset) => {
        const served = await fetch(`${gateway.url}${asset}`)
        expect(served.status).toBe(200)
        expect(served.headers.get('cache-control')).toContain('immutable')
        expect((await served.arrayBuffer()).byteLength).toBeGreaterThan(0)
        return served.headers.get('content-type')?.split(';')[0]
      }),
    )
    expect(types).toEqual(['image/png', 'text/css', 'text/javascript', 'text/javascript'])
    const init = await (await fetch(`${gateway.url}${DOCS_ASSETS_PATH}/init.js`)).text()
    expect(init).toContain("url: '/docs/json'")
    const missing = await fetch(`${gateway.url}${DOCS_ASSETS_PATH}/index.html`)
    expect(missing.status).toBe(404)
    expect(missing.headers.get('content-type')).toBe('application/problem+json')
  })
})
