import { afterAll, describe, expect, test } from 'bun:test'
import type { Problem } from '@parley/contracts'
import { jsonRequest, waitFor } from '@parley/testkit'
import { Elysia, t } from 'elysia'
import { HttpProblem, problems } from '../src/errors'
import { httpKit, opsApp, type ReadinessCheck, serve } from '../src/http'
import { createLogger } from '../src/logger'
import { createRuntime } from '../src/runtime'

function buildTestApp(readiness: ReadinessCheck[] = []) {
  const runtime = createRuntime('kit', 'silent')
  runtime.lifecycle.markReady()
  const app = new Elysia()
    .use(
      httpKit({
        service: 'kit',
        logger: runtime.logger,
        metrics: runtime.metrics,
        bodyLimitBytes: 1024,
      }),
    )
    .post('/widgets/:id', ({ body, params }) => ({ id: params.id, name: body.name }), {
      body: t.Object({ name: t.String({ minLength: 2 }), count: t.Integer({ minimum: 0 }) }),
      params: t.Object({ id: t.String({ pattern: '^[a-z]+$' }) }),
    })
    .post('/options', ({ body }) => body ?? {}, {
      body: t.Optional(t.Object({ all: t.Optional(t.Boolean()) })),
    })
    .get('/search', ({ query }) => query, {
      query: t.Object({
        limit: t.Optional(t.Integer({ minimum: 1, maximum: 100 })),
        q: t.Optional(t.String()),
      }),
    })
    .get('/widgets/top-10', () => [])
    .get('/crash', () => {
      throw new Error('database password is hunter2')
    })
    .get('/limited', () => {
      throw problems.tooManyRequests(7)
    })
  return { app, ops: opsApp(runtime, readiness), runtime }
}

const PROBLEM = 'application/problem+json'

async function problemOf(response: Response): Promise<Problem> {
  return (await response.json()) as Problem
}

