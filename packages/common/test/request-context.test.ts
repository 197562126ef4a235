import { describe, expect, expectTypeOf, test } from 'bun:test'
import { waitFor } from '@parley/testkit'
import { Elysia } from 'elysia'
import { httpKit } from '../src/http'
import { createLogger } from '../src/logger'
import { type RequestLogger, requestContext } from '../src/request-context'
import { createRuntime } from '../src/runtime'

type LogLine = Record<string, unknown>

/** An app wired like a service: httpKit, then route modules that each use requestContext. */
function buildApp() {
  const lines: LogLine[] = []
  const logger = createLogger('kit', 'info', { write: (line: string) => lines.push(JSON.parse(line)) })
  let children = 0
  const child = logger.child.bind(logger)
  logger.child = ((...args: Parameters<typeof child>) => {
    children++
    return child(...args)
  }) as typeof logger.child
  const runtime = createRuntime('kit', 'info', logger)

  // Uses requestContext itself and through a sub-plugin: the name dedupes, the derive stays.
  const nested = new Elysia({ name: 'test.nested' })
    .use(requestContext)
    .get('/nested', ({ requestId }) => ({ requestId }))
  const widgets = new Elysia({ name: 'test.widgets', prefix: '/widgets' })
    .use(requestContext)
    .use(nested)
    .get('/:id', ({ params, requestId, traceparent, log }) => {
      log.info({ widgetId: params.id }, 'widget read')
      log.debug('below the level: no line, no child logger')
      return { requestId, traceparent }
    })
    .get('/quiet', ({ requestId, log }) => {
      log.debug('below the level')
      return { requestId }
    })
  const gadgets = new Elysia({ name: 'test.gadgets' })
    .use(requestContext)
    .get('/gadgets', ({ requestId, traceparent }) => ({ requestId, traceparent }))
    .get('/gadgets/broken', ({ log }) => {
      log.warn('about to fail')
      throw new Error('broken gadget')
    })

  const app = new Elysia()
    .use(
      httpKit({
        service: 'kit',
        logger: runtime.logger,
        metrics: runtime.metrics,
        bodyLimitBytes: 1024,
      }),
    )
    .use(widgets)
    .use(gadgets)
  return { app, lines, childLoggers: () => children }
}

type Seen = { requestId: string; traceparent?: string }

async function call(
  app: ReturnType<typeof buildApp>['app'],
  path: string,
  headers: Record<string, string> = {},
) {
  const response = await app.handle(new Request(`http://localhost${path}`, { headers }))
  return { response, seen: (await response.json()) as Seen }
}

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736'
const INCOMING_TRACEPARENT = `00-${TRACE_ID}-00f067aa0ba902b7-01`

describe('requestContext', () => {
  test("a module's handler sees the request id the response carries", async () => {
    const { app } = buildApp()
    for (const path of ['/widgets/a', '/widgets/nested', '/gadgets']) {
      const { response, seen } = await call(app, path)
      expect(response.status).toBe(200)
      expect(seen.requestId).toMatch(/^[0-9a-f-]{36}$/)
      expect(response.headers.get('x-request-id')).toBe(seen.requestId)
    }
  })

  test('a valid incoming x-request-id and traceparent are continued, an invalid id is replaced', async () => {
    const { app } = buildApp()
    const { response, seen } = await call(app, '/gadgets', {
      'x-request-id': 'abc-123',
      traceparent: INCOMING_TRACEPARENT,
    })
    expect(seen.requestId).toBe('abc-123')
    expect(response.headers.get('x-request-id')).toBe('abc-123')
    expect(seen.traceparent).toMatch(new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-01$`))
    expect(seen.traceparent).not.toBe(INCOMING_TRACEPARENT)

    const replaced = await call(app, '/gadgets', { 'x-request-id': 'bad id\n' })
    expect(replaced.seen.requestId).toMatch(/^[0-9a-f-]{36}$/)
    expect(replaced.response.headers.get('x-request-id')).toBe(replaced.seen.requestId)
  })

  test('log writes lines bound to the request, like the access log line', async () => {
    const { app, lines, childLoggers } = buildApp()
    const { seen } = await call(app, '/widgets/w1', { traceparent: INCOMING_TRACEPARENT })
    const handlerLines = lines.filter((line) => line.msg === 'widget read')
    expect(handlerLines).toEqual([
      expect.objectContaining({
        level: 'info',
        service: 'kit',
        requestId: seen.requestId,
        traceparent: seen.traceparent,
        widgetId: 'w1',
      }),
    ])
    expect(lines.some((line) => line.msg === 'below the level: no line, no child logger')).toBe(false)
    // httpKit writes the access line after the response is sent.
    const accessLine = await waitFor(
      () => lines.find((line) => line.msg === 'request' && line.path === '/widgets/w1'),
      { timeoutMs: 2000, what: 'the access log line' },
    )
    expect(accessLine).toMatchObject({ requestId: seen.requestId, traceparent: seen.traceparent })
    expect(childLoggers()).toBe(1)
  })

  test('a request that writes no line of its own creates no child logger', async () => {
    const { app, childLoggers } = buildApp()
    await call(app, '/gadgets')
    await call(app, '/widgets/quiet')
    expect(childLoggers()).toBe(0)
  })

  test('a failing handler keeps its lines and its problem tied to the request id', async () => {
    const { app, lines } = buildApp()
    const response = await app.handle(new Request('http://localhost/gadgets/broken'))
    expect(response.status).toBe(500)
    const requestId = response.headers.get('x-request-id')
    expect(requestId).toMatch(/^[0-9a-f-]{36}$/)
    expect(lines.find((line) => line.msg === 'about to fail')).toMatchObject({ level: 'warn', requestId })
    expect(lines.find((line) => line.msg === 'request failed')).toMatchObject({ level: 'error', requestId })
  })

  test("the context is in a module's handler types", () => {
    new Elysia({ name: 'test.types' })
      .use(requestContext)
      .get('/typed', ({ requestId, traceparent, log }) => {
        expectTypeOf(requestId).toEqualTypeOf<string>()
        expectTypeOf(traceparent).toEqualTypeOf<string>()
        expectTypeOf(log).toEqualTypeOf<RequestLogger>()
        return requestId
      })
  })

  test('an app without httpKit fails loudly instead of inventing ids', async () => {
    const bare = new Elysia().use(
      new Elysia({ name: 'test.bare' }).use(requestContext).get('/bare', ({ requestId }) => requestId),
    )
    const response = await bare.handle(new Request('http://localhost/bare'))
    expect(response.status).toBe(500)
  })
})
