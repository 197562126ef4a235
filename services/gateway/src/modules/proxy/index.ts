import {
  bearerToken,
  checkBeforeRouting,
  HttpProblem,
  type Identity,
  type Logger,
  logAccess,
  logFailure,
  type Metrics,
  nextTraceparent,
  problemResponse,
  problems,
  requestIdFor,
} from '@parley/common'
import { activeTraceparent, nameServerSpan, startClientSpan, tracingEnabled } from '@parley/common/tracing'
import { Elysia } from 'elysia'
import { type EdgeAuth, routeAccess } from '../edge-auth/service'
import type { RateLimiter } from '../rate-limit/service'
import type { EdgeHeaders } from '../security'
import {
  API_PREFIX,
  clientAddress,
  forward,
  limitBody,
  matchUpstream,
  readBody,
  toUpstreamHeaders,
  type Upstream,
} from './service'

export type ProxyOptions = {
  upstreams: readonly Upstream[]
  edgeAuth: EdgeAuth
  limiter: RateLimiter
  metrics: Metrics
  logger: Logger
  edgeHeaders: EdgeHeaders
  trustProxyHops: number
  bodyLimitBytes: number
}

/**
 * The methods proxied. Another (TRACE, QUERY…) is answered by the app: a CORS preflight by the
 * security plugin, anything else 405 with these in Allow (httpKit, from proxyRoutes below).
 */
const PROXIED_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'] as const
const PROXIED = new Set<string>(PROXIED_METHODS)
/**
 * The methods whose body streams through to the service (no DELETE route takes one). Any other
 * request's body is read off the client's keep-alive connection here (unread, it would be parsed
 * as the next request) and not forwarded.
 */
const STREAMED_BODY_METHODS = new Set(['POST', 'PUT', 'PATCH'])
/** The route template proxied requests are measured under (one series, whatever the path). */
export const PROXY_ROUTE = `${API_PREFIX}/*`
/** The gateway's own routes under the API prefix: the app serves them. */
const OWN_ROUTES = new Set([`${API_PREFIX}/ws`, `${API_PREFIX}/sync`])

/** The JSON object a small buffered body holds, or undefined (the service answers malformed input). */
function jsonObject(body: Uint8Array): Record<string, unknown> | undefined {
  try {
    const parsed: unknown = JSON.parse(new TextDecoder().decode(body))
    return parsed && typeof parsed === 'object' && !Array.isArray(parsed)
      ? (parsed as Record<string, unknown>)
      : undefined
  } catch {
    return undefined
  }
}

/** Login limits count per email; the address is hashed so no email lands in Redis keys. */
function emailSubject(body: Record<string, unknown> | undefined): string {
  const email = typeof body?.email === 'string' ? body.email.trim().toLowerCase() : ''
  return new Bun.CryptoHasher('sha256').update(email).digest('hex').slice(0, 32)
}

/** Units a per-item charge costs: the length of that body array, at least one. */
function itemCount(body: Record<string, unknown> | undefined, field: string): number {
  const items = body?.[field]
  return Array.isArray(items) ? Math.max(1, items.length) : 1
}

/** Observes a histogram by label values, each combination's child resolved once (no label hashing per request). */
function seriesOf(histogram: ReturnType<Metrics['histogram']>): (labels: string[], seconds: number) => void {
  const children = new Map<string, { observe: (seconds: number) => void }>()
  return (labels, seconds) => {
    const key = labels.join(' ')
    let child = children.get(key)
    if (!child) {
      child = histogram.labels(...labels)
      children.set(key, child)
    }
    child.observe(seconds)
  }
}

/** Returned by the routes' parser so Elysia leaves the body stream alone (an object: hooks inspect it). */
const UNPARSED = Object.freeze({})

/** `request.url` split without a URL object (this runs on every proxied request). */
type UrlParts = { scheme: string; host: string; pathname: string; search: string }

function urlParts(url: string): UrlParts {
  const schemeEnd = url.indexOf('://')
  const pathStart = url.indexOf('/', schemeEnd + 3)
  const queryStart = url.indexOf('?', pathStart)
  return {
    scheme: url.slice(0, schemeEnd),
    host: url.slice(schemeEnd + 3, pathStart),
    pathname: queryStart === -1 ? url.slice(pathStart) : url.slice(pathStart, queryStart),
    search: queryStart === -1 ? '' : url.slice(queryStart),
  }
}

