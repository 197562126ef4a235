import { openapi } from '@elysiajs/openapi'
import { type AnyElysia, Elysia, ValidationError } from 'elysia'
import {
  HttpProblem,
  PROBLEM_CONTENT_TYPE,
  type ProblemFieldError,
  problemResponse,
  problems,
} from './errors'
import { registerFormats } from './formats'
import { exitOnSignals, type Lifecycle } from './lifecycle'
import type { Logger } from './logger'
import type { Metrics } from './metrics'
import { RequestState, recordRequest, requestStateOf } from './request-context'
import { checkBeforeRouting, logAccess, logFailure, requestIdFor } from './request-edge'
import type { Runtime } from './runtime'
import { activeTraceparent, nameServerSpan, serveTraced, tracingEnabled } from './tracing'

// Now that the openapi plugin has replaced TypeBox's formats with slow ones (see formats.ts).
registerFormats()

export type ReadinessCheck = {
  name: string
  check: () => Promise<unknown>
  /** A non-critical dependency is reported but does not make the pod unready (e.g. the broker, covered by the outbox). */
  critical?: boolean
  timeoutMs?: number
}

export type HttpKitOptions = {
  service: string
  version?: string
  description?: string
  logger: Logger
  metrics: Metrics
  bodyLimitBytes: number
  /**
   * `strict` (services): a path not already canonical (see `canonicalPath`) is 404, so a
   * service serves each route under one spelling only, and a request body must be JSON (415
   * otherwise: every service route takes JSON). `canonicalise` (the gateway): the routes
   * canonicalise themselves; only paths with no canonical form are refused (400), and bodies
   * are forwarded as they are.
   */
  paths?: 'strict' | 'canonicalise'
}

/**
 * A route's `detail` flag for a body that may be left out: the OpenAPI plugin documents every
 * body as required, and the gateway's merged document turns this into `required: false`.
 */
export const OPTIONAL_BODY = 'x-parley-optional-body'

const TRACEPARENT_PATTERN = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/
/** An app's fetch; it answers nothing for a request it upgraded to a WebSocket. */
type AppFetch = (request: Request) => Response | undefined | Promise<Response | undefined>

/** The service port's liveness answer (helm test, image smoke test, dev runner): not API traffic. */
const HEALTH_PATH = '/health'

/** Keeps the caller's trace id and starts a new span id for this hop (W3C trace context). */
export function nextTraceparent(incoming: string | null): string {
  // One random UUID supplies both ids (hex without dashes): this runs on every request.
  const random = crypto.randomUUID().replaceAll('-', '')
  const traceId = incoming && TRACEPARENT_PATTERN.test(incoming) ? incoming.slice(3, 35) : random
  return `00-${traceId}-${random.slice(16)}-01`
}