describe('problem+json', () => {
  const { app } = buildTestApp()

  test('validation names every bad field', async () => {
    const response = await app.handle(jsonRequest('POST', '/widgets/Bad1', { name: 'x' }))
    expect(response.status).toBe(422)
    expect(response.headers.get('content-type')).toBe(PROBLEM)
    const body = await problemOf(response)
    expect(body).toMatchObject({
      type: expect.stringContaining('/validation'),
      title: 'Validation Failed',
      status: 422,
    })
    expect(body.instance).toBe('/widgets/Bad1')
    const fields = body.errors?.map((error) => error.field)
    expect(fields).toContain('params.id')
  })

  test('body fields are named', async () => {
    const response = await app.handle(jsonRequest('POST', '/widgets/ok', { name: 'x' }))
    const fields = (await problemOf(response)).errors?.map((error) => error.field).sort()
    expect(fields).toEqual(['body.count', 'body.name'])
  })

  test('coerced query parameters are named', async () => {
    for (const query of ['limit=0', 'limit=abc&q=0']) {
      const response = await app.handle(new Request(`http://localhost/search?${query}`))
      expect(response.status).toBe(422)
      expect((await problemOf(response)).errors?.map((error) => error.field)).toEqual(['query.limit'])
    }
  })

  test('a JSON body that is not an object is refused, even when every field is optional', async () => {
    for (const body of ['"everyone"', '[]', 'null', '42']) {
      const response = await app.handle(jsonRequest('POST', '/options', body))
      expect(response.status).toBe(422)
      expect((await problemOf(response)).errors).toEqual([
        { field: 'body', message: 'Expected a JSON object' },
      ])
    }
    expect((await app.handle(jsonRequest('POST', '/options', {}))).status).toBe(200)
  })

  test('malformed JSON for an optional body is a 400 problem, not an empty body', async () => {
    const response = await app.handle(jsonRequest('POST', '/options', '{"all":'))
    expect(response.status).toBe(400)
  })

  test('malformed JSON is a 400 problem', async () => {
    const response = await app.handle(jsonRequest('POST', '/widgets/ok', '{"name":'))
    expect(response.status).toBe(400)
    expect((await problemOf(response)).errors).toEqual([{ field: 'body', message: 'Malformed body' }])
  })

  test('unknown routes are 404 problems', async () => {
    const response = await app.handle(new Request('http://localhost/nowhere'))
    expect(response.status).toBe(404)
    expect(response.headers.get('content-type')).toBe(PROBLEM)
  })

  test('a known path asked with another method is a 405 problem whose Allow lists its methods', async () => {
    for (const method of ['TRACE', 'DELETE', 'PUT']) {
      const response = await app.handle(new Request('http://localhost/widgets/abc', { method }))
      expect(response.status).toBe(405)
      expect(response.headers.get('allow')).toBe('POST')
      expect(response.headers.get('content-type')).toBe(PROBLEM)
      expect(await problemOf(response)).toMatchObject({ status: 405, title: 'Method Not Allowed' })
    }
    const search = await app.handle(new Request('http://localhost/search', { method: 'POST' }))
    expect(search.status).toBe(405)
    expect(search.headers.get('allow')).toBe('GET, HEAD')
    // A path with a route of its own is not a parameter of another: POST /widgets/:id would refuse `top-10`.
    const featured = await app.handle(jsonRequest('POST', '/widgets/top-10', { name: 'xyz', count: 1 }))
    expect(featured.status).toBe(405)
    expect(featured.headers.get('allow')).toBe('GET, HEAD')
    // Only the template's shape counts: one segment for `:id`, so a deeper path is unknown.
    expect(
      (await app.handle(new Request('http://localhost/widgets/abc/x', { method: 'TRACE' }))).status,
    ).toBe(404)
  })

  test('a body that is not JSON is a 415 problem, even one the route could parse', async () => {
    const form = new FormData()
    form.set('name', 'xyz')
    form.set('count', '1')
    for (const body of [form, new URLSearchParams({ name: 'xyz', count: '1' }), 'name=xyz']) {
      const response = await app.handle(new Request('http://localhost/widgets/abc', { method: 'POST', body }))
      expect(response.status).toBe(415)
      expect(await problemOf(response)).toMatchObject({ status: 415, errors: [{ field: 'body' }] })
    }
    // No body, no media type needed.
    expect((await app.handle(new Request('http://localhost/options', { method: 'POST' }))).status).toBe(200)
  })

  test('unexpected errors are 500 problems without internals', async () => {
    const response = await app.handle(new Request('http://localhost/crash'))
    expect(response.status).toBe(500)
    const text = await response.text()
    expect(text).not.toContain('hunter2')
    expect(JSON.parse(text)).toMatchObject({ status: 500, title: 'Internal Server Error' })
  })

  test('problems carry their headers', async () => {
    const response = await app.handle(new Request('http://localhost/limited'))
    expect(response.status).toBe(429)
    expect(response.headers.get('retry-after')).toBe('7')
  })

  test('HttpProblem serialises to RFC 9457 members only', () => {
    const problem = new HttpProblem(409, 'Conflict', 'taken', 'conflict')
    expect(problem.toJSON('/x')).toEqual({
      type: 'https://parley.dev/problems/conflict',
      title: 'Conflict',
      status: 409,
      detail: 'taken',
      instance: '/x',
    })
  })
})

describe('request context', () => {
  const { app } = buildTestApp()

  test('a valid incoming request id is kept, an invalid one replaced', async () => {
    const kept = await app.handle(
      new Request('http://localhost/health', { headers: { 'x-request-id': 'abc-123' } }),
    )
    expect(kept.headers.get('x-request-id')).toBe('abc-123')
    const replaced = await app.handle(
      new Request('http://localhost/health', { headers: { 'x-request-id': 'bad id\n' } }),
    )
    expect(replaced.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/)
  })
})