/**
 * `/api/v1/<area>/…` → the owning service, with edge authentication and rate limiting: the
 * gateway's hot path, run as a plain function in front of the framework (app.ts wraps the app's
 * fetch with it) rather than through Elysia's per-request lifecycle. It does what httpKit and the
 * security plugin do for every other route, with the same shared functions: request id and
 * traceparent, the path and body-length checks, problem+json answers, the edge headers, the
 * request histogram and the access log line.
 * Bodies stream both ways; only bodies a limit counts by are buffered (login: the email;
 * invitations: the invitees), and they are small.
 */
export function proxyHandler(options: ProxyOptions) {
  const { upstreams, edgeAuth, limiter, logger, trustProxyHops, bodyLimitBytes, edgeHeaders } = options
  const duration = options.metrics.histogram('http_request_duration_seconds', 'HTTP request latency', [
    'method',
    'route',
    'status',
  ])
  const upstreamSeconds = options.metrics.histogram(
    'upstream_request_duration_seconds',
    'Time until the upstream answered with headers, by upstream and status',
    ['upstream', 'status'],
  )
  const accessLog = logger.isLevelEnabled('info')
  const traced = tracingEnabled()
  const observeRequest = seriesOf(duration)
  const observeUpstream = seriesOf(upstreamSeconds)

  /** Forwards a request whose path passed the checks; throws HttpProblems (401, 404, 429, 502–504…). */
  async function proxied(
    request: Request,
    server: Bun.Server<unknown> | null | undefined,
    url: UrlParts,
    servicePath: string,
    requestId: string,
    traceparent: string,
  ): Promise<Response> {
    const upstream = matchUpstream(upstreams, servicePath)
    if (!upstream) throw problems.notFound('No route matches this path')
    const client = clientAddress(
      server?.requestIP(request)?.address ?? '127.0.0.1',
      request.headers.get('x-forwarded-for'),
      trustProxyHops,
    )
    const access = routeAccess(request.method, servicePath)
    let body: ReadableStream<Uint8Array> | Uint8Array | null = request.body
    if (!STREAMED_BODY_METHODS.has(request.method)) {
      if (body) await readBody(body, bodyLimitBytes)
      body = null
      // Its length goes too (Bun gives a GET no body stream even when one was declared): a
      // Content-Length with no body sent leaves the service waiting for bytes that never come
      // (a 504), and the pooled connection out of step after it.
      request.headers.delete('content-length')
    }
    let limitHeaders: Record<string, string>
    if (access.anonymous) {
      const ip = `ip:${client.ip}`
      if (access.keyedByEmail) {
        body = await readBody(request.body, bodyLimitBytes)
        const email = emailSubject(jsonObject(body))
        limitHeaders = await limiter.enforce([
          { policy: access.policy, subject: `${ip}:email:${email}` },
          { policy: 'loginEmail', subject: `email:${email}` },
        ])
      } else {
        const charges = [{ policy: access.policy, subject: ip }]
        limitHeaders = limiter.enforceNow(charges) ?? (await limiter.enforce(charges))
      }
    } else {
      const token = bearerToken(request.headers.get('authorization'))
      const perUser = (identity: Identity) =>
        access.charges.map((charge) => ({ policy: charge.policy, subject: `user:${identity.userId}` }))
      // Nearly every request: token, revocation state and limits all decided in memory.
      const admitted = access.charges.some((charge) => charge.perItemOf)
        ? undefined
        : edgeAuth.admitNow(token, limiter, perUser)
      if (admitted) limitHeaders = admitted.limitHeaders
      else
        ({ limitHeaders } = await edgeAuth.admit(token, limiter, async (identity) => {
          // Charges per invitee need the (small) body; everything else streams.
          let parsed: Record<string, unknown> | undefined
          if (access.charges.some((charge) => charge.perItemOf)) {
            body = await readBody(request.body, bodyLimitBytes)
            parsed = jsonObject(body)
          }
          return access.charges.map((charge) => ({
            policy: charge.policy,
            subject: `user:${identity.userId}`,
            cost: charge.perItemOf ? itemCount(parsed, charge.perItemOf) : 1,
          }))
        }))
    }

    // Content-Length is checked before routing; an undeclared (chunked) length is counted while streaming.
    const limited =
      body instanceof ReadableStream && !request.headers.has('content-length')
        ? limitBody(body, bodyLimitBytes)
        : undefined
    const trusted = trustProxyHops > 0
    // With tracing on, the upstream's server span is a child of this call's client span.
    const upstreamSpan = startClientSpan(`${request.method} ${upstream.name}`, {
      'http.request.method': request.method,
      'server.address': upstream.name,
      'url.path': servicePath,
    })
    const response = await forward(
      upstream,
      {
        method: request.method,
        pathAndQuery: `${servicePath}${url.search}`,
        headers: toUpstreamHeaders(request.headers, {
          client,
          proto: (trusted && request.headers.get('x-forwarded-proto')) || url.scheme,
          host: (trusted && request.headers.get('x-forwarded-host')) || url.host,
          requestId,
          traceparent: upstreamSpan?.traceparent ?? traceparent,
        }),
        body: limited?.stream ?? body,
        // Only a request with a body can still be sending when its client goes away.
        clientSignal: body ? request.signal : undefined,
        ...(limited ? { bodyFailure: limited.failure } : {}),
      },
      (status, seconds) => {
        observeUpstream([upstream.name, String(status)], seconds)
        upstreamSpan?.end(status)
      },
    )
    for (const name in limitHeaders) response.headers.set(name, limitHeaders[name] as string)
    return response
  }

  async function serve(
    request: Request,
    server: Bun.Server<unknown> | null | undefined,
    url: UrlParts,
  ): Promise<Response> {
    const startedAt = performance.now()
    const requestId = requestIdFor(request.headers.get('x-request-id'))
    const traceparent = (traced && activeTraceparent()) || nextTraceparent(request.headers.get('traceparent'))
    const checked = checkBeforeRouting(
      url.pathname,
      request.headers.get('content-length'),
      bodyLimitBytes,
      false,
    )
    const route = checked.ok ? PROXY_ROUTE : 'unmatched'
    if (traced && checked.ok) nameServerSpan(request, route)
    let response: Response
    try {
      if (!checked.ok) throw checked.problem
      response = await proxied(
        request,
        server,
        url,
        checked.path.slice(API_PREFIX.length),
        requestId,
        traceparent,
      )
    } catch (error) {
      const problem = error instanceof HttpProblem ? error : problems.internal()
      if (problem.status >= 500) logFailure(logger, error, { path: url.pathname, requestId, traceparent })
      response = problemResponse(problem, url.pathname)
    }
    const headers = response.headers
    const edge = edgeHeaders(request.headers.get('origin'))
    for (const name in edge) headers.set(name, edge[name] as string)
    headers.set('x-request-id', requestId)
    const seconds = (performance.now() - startedAt) / 1000
    observeRequest([request.method, route, String(response.status)], seconds)
    if (accessLog)
      logAccess(logger, {
        requestId,
        traceparent,
        method: request.method,
        path: url.pathname,
        route,
        status: response.status,
        ms: Math.round(seconds * 1000),
      })
    return response
  }

  /**
   * Answers a proxied request (everything under the API prefix but the gateway's own routes,
   * in PROXIED_METHODS), never throwing: failures are problem+json answers. Undefined for any
   * other request.
   */
  return (
    request: Request,
    server: Bun.Server<unknown> | null | undefined,
  ): Promise<Response> | undefined => {
    if (!PROXIED.has(request.method)) return undefined
    const url = urlParts(request.url)
    if (!url.pathname.startsWith(`${API_PREFIX}/`) || OWN_ROUTES.has(url.pathname)) return undefined
    // With tracing on, httpKit's wrap (outside this one) already runs it inside its server span.
    return serve(request, server, url)
  }
}

export type ProxyHandler = ReturnType<typeof proxyHandler>

/**
 * The proxied routes in the app's route table, so that a method the proxy does not take gets
 * 405 with their methods in Allow. The wrap in app.ts answers these requests before routing;
 * should one arrive here (a caller of app.handle without the wrap), it is proxied all the same.
 */
export function proxyRoutes(proxy: ProxyHandler) {
  const plugin = new Elysia({ name: 'gateway.proxy' })
  for (const method of PROXIED_METHODS)
    plugin.route(
      method,
      PROXY_ROUTE,
      ({ request, server }) => {
        // The gateway's own paths (a GET of /api/v1/ws that is no upgrade) are no service's.
        const answer = proxy(request, server)
        if (!answer) throw problems.notFound('No route matches this path')
        return answer
      },
      {
        parse: () => UNPARSED,
        detail: { hide: true },
      },
    )
  return plugin
}