function withTimeout<T>(promise: Promise<T>, ms: number, name: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${name} did not answer within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

export async function runReadinessChecks(checks: readonly ReadinessCheck[]) {
  const results = await Promise.all(
    checks.map(async ({ name, check, critical = true, timeoutMs = 2000 }) => {
      try {
        await withTimeout(check(), timeoutMs, name)
        return { name, critical, ok: true, detail: 'ok' }
      } catch (error) {
        return { name, critical, ok: false, detail: error instanceof Error ? error.message : String(error) }
      }
    }),
  )
  return {
    ok: results.every((result) => result.ok || !result.critical),
    checks: Object.fromEntries(results.map((result) => [result.name, result.detail])),
  }
}

/**
 * Elysia checks coerced query parameters one by one ("property" errors) without their name;
 * the offending parameter is the one whose raw value is the value that failed.
 */
function propertyField(error: ValidationError, url: URL | undefined): string {
  const found = (error as { value?: unknown }).value
  const names = url
    ? [...url.searchParams].filter(([, raw]) => raw === String(found)).map(([name]) => name)
    : []
  return names.length === 1 ? `query.${names[0]}` : 'query'
}

function fieldErrors(error: ValidationError, url?: URL): ProblemFieldError[] {
  const seen = new Set<string>()
  const errors: ProblemFieldError[] = []
  for (const issue of error.all) {
    const path = 'path' in issue && typeof issue.path === 'string' ? issue.path : ''
    const field =
      error.type === 'property'
        ? propertyField(error, url)
        : [error.type, ...path.split('/').filter(Boolean)].join('.')
    if (seen.has(field)) continue
    seen.add(field)
    const message = 'summary' in issue && issue.summary ? issue.summary : issue.message
    errors.push({ field, message })
  }
  return errors.length > 0 ? errors : [{ field: error.type, message: 'Invalid value' }]
}

/** Converts anything thrown in a handler into the problem every service answers. */
export function toProblem(code: string | number, error: unknown, url?: URL): HttpProblem {
  if (error instanceof HttpProblem) return error
  // Elysia wraps whatever a parser throws (e.g. our 413 for a streamed body) in a ParseError.
  if (code === 'PARSE' && error instanceof Error && error.cause instanceof HttpProblem) return error.cause
  if (error instanceof ValidationError) return problems.validation(fieldErrors(error, url))
  if (code === 'PARSE') return malformedJson()
  if (code === 'NOT_FOUND') return problems.notFound('No route matches this path')
  if (typeof code === 'number' && code >= 400 && code < 500)
    return new HttpProblem(code, 'Request Failed', undefined, 'request-failed')
  return problems.internal()
}

/** A route template as a matcher: `:param` is one segment, `*` the rest of the path. */
function templateMatcher(template: string): RegExp {
  const pattern = template
    .split('/')
    .map((segment) =>
      segment === '*'
        ? '.*'
        : segment.startsWith(':')
          ? '[^/]+'
          : segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'),
    )
    .join('/')
  return new RegExp(`^${pattern}$`)
}

type RouteTable = readonly { readonly method: string; readonly path: string }[]

/**
 * The methods the app serves at `pathname` (its WebSocket routes count as GET, and GET brings
 * HEAD), for the `Allow` of a 405 (`literalOnly`: of the routes without parameters); empty
 * when no route has this path. The matchers are built once per route count,
 * so routes added later are seen and an unmatched request does not recompile them.
 */
function allowedMethods(routes: () => RouteTable): (pathname: string, literalOnly?: boolean) => string[] {
  let compiled:
    | { count: number; matchers: { method: string; literal: boolean; matcher: RegExp }[] }
    | undefined
  return (pathname, literalOnly = false) => {
    const table = routes()
    if (compiled?.count !== table.length)
      compiled = {
        count: table.length,
        matchers: table.map(({ method, path }) => ({
          method: method === 'WS' ? 'GET' : method,
          literal: !/[:*]/.test(path),
          matcher: templateMatcher(path),
        })),
      }
    const methods = new Set<string>()
    for (const { method, literal, matcher } of compiled.matchers)
      if (method !== 'ALL' && (literal || !literalOnly) && matcher.test(pathname)) {
        methods.add(method)
        // Bun's server answers HEAD for every GET route (without the body).
        if (method === 'GET') methods.add('HEAD')
      }
    return [...methods]
  }
}

/**
 * Reads what is left of a request body the app answered without reading (no route, no such
 * method, a route that takes none, a refused path) before the answer goes out: a client that
 * streams its body (the gateway, over pooled keep-alive connections) would otherwise have the
 * rest read as its next request, which Bun answers with an empty 400. Bounded by the listener's
 * maxRequestBodySize; an oversized one is answered 413 and its connection closed instead. Free
 * for requests without a body.
 */
function drainingBodies(handle: AppFetch): AppFetch {
  return (request) => {
    const answer = handle(request)
    if (request.body === null) return answer
    return Promise.resolve(answer).then(async (response) => {
      if (!request.bodyUsed && response?.status !== 413) await request.arrayBuffer().catch(() => undefined)
      return response
    })
  }
}

function malformedJson(): HttpProblem {
  return problems.badRequest('The request body is not valid JSON', [
    { field: 'body', message: 'Malformed body' },
  ])
}

let pluginInstances = 0

/**
 * Everything every service needs at its edge: request id and traceparent, access log,
 * metrics, problem+json errors, body limit, /health and /docs/json. Readiness and /metrics are
 * served by `opsApp` on the ops port only.
 * Route modules see the request's ids and logger through `requestContext`.
 */
export function httpKit(options: HttpKitOptions) {
  const { service, logger, metrics, bodyLimitBytes } = options
  const strictPaths = (options.paths ?? 'strict') === 'strict'
  const duration = metrics.histogram('http_request_duration_seconds', 'HTTP request latency', [
    'method',
    'route',
    'status',
  ])
  const accessLog = logger.isLevelEnabled('info')
  // Decided once: without tracing no request pays for a span.
  const traced = tracingEnabled()

  const kit = new Elysia({ name: 'parley.http', seed: `${service}#${pluginInstances++}` })
  // The app's routes, not only the kit's: Elysia points a used plugin's getGlobalRoutes at its parent's.
  // biome-ignore lint/complexity/useLiteralKeys: getGlobalRoutes is protected; element access reaches it.
  const methodsAt = allowedMethods(() => kit['getGlobalRoutes']())
  // Every request (the ones refused before routing too) runs inside its server span's context.
  // Elysia types a wrap's handler loosely ((...unknown[]) => Function); it is the app's fetch.
  kit.wrap((handle) => {
    const serve = drainingBodies(handle as unknown as AppFetch)
    return traced ? (request: Request) => serveTraced(request, serve) : serve
  })
  return kit
    .use(
      openapi({
        path: '/docs',
        specPath: '/docs/json',
        provider: null,
        // staticFile: the plugin otherwise drops every path with a dot, e.g. /auth/.well-known/jwks.json.
        exclude: { paths: [HEALTH_PATH], staticFile: false },
        documentation: {
          info: {
            title: `Parley ${service}`,
            version: options.version ?? '0.1.0',
            description: options.description ?? '',
          },
          components: {
            securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } },
          },
        },
      }),
    )
    .onRequest(({ request, set }) => {
      const requestId = requestIdFor(request.headers.get('x-request-id'))
      const traceparent =
        (traced && activeTraceparent()) || nextTraceparent(request.headers.get('traceparent'))
      const state = new RequestState(logger, requestId, traceparent)
      recordRequest(request, state)
      set.headers['x-request-id'] = requestId
      const pathname = new URL(request.url).pathname
      // Answered before routing, where onAfterResponse does not run: counted here instead.
      const refuse = (problem: HttpProblem) => {
        const seconds = (performance.now() - state.startedAt) / 1000
        duration.observe(
          { method: request.method, route: 'unmatched', status: String(problem.status) },
          seconds,
        )
        return problemResponse(problem, pathname, { 'x-request-id': requestId })
      }
      const checked = checkBeforeRouting(
        pathname,
        request.headers.get('content-length'),
        bodyLimitBytes,
        strictPaths,
      )
      if (!checked.ok) return refuse(checked.problem)
    })
    .onTransform({ as: 'global' }, ({ body, request, route }) => {
      if (traced) nameServerSpan(request, route)
      // Elysia does not read the body of a GET or HEAD: whatever is sent there is ignored.
      if (request.method === 'GET' || request.method === 'HEAD') return
      if (!request.headers.get('content-type')?.includes('json')) {
        // Elysia would parse a form or text body too and validate whatever it made of it.
        const sent = request.body !== null && request.headers.get('content-length') !== '0'
        if (strictPaths && sent) throw problems.unsupportedMediaType('application/json')
        return
      }
      // For an optional body Elysia swallows a JSON syntax error and hands the route `undefined`.
      if (body === undefined) {
        if (Number(request.headers.get('content-length') ?? 0) > 0) throw malformedJson()
        return
      }
      // Every JSON body of the API is an object; Elysia would coerce `"x"` or `[]` into `{}`
      // for a schema whose fields are all optional.
      if (typeof body !== 'object' || body === null || Array.isArray(body))
        throw problems.validation([{ field: 'body', message: 'Expected a JSON object' }])
    })
    .onError({ as: 'global' }, ({ code, error, request, set }) => {
      const url = new URL(request.url)
      let problem = toProblem(code, error, url)
      // A route that parses JSON whatever the media type (`parse: 'json'`) fails on a form or text body.
      if (code === 'PARSE' && strictPaths && !request.headers.get('content-type')?.includes('json'))
        problem = problems.unsupportedMediaType('application/json')
      // A known path asked with a method it does not have: 405 naming the ones it has. A path
      // with routes of its own (e.g. /conversations/blocks) is theirs even where a parameter
      // route takes the method (PATCH /conversations/:id would only refuse `blocks` as an id),
      // or a wildcard route that finds nothing there (the gateway's proxy: PUT /api/v1/sync).
      const literalRoutesFirst =
        (code === 'VALIDATION' && error instanceof ValidationError && error.type === 'params') ||
        (error instanceof HttpProblem && error.status === 404)
      if (code === 'NOT_FOUND' || literalRoutesFirst) {
        const allowed = methodsAt(url.pathname, literalRoutesFirst)
        if (allowed.length > 0 && !allowed.includes(request.method))
          problem = problems.methodNotAllowed(request.method, allowed)
      }
      // Elysia reports an unmatched route to onAfterResponse with status 200 unless it is set here.
      set.status = problem.status
      const path = url.pathname
      if (problem.status >= 500) {
        const state = requestStateOf(request)
        logFailure(logger, error, { path, requestId: state?.requestId, traceparent: state?.traceparent })
      }
      const requestId =
        typeof set.headers['x-request-id'] === 'string' ? set.headers['x-request-id'] : undefined
      return problemResponse(problem, path, requestId ? { 'x-request-id': requestId } : {})
    })
    .onAfterResponse({ as: 'global' }, ({ request, route, set, responseValue }) => {
      const state = requestStateOf(request)
      if (!state) return
      const status = responseValue instanceof Response ? responseValue.status : Number(set.status ?? 200)
      const seconds = (performance.now() - state.startedAt) / 1000
      const template = route || 'unmatched'
      if (template !== HEALTH_PATH) {
        duration.observe({ method: request.method, route: template, status: String(status) }, seconds)
        if (!accessLog) return
        logAccess(logger, {
          requestId: state.requestId,
          traceparent: state.traceparent,
          method: request.method,
          path: new URL(request.url).pathname,
          route: template,
          status,
          ms: Math.round(seconds * 1000),
        })
      }
    })
    .get(HEALTH_PATH, () => ({ status: 'ok', service }), { detail: { hide: true } })
}