describe('health, readiness, metrics, docs', () => {
  test('/health answers while /ready reflects critical dependencies only', async () => {
    const { app, ops } = buildTestApp([
      { name: 'db', check: async () => undefined },
      { name: 'broker', critical: false, check: async () => Promise.reject(new Error('down')) },
    ])
    expect((await app.handle(new Request('http://localhost/health'))).status).toBe(200)
    expect((await ops.handle(new Request('http://localhost/health'))).status).toBe(200)
    const ready = await ops.handle(new Request('http://localhost/ready'))
    expect(ready.status).toBe(200)
    expect(await ready.json()).toEqual({ status: 'ready', checks: { db: 'ok', broker: 'down' } })

    const { ops: failing } = buildTestApp([
      { name: 'db', timeoutMs: 50, check: () => new Promise(() => undefined) },
    ])
    const notReady = await failing.handle(new Request('http://localhost/ready'))
    expect(notReady.status).toBe(503)
    expect(((await notReady.json()) as { checks: Record<string, string> }).checks.db).toContain(
      'did not answer within 50 ms',
    )
  })

  test('/ready is false while shutting down', async () => {
    const { ops, runtime } = buildTestApp()
    await runtime.lifecycle.shutdown()
    expect((await ops.handle(new Request('http://localhost/ready'))).status).toBe(503)
  })

  test('/metrics exposes the request histogram by route template', async () => {
    const { app, ops } = buildTestApp()
    await app.handle(jsonRequest('POST', '/widgets/abc', { name: 'ok', count: 1 }))
    await app.handle(jsonRequest('POST', '/widgets/def', { name: 'x' }))
    await ops.handle(new Request('http://localhost/ready'))
    await Bun.sleep(20)
    const response = await ops.handle(new Request('http://localhost/metrics'))
    expect(response.headers.get('content-type')).toContain('text/plain')
    const text = await response.text()
    expect(text).toContain('# TYPE http_request_duration_seconds histogram')
    expect(text).toMatch(
      /http_request_duration_seconds_count\{[^}]*method="POST"[^}]*route="\/widgets\/:id"[^}]*status="200"[^}]*\} 1/,
    )
    expect(text).toMatch(/http_request_duration_seconds_count\{[^}]*status="422"[^}]*\} 1/)
    expect(text).toContain('process_resident_memory_bytes')
    // The ops port's own requests are not API traffic.
    expect(text).not.toContain('route="/ready"')
    expect(text).not.toContain('route="/metrics"')
  })

  test('/docs/json documents the routes but not the infrastructure endpoints', async () => {
    const { app } = buildTestApp()
    const spec = (await (await app.handle(new Request('http://localhost/docs/json'))).json()) as {
      paths: object
    }
    expect(Object.keys(spec.paths)).toContain('/widgets/{id}')
    expect(Object.keys(spec.paths)).not.toContain('/metrics')
  })
})

describe('over a real listener', () => {
  const { app, ops, runtime } = buildTestApp()
  const log = createLogger('kit', 'silent')
  const { port } = serve(app, ops, {
    port: 0,
    opsPort: 0,
    host: '127.0.0.1',
    bodyLimitBytes: 1024,
    graceMs: 1000,
    delayMs: 0,
    lifecycle: runtime.lifecycle,
    logger: log,
  })
  afterAll(() => runtime.lifecycle.shutdown())

  test('an oversized body gets a 413 problem', async () => {
    const response = await fetch(`http://127.0.0.1:${port}/widgets/abc`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'x'.repeat(1500), count: 1 }),
    })
    expect(response.status).toBe(413)
    expect(response.headers.get('content-type')).toBe(PROBLEM)
  })

  test('a streamed body answered without its route (405, 404) leaves the kept-alive connection usable', async () => {
    const streamed = (text: string) =>
      new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(text))
          controller.close()
        },
      })
    const send = (method: string, path: string) =>
      fetch(`http://127.0.0.1:${port}${path}`, {
        method,
        headers: { 'content-type': 'application/json' },
        body: streamed('{"name":"xyz","count":1}'),
        duplex: 'half',
      } as RequestInit)
    // The gateway streams bodies over pooled connections: unread, their rest was the next request (an empty 400).
    for (const [method, path, status] of [
      ['DELETE', '/widgets/abc', 405],
      ['POST', '/widgets/abc/', 404],
    ] as const) {
      const refused = await send(method, path)
      expect(refused.status).toBe(status)
      await refused.text()
      const next = await send('POST', '/widgets/abc')
      expect(next.status).toBe(200)
      expect(await next.json()).toEqual({ id: 'abc', name: 'xyz' })
    }
  })
})

describe('chunked bodies over a real listener', () => {
  const { app, ops, runtime } = buildTestApp()
  serve(app, ops, {
    port: 0,
    opsPort: 0,
    host: '127.0.0.1',
    bodyLimitBytes: 1024,
    graceMs: 1000,
    delayMs: 0,
    lifecycle: runtime.lifecycle,
    logger: createLogger('kit', 'silent'),
  })
  afterAll(() => runtime.lifecycle.shutdown())

  function chunkedBody(text: string) {
    return new ReadableStream<Uint8Array>({
      start(controller) {
        for (let offset = 0; offset < text.length; offset += 256)
          controller.enqueue(Buffer.from(text.slice(offset, offset + 256)))
        controller.close()
      },
    })
  }

  test('an undeclared body within the limit is parsed and validated', async () => {
    const response = await fetch(`http://127.0.0.1:${app.server?.port}/widgets/abc`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: chunkedBody(JSON.stringify({ name: 'fine', count: 2 })),
    })
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ id: 'abc', name: 'fine' })
  })

  test('request bodies are documented in /docs/json', async () => {
    const spec = (await (await app.handle(new Request('http://localhost/docs/json'))).json()) as {
      paths: Record<string, { post?: { requestBody?: { content?: Record<string, unknown> } } }>
    }
    expect(Object.keys(spec.paths['/widgets/{id}']?.post?.requestBody?.content ?? {})).toContain(
      'application/json',
    )
  })
})

