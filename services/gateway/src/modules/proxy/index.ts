import { bearerToken, type Metrics, problems, requestContext } from '@parley/common'
import { Elysia } from 'elysia'
import { type EdgeAuth, routeAccess } from '../edge-auth/service'
import { type RateLimitDecision, type RateLimiter, rateLimitHeaders } from '../rate-limit/service'
import {
  API_PREFIX,
  clientAddress,
  forward,
  limitBody,
  matchUpstream,
  readBody,
  type Upstream,
  upstreamRequestHeaders,
} from './service'

export type ProxyOptions = {
  upstreams: readonly Upstream[]
  edgeAuth: EdgeAuth
  limiter: RateLimiter
  metrics: Metrics
  trustProxyHops: number
  bodyLimitBytes: number
}

const PROXIED_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'] as const

/**
 * Returned by the route's parser so Elysia's default parsers leave the body stream alone.
 * An object, because global hooks that inspect `body` (httpKit refuses non-object JSON) see it.
 */
const UNPARSED = Object.freeze({})

/** The login rate limit counts per IP + email; the address is hashed so no email lands in Redis keys. */
function emailSubject(body: Uint8Array): string {
  let email = ''
  try {
    const parsed: unknown = JSON.parse(new TextDecoder().decode(body))
    if (parsed && typeof parsed === 'object' && 'email' in parsed && typeof parsed.email === 'string')
      email = parsed.email.trim().toLowerCase()
  } catch {
    // Malformed JSON: the auth service answers it; it is still counted against the IP.
  }
  return new Bun.CryptoHasher('sha256').update(email).digest('hex').slice(0, 32)
}

/**
 * `/api/v1/<area>/…` → the owning service, with edge authentication and rate limiting.
 * Bodies stream both ways; only the login body is buffered (it is small and carries the email).
 */
export function proxyRoutes(options: ProxyOptions) {
  const { upstreams, edgeAuth, limiter, trustProxyHops, bodyLimitBytes } = options
  const upstreamSeconds = options.metrics.histogram(
    'upstream_request_duration_seconds',
    'Time until the upstream answered with headers, by upstream and status',
    ['upstream', 'status'],
  )

  const plugin = new Elysia({ name: 'gateway.proxy' }).use(requestContext)
  for (const method of PROXIED_METHODS) {
    plugin.route(
      method,
      `${API_PREFIX}/*`,
      async ({ request, server, requestId, traceparent }) => {
        const url = new URL(request.url)
        const path = url.pathname.slice(API_PREFIX.length)
        const upstream = matchUpstream(upstreams, path)
        if (!upstream) throw problems.notFound('No route matches this path')

        const client = clientAddress(
          server?.requestIP(request)?.address ?? '127.0.0.1',
          request.headers.get('x-forwarded-for'),
          trustProxyHops,
        )
        const access = routeAccess(request.method, path)
        let body: ReadableStream<Uint8Array> | Uint8Array | null = request.body
        let decision: RateLimitDecision
        if (access.anonymous) {
          let subject = `ip:${client.ip}`
          if (access.keyedByEmail) {
            body = await readBody(request.body, bodyLimitBytes)
            subject += `:email:${emailSubject(body)}`
          }
          decision = await limiter.consume(access.policy, subject)
        } else {
          const token = bearerToken(request.headers.get('authorization'))
          if (!token) throw problems.unauthorized()
          const identity = await edgeAuth.identify(token)
          // Both are Redis round trips: overlap them (a revoked caller's request is counted, harmlessly).
          ;[, decision] = await Promise.all([
            edgeAuth.assertNotRevoked(identity),
            limiter.consume(access.policy, `user:${identity.userId}`),
          ])
        }
        const limitHeaders = rateLimitHeaders(decision)
        if (!decision.allowed) throw problems.tooManyRequests(decision.retryAfterSeconds, limitHeaders)

        // Content-Length is enforced by httpKit; an undeclared (chunked) length is counted while streaming.
        const limited =
          body instanceof ReadableStream && !request.headers.has('content-length')
            ? limitBody(body, bodyLimitBytes)
            : undefined
        const trusted = trustProxyHops > 0
        const response = await forward(
          upstream,
          {
            method: request.method,
            pathAndQuery: `${path}${url.search}`,
            headers: upstreamRequestHeaders(request.headers, {
              client,
              proto: (trusted && request.headers.get('x-forwarded-proto')) || url.protocol.replace(/:$/, ''),
              host: (trusted && request.headers.get('x-forwarded-host')) || url.host,
              requestId,
              traceparent,
            }),
            body: limited?.stream ?? body,
            clientSignal: request.signal,
            ...(limited ? { bodyFailure: limited.failure } : {}),
          },
          (status, seconds) =>
            upstreamSeconds.observe({ upstream: upstream.name, status: String(status) }, seconds),
        )
        for (const [name, value] of Object.entries(limitHeaders)) response.headers.set(name, value)
        return response
      },
      { parse: () => UNPARSED, detail: { hide: true } },
    )
  }
  return plugin
}
