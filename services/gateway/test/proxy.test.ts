import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createTestSigner, createTestVhost, type TestVhost, testRedisPrefix } from '@parley/testkit'
import {
  closedPort,
  metricValue,
  type RecordedRequest,
  rawRequest,
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
let auth: TestUpstream
let users: TestUpstream
let chat: TestUpstream
let notifications: TestUpstream
let token: string
const userId = Bun.randomUUIDv7()
const BODY_LIMIT = 4096

beforeAll(async () => {
  vhost = await createTestVhost()
  signer = await createTestSigner()
  jwks = startJwksServer(signer.jwks)
  auth = startUpstream()
  users = startUpstream()
  notifications = startUpstream()
  // chat: a streaming download, a slow route (timeout), a reset connection and echo.
  chat = startUpstream(async (request) => {
    const path = new URL(request.url).pathname
    if (path === '/conversations/stream') {
      const encoder = new TextEncoder()
      return new Response(
        new ReadableStream({
          async start(controller) {
            for (let index = 0; index < 3; index++) {
              controller.enqueue(encoder.encode(`part-${index}\n`))
              await Bun.sleep(20)
            }
            controller.close()
          },
        }),
        {
          headers: {
            'content-type': 'text/plain',
            connection: 'x-private',
            'x-private': 'secret',
            'keep-alive': 'timeout=5',
          },
        },
      )
    }
    if (path === '/conversations/gzip')
      return new Response(Bun.gzipSync(new TextEncoder().encode('compressed '.repeat(50))), {
        headers: { 'content-type': 'text/plain', 'content-encoding': 'gzip' },
      })
    if (path === '/conversations/slow') {
      await Bun.sleep(1_500)
      return new Response('late')
    }
    if (path === '/conversations/upload') {
      const body = await request.text()
      return Response.json({ received: body.length })
    }
    if (path === '/conversations/created')
      return new Response(null, { status: 201, headers: { location: '/conversations/1' } })
    return new Response('not here', { status: 404 })
  })
  gateway = await startGateway(
    {
      AMQP_URL: vhost.url,
      JWKS_URL: jwks.url,
      AUTH_URL: auth.url,
      USER_URL: users.url,
      CHAT_URL: chat.url,
      NOTIFICATION_URL: notifications.url,
      CHAT_TIMEOUT_MS: '300',
      BODY_LIMIT_BYTES: String(BODY_LIMIT),
      CORS_ORIGINS: 'https://app.example.com, https://admin.example.com',
      HSTS_MAX_AGE: '31536000',
    },
    { redisKeyPrefix: testRedisPrefix() },
  )
  token = await signer.sign({ sub: userId })
})

afterAll(async () => {
  await gateway?.stop()
  await Promise.all([auth, users, chat, notifications].map((upstream) => upstream?.stop()))
  await jwks?.stop()
  await vhost?.drop()
})

const bearer = () => ({ authorization: `Bearer ${token}` })

describe('routing', () => {
  test.each([
    ['/api/v1/users/me?fields=a,b', () => users, '/users/me?fields=a,b'],
    ['/api/v1/users?q=al&limit=5', () => users, '/users?q=al&limit=5'],
    ['/api/v1/notifications/123/read', () => notifications, '/notifications/123/read'],
    ['/api/v1/auth/me', () => auth, '/auth/me'],
  ])('%s goes to the owning service with /api/v1 stripped', async (publicPath, upstream, servicePath) => {
    const response = await fetch(`${gateway.url}${publicPath}`, { headers: bearer() })
    expect(response.status).toBe(200)
    const echoed = (await response.json()) as RecordedRequest
    expect(echoed.path).toBe(servicePath)
    expect(upstream().requests.at(-1)?.path).toBe(servicePath)
  })

  test('an unknown area is a 404 problem and reaches no service', async () => {
    const response = await fetch(`${gateway.url}/api/v1/usersx`, { headers: bearer() })
    expect(response.status).toBe(404)
    expect(response.headers.get('content-type')).toContain('application/problem+json')
  })

  test('request bodies and methods pass through; statuses and headers come back', async () => {
    const response = await fetch(`${gateway.url}/api/v1/users/me`, {
      method: 'PATCH',
      headers: { ...bearer(), 'content-type': 'application/json' },
      body: JSON.stringify({ displayName: 'Ada' }),
    })
    const echoed = (await response.json()) as RecordedRequest
    expect(echoed.method).toBe('PATCH')
    expect(JSON.parse(echoed.body)).toEqual({ displayName: 'Ada' })
    expect(echoed.headers['content-type']).toBe('application/json')

    const created = await fetch(`${gateway.url}/api/v1/conversations/created`, {
      method: 'POST',
      headers: bearer(),
    })
    expect(created.status).toBe(201)
    expect(created.headers.get('location')).toBe('/conversations/1')
  })

  test('HEAD is proxied and answers without a body', async () => {
    const response = await fetch(`${gateway.url}/api/v1/users/me`, { method: 'HEAD', headers: bearer() })
    expect(response.status).toBe(200)
    expect(await response.text()).toBe('')
    expect(users.requests.at(-1)?.method).toBe('HEAD')
  })

  test('a body on a method without body semantics is dropped with its length; the pooled connection stays in step', async () => {
    for (const method of ['DELETE', 'GET'] as const) {
      const { status, text } = await rawRequest(
        gateway.url,
        `${method} /api/v1/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 13`,
        '{"a":"hello"}',
      )
      expect(status).toBe(200)
      const echoed = JSON.parse(text) as RecordedRequest
      expect(echoed.method).toBe(method)
      expect(echoed.body).toBe('')
      expect(echoed.headers['content-length'] ?? '0').toBe('0')
    }
    // The gateway's pooled connections to the service answer the next requests at once.
    const next = await Promise.all(
      Array.from({ length: 4 }, () => fetch(`${gateway.url}/api/v1/users/me`, { headers: bearer() })),
    )
    expect(next.map((response) => response.status)).toEqual([200, 200, 200, 200])
  })

  test('the Authorization header is forwarded (services verify it again)', async () => {
    const response = await fetch(`${gateway.url}/api/v1/users/me`, { headers: bearer() })
    const echoed = (await response.json()) as RecordedRequest
    expect(echoed.headers.authorization).toBe(`Bearer ${token}`)
  })

  test('forwarding headers, request id and a new traceparent span are sent on', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736'
    const response = await fetch(`${gateway.url}/api/v1/users/me`, {
      headers: {
        ...bearer(),
        'x-request-id': 'req-123',
        traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
        'x-forwarded-for': '203.0.113.9',
      },
    })
    expect(response.headers.get('x-request-id')).toBe('req-123')
    const echoed = (await response.json()) as RecordedRequest
    expect(echoed.headers['x-request-id']).toBe('req-123')
    expect(echoed.headers.traceparent).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`))
    expect(echoed.headers.traceparent).not.toContain('00f067aa0ba902b7')
    // No trusted proxy hops: the client's own X-Forwarded-For is discarded.
    expect(echoed.headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(echoed.headers['x-forwarded-proto']).toBe('http')
    expect(echoed.headers['x-forwarded-host']).toBe(new URL(gateway.url).host)
  })

  test('hop-by-hop headers are stripped in both directions', async () => {
    const response = await fetch(`${gateway.url}/api/v1/users/me`, {
      headers: {
        ...bearer(),
        connection: 'keep-alive, x-hop',
        'x-hop': 'listed in Connection',
        'keep-alive': 'timeout=5',
        te: 'trailers',
        'proxy-authorization': 'Basic c2VjcmV0',
        'x-end-to-end': 'kept',
      },
    })
    const echoed = (await response.json()) as RecordedRequest
    expect(echoed.headers['x-hop']).toBeUndefined()
    expect(echoed.headers['keep-alive']).toBeUndefined()
    expect(echoed.headers.te).toBeUndefined()
    expect(echoed.headers['proxy-authorization']).toBeUndefined()
    expect(echoed.headers['x-end-to-end']).toBe('kept')

    const streamed = await fetch(`${gateway.url}/api/v1/conversations/stream`, { headers: bearer() })
    expect(streamed.headers.get('x-private')).toBeNull()
    expect(streamed.headers.get('keep-alive')).toBeNull()
    expect(streamed.headers.get('connection')).not.toBe('x-private')
  })

  test('identity headers from the client never reach a service', async () => {
    const response = await fetch(`${gateway.url}/api/v1/users/me`, {
      headers: {
        ...bearer(),
        'x-user-id': Bun.randomUUIDv7(),
        'x-user-roles': 'admin',
        'x-auth-user': 'mallory',
        'x-identity': 'admin',
        'x-forwarded-user': 'mallory',
        'remote-user': 'mallory',
      },
    })
    const echoed = (await response.json()) as RecordedRequest
    for (const name of [
      'x-user-id',
      'x-user-roles',
      'x-auth-user',
      'x-identity',
      'x-forwarded-user',
      'remote-user',
    ])
      expect(echoed.headers[name]).toBeUndefined()
  })
})

describe('streaming', () => {
  test('a response body streams through chunk by chunk', async () => {
    const response = await fetch(`${gateway.url}/api/v1/conversations/stream`, { headers: bearer() })
    const reader = (response.body as ReadableStream<Uint8Array>).getReader()
    const decoder = new TextDecoder()
    const first = await reader.read()
    // The first chunk arrives before the upstream has finished writing the rest.
    expect(decoder.decode(first.value)).toBe('part-0\n')
    let rest = ''
    for (let next = await reader.read(); !next.done; next = await reader.read())
      rest += decoder.decode(next.value)
    expect(rest).toBe('part-1\npart-2\n')
  })

  test('compressed responses pass through untouched (no double decoding)', async () => {
    const response = await fetch(`${gateway.url}/api/v1/conversations/gzip`, {
      headers: bearer(),
      decompress: false,
    } as RequestInit)
    expect(response.headers.get('content-encoding')).toBe('gzip')
    const raw = new Uint8Array(await response.arrayBuffer())
    expect(new TextDecoder().decode(Bun.gunzipSync(raw))).toBe('compressed '.repeat(50))
  })

  test('a chunked upload within the limit reaches the service whole', async () => {
    const encoder = new TextEncoder()
    const body = new ReadableStream({
      start(controller) {
        controller.enqueue(encoder.encode('a'.repeat(1000)))
        controller.enqueue(encoder.encode('b'.repeat(1000)))
        controller.close()
      },
    })
    const response = await fetch(`${gateway.url}/api/v1/conversations/upload`, {
      method: 'POST',
      headers: bearer(),
      body,
      duplex: 'half',
    } as RequestInit)
    expect(response.status).toBe(200)
    expect(((await response.json()) as { received: number }).received).toBe(2000)
  })
})

describe('body limit', () => {
  test('a declared Content-Length over the limit is a 413 problem', async () => {
    const before = chat.requests.length
    const response = await fetch(`${gateway.url}/api/v1/conversations/upload`, {
      method: 'POST',
      headers: { ...bearer(), 'content-type': 'application/json' },
      body: JSON.stringify({ body: 'x'.repeat(BODY_LIMIT) }),
    })
    expect(response.status).toBe(413)
    expect(response.headers.get('content-type')).toContain('application/problem+json')
    expect(chat.requests.length).toBe(before)
  })

  test('a chunked upload that grows past the limit is a 413 problem', async () => {
    const encoder = new TextEncoder()
    const body = new ReadableStream({
      start(controller) {
        for (let index = 0; index < 5; index++) controller.enqueue(encoder.encode('z'.repeat(1024)))
        controller.close()
      },
    })
    const response = await fetch(`${gateway.url}/api/v1/conversations/upload`, {
      method: 'POST',
      headers: bearer(),
      body,
      duplex: 'half',
      // Bun's fetch would otherwise reuse this connection with the rest of the refused body unsent.
      keepalive: false,
    } as RequestInit)
    expect(response.status).toBe(413)
    expect(((await response.json()) as { type: string }).type).toContain('payload-too-large')
  })
})

describe('upstream failures', () => {
  test('a service that does not answer in time is a 504 problem', async () => {
    const response = await fetch(`${gateway.url}/api/v1/conversations/slow`, { headers: bearer() })
    expect(response.status).toBe(504)
    const problem = (await response.json()) as { status: number; detail: string }
    expect(problem.status).toBe(504)
    expect(problem.detail).toContain('chat')
  })

  test('a service that refuses connections is a 503 problem; a broken one is a 502 problem', async () => {
    const port = await closedPort()
    const reset = Bun.listen({
      hostname: '127.0.0.1',
      port: 0,
      socket: { data: (socket) => void socket.end(), open: () => undefined },
    })
    const broken = await startGateway(
      {
        AMQP_URL: vhost.url,
        JWKS_URL: jwks.url,
        USER_URL: `http://127.0.0.1:${port}`,
        CHAT_URL: `http://127.0.0.1:${reset.port}`,
      },
      { redisKeyPrefix: testRedisPrefix() },
    )
    try {
      const refused = await fetch(`${broken.url}/api/v1/users/me`, { headers: bearer() })
      expect(refused.status).toBe(503)
      expect(refused.headers.get('content-type')).toContain('application/problem+json')
      const failed = await fetch(`${broken.url}/api/v1/conversations`, { headers: bearer() })
      expect(failed.status).toBe(502)
      const metrics = await broken.metrics()
      expect(
        metricValue(metrics, 'upstream_request_duration_seconds_count', { upstream: 'user', status: '503' }),
      ).toBe(1)
      expect(
        metricValue(metrics, 'upstream_request_duration_seconds_count', { upstream: 'chat', status: '502' }),
      ).toBe(1)
    } finally {
      await broken.stop()
      reset.stop(true)
    }
  })
})