/**
 * The app of the ops port (OPS_PORT) of every service: liveness, readiness with each dependency's
 * detail, and Prometheus metrics, for the kubelet, Prometheus and `<binary> healthcheck`. Kept off
 * the service port so that API clients (and, for internal services, the gateway's proxy) never see
 * dependency errors or metrics. Its requests are not API traffic: no access log, no histogram.
 */
export function opsApp(runtime: Runtime, readiness: readonly ReadinessCheck[] = []) {
  const { service, metrics, lifecycle } = runtime
  return new Elysia()
    .onError(({ code, error, request }) => {
      const url = new URL(request.url)
      return problemResponse(toProblem(code, error, url), url.pathname)
    })
    .get('/health', () => ({ status: 'ok', service }))
    .get('/ready', async ({ set }) => {
      if (!lifecycle.ready) {
        set.status = 503
        return { status: 'unready', reason: lifecycle.shuttingDown ? 'shutting down' : 'starting' }
      }
      const result = await runReadinessChecks(readiness)
      set.status = result.ok ? 200 : 503
      return { status: result.ok ? 'ready' : 'unready', checks: result.checks }
    })
    .get(
      '/metrics',
      async () =>
        new Response(await metrics.registry.metrics(), {
          headers: { 'content-type': metrics.registry.contentType },
        }),
    )
}