describe('the ops port, over real listeners', () => {
  const { app, ops, runtime } = buildTestApp([
    { name: 'db', check: async () => undefined },
    { name: 'broker', critical: false, check: async () => Promise.reject(new Error('broker refused')) },
  ])
  // A client whose close waits for the test: the shutdown is observed while it is still running.
  const clientClosed = Promise.withResolvers<void>()
  runtime.lifecycle.onClose('client', () => clientClosed.promise)
  const listening = serve(app, ops, {
    port: 0,
    opsPort: 0,
    host: '127.0.0.1',
    bodyLimitBytes: 1024,
    graceMs: 1000,
    delayMs: 0,
    lifecycle: runtime.lifecycle,
    logger: createLogger('kit', 'silent'),
  })
  const service = `http://127.0.0.1:${listening.port}`
  const opsUrl = `http://127.0.0.1:${listening.opsPort}`
  afterAll(() => {
    clientClosed.resolve()
    return runtime.lifecycle.shutdown()
  })

  test('the service port answers /metrics and /ready with a 404 problem, /health with 200', async () => {
    expect(listening.opsPort).not.toBe(listening.port)
    for (const path of ['/metrics', '/ready']) {
      const response = await fetch(`${service}${path}`)
      expect({ path, status: response.status }).toEqual({ path, status: 404 })
      expect(response.headers.get('content-type')).toBe(PROBLEM)
      const text = await response.text()
      expect(text).not.toContain('broker refused')
      expect(text).not.toContain('http_request_duration_seconds')
    }
    expect((await fetch(`${service}/health`)).status).toBe(200)
  })

  test('the ops port answers /health, /ready with the dependency detail and /metrics, 404 elsewhere', async () => {
    expect(await (await fetch(`${opsUrl}/health`)).json()).toEqual({ status: 'ok', service: 'kit' })
    const ready = await fetch(`${opsUrl}/ready`)
    expect(ready.status).toBe(200)
    expect(await ready.json()).toEqual({ status: 'ready', checks: { db: 'ok', broker: 'broker refused' } })
    const metrics = await fetch(`${opsUrl}/metrics`)
    expect(metrics.headers.get('content-type')).toContain('text/plain')
    // The 404s of the service port above are API traffic; nothing of the ops port is.
    const text = await metrics.text()
    expect(text).toMatch(
      /http_request_duration_seconds_count\{[^}]*route="unmatched"[^}]*status="404"[^}]*\} 2/,
    )
    expect(text).not.toMatch(/route="\/(ready|metrics)"/)
    for (const path of ['/widgets/abc', '/docs/json']) {
      const response = await fetch(`${opsUrl}${path}`)
      expect({ path, status: response.status }).toEqual({ path, status: 404 })
      expect(response.headers.get('content-type')).toBe(PROBLEM)
    }
  })

  test('while draining, the service port is closed and the ops port answers /ready 503 until the end', async () => {
    const shutdown = runtime.lifecycle.shutdown()
    // The drain step (service listener) is done once its port refuses connections.
    await waitFor(
      () =>
        // A new connection each time: an idle kept-alive one outlives the listener.
        fetch(`${service}/health`, { keepalive: false }).then(
          () => false,
          () => true,
        ),
      { what: 'the service port to close' },
    )
    const ready = await fetch(`${opsUrl}/ready`)
    expect(ready.status).toBe(503)
    expect(await ready.json()).toEqual({ status: 'unready', reason: 'shutting down' })
    expect((await fetch(`${opsUrl}/metrics`)).status).toBe(200)
    clientClosed.resolve()
    await shutdown
    const afterwards = await fetch(`${opsUrl}/ready`, { keepalive: false }).then(
      (response) => `answered ${response.status}`,
      () => 'refused',
    )
    expect(afterwards).toBe('refused')
  })
})