describe('edge headers', () => {
  test('security headers are on API responses, HSTS when configured', async () => {
    const response = await fetch(`${gateway.url}/api/v1/users/me`, { headers: bearer() })
    expect(response.headers.get('x-content-type-options')).toBe('nosniff')
    expect(response.headers.get('x-frame-options')).toBe('DENY')
    expect(response.headers.get('referrer-policy')).toBe('no-referrer')
    expect(response.headers.get('content-security-policy')).toContain("frame-ancestors 'none'")
    expect(response.headers.get('strict-transport-security')).toBe('max-age=31536000; includeSubDomains')

    const problem = await fetch(`${gateway.url}/api/v1/users/me`)
    expect(problem.status).toBe(401)
    expect(problem.headers.get('x-content-type-options')).toBe('nosniff')
    expect(problem.headers.get('content-security-policy')).toContain("frame-ancestors 'none'")
  })

  test('a CORS preflight from an allowed origin is answered with the allow headers', async () => {
    const response = await fetch(`${gateway.url}/api/v1/conversations`, {
      method: 'OPTIONS',
      headers: {
        origin: 'https://app.example.com',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization, content-type',
      },
    })
    expect(response.status).toBe(204)
    expect(response.headers.get('access-control-allow-origin')).toBe('https://app.example.com')
    expect(response.headers.get('access-control-allow-methods')).toContain('POST')
    expect(response.headers.get('access-control-allow-headers')).toContain('authorization')
    expect(chat.requests.some((request) => request.method === 'OPTIONS')).toBe(false)
  })

  test('a CORS preflight from another origin gets no allow-origin', async () => {
    const response = await fetch(`${gateway.url}/api/v1/conversations`, {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example.net', 'access-control-request-method': 'POST' },
    })
    expect(response.headers.get('access-control-allow-origin')).toBeNull()
  })

  test('actual requests from an allowed origin expose the rate-limit headers', async () => {
    const response = await fetch(`${gateway.url}/api/v1/users/me`, {
      headers: { ...bearer(), origin: 'https://admin.example.com' },
    })
    expect(response.headers.get('access-control-allow-origin')).toBe('https://admin.example.com')
    expect(response.headers.get('access-control-expose-headers')).toContain('ratelimit')
    expect(response.headers.get('ratelimit')).toMatch(/^"authenticated";r=\d+;t=\d+$/)
  })
})