export type OpsApp = ReturnType<typeof opsApp>

export { PROBLEM_CONTENT_TYPE }

export type ListenOptions = {
  /** Service port and ops port; 0 takes a free one (tests). */
  port: number
  opsPort: number
  host: string
  bodyLimitBytes: number
  lifecycle: Lifecycle
}

export type ServeOptions = ListenOptions & { graceMs: number; delayMs: number; logger: Logger }

/** The ports actually bound. */
export type Listening = { port: number; opsPort: number }

/**
 * Stops accepting connections and resolves once in-flight HTTP requests are done. Bun 1.3.14's
 * `server.stop()` never resolves once any WebSocket was closed by the server (its WebSocket
 * count is not decremented, oven-sh/bun#36223), so the pending-request count is watched too.
 * WebSocket servers close their sockets in their own drain step.
 */
export async function stopListening(server: NonNullable<AnyElysia['server']>, force = false): Promise<void> {
  let stopped = false
  const stopping = server.stop(force).finally(() => {
    stopped = true
  })
  while (!stopped && server.pendingRequests > 0) await Promise.race([stopping, Bun.sleep(10)])
}

/**
 * Listens on the ops port, then the service port. On shutdown the service listener drains with
 * the consumers; the ops listener stops last, after the clients closed, so /ready answers 503
 * (and /metrics stays scrapable) for the whole drain.
 */
export function listen(app: AnyElysia, ops: AnyElysia, options: ListenOptions): Listening {
  const { lifecycle } = options
  // The ops routes take no body.
  ops.listen({ port: options.opsPort, hostname: options.host, maxRequestBodySize: 1024 })
  // Declared lengths over the limit get httpKit's problem+json 413, and Bun refuses declared
  // lengths beyond twice the limit outright. Undeclared (chunked) bodies are counted by the
  // gateway while it streams them; a global parse hook could count them here too, but it
  // hides every request body from the generated OpenAPI document.
  app.listen({ port: options.port, hostname: options.host, maxRequestBodySize: options.bodyLimitBytes * 2 })
  lifecycle.onDrain('http', () => (app.server ? stopListening(app.server) : undefined))
  lifecycle.onFinal('ops', () => (ops.server ? stopListening(ops.server) : undefined))
  return { port: app.server?.port ?? options.port, opsPort: ops.server?.port ?? options.opsPort }
}

/** Listens (see `listen`), marks the process ready and wires SIGTERM to a graceful drain. */
export function serve(app: AnyElysia, ops: AnyElysia, options: ServeOptions): Listening {
  const { lifecycle, logger } = options
  const listening = listen(app, ops, options)
  lifecycle.markReady()
  exitOnSignals(lifecycle, logger, { graceMs: options.graceMs, delayMs: options.delayMs })
  logger.info(
    {
      url: `http://${options.host}:${listening.port}`,
      opsUrl: `http://${options.host}:${listening.opsPort}`,
    },
    'listening',
  )
  return listening
}