describe('the proxy fast path and the framework path', () => {
  test('answer alike: edge headers, request ids, problems and the request histogram', async () => {
    const origin = { origin: 'https://app.example.com' }
    const before = await gateway.metrics()
    const proxied = await fetch(`${gateway.url}/api/v1/users/me`, {
      headers: { ...bearer(), ...origin, 'x-request-id': 'fast-path-1' },
    })
    const framework = await fetch(`${gateway.url}/docs/json`, {
      headers: { ...origin, 'x-request-id': 'framework-1' },
    })
    expect(proxied.status).toBe(200)
    expect(framework.status).toBe(200)
    const edge = (response: Response) =>
      Object.fromEntries(
        [...response.headers].filter(
          ([name]) =>
            name.startsWith('access-control-') ||
            [
              'x-content-type-options',
              'x-frame-options',
              'referrer-policy',
              'vary',
              'strict-transport-security',
            ].includes(name),
        ),
      )
    expect(edge(proxied)).toEqual(edge(framework))
    expect(proxied.headers.get('access-control-allow-origin')).toBe('https://app.example.com')
    expect(proxied.headers.get('x-request-id')).toBe('fast-path-1')
    expect(framework.headers.get('x-request-id')).toBe('framework-1')

    // A refusal before routing and a missing upstream are problems like the framework's 404.
    const refused = await fetch(`${gateway.url}/api/v1/users/a%2Fb`, { headers: bearer() })
    expect(refused.status).toBe(400)
    expect(refused.headers.get('content-type')).toBe('application/problem+json')
    expect(((await refused.json()) as { errors: { field: string }[] }).errors[0]?.field).toBe('path')
    const unrouted = await fetch(`${gateway.url}/api/v1/nothing-here`, { headers: bearer() })
    expect(unrouted.status).toBe(404)
    expect(unrouted.headers.get('content-type')).toBe('application/problem+json')
    expect(unrouted.headers.get('x-request-id')).toBeTruthy()

    const after = await gateway.metrics()
    const count = (text: string, labels: Record<string, string>) =>
      metricValue(text, 'http_request_duration_seconds_count', labels)
    for (const labels of [
      { method: 'GET', route: '/api/v1/*', status: '200' },
      { method: 'GET', route: '/api/v1/*', status: '404' },
      { method: 'GET', route: 'unmatched', status: '400' },
      { method: 'GET', route: '/docs/json', status: '200' },
    ])
      expect({ ...labels, added: count(after, labels) - count(before, labels) }).toEqual({
        ...labels,
        added: 1,
      })
  })
})
