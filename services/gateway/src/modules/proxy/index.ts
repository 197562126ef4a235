import { bearerToken, canonicalPath, type Metrics, problems, requestContext } from '@parley/common'
import { startClientSpan } from '@parley/common/tracing'
import { Elysia } from 'elysia'
import { type EdgeAuth, routeAccess } from '../edge-auth/service'
import type { RateLimiter } from '../rate-limit/service'
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

/**
 * `/api/v1/<area>/…` → the owning service, with edge authentication and rate limiting.
 * Bodies stream both ways; only bodies a limit counts by are buffered (login: the email;
 * invitations: the invitees), and they are small.
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
        // httpKit has refused paths without a canonical form; this one is routed, limited and forwarded.
        const canonical = canonicalPath(url.pathname)
        const path = canonical.ok ? canonical.path.slice(API_PREFIX.length) : ''
        const upstream = matchUpstream(upstreams, path)
        if (!upstream) throw problems.notFound('No route matches this path')

        const client = clientAddress(
          server?.requestIP(request)?.address ?? '127.0.0.1',
          request.headers.get('x-forwarded-for'),
          trustProxyHops,
        )
        const access = routeAccess(request.method, path)
        let body: ReadableStream<Uint8Array> | Uint8Array | null = request.body
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
          } else limitHeaders = await limiter.enforce([{ policy: access.policy, subject: ip }])
        } else {
          const token = bearerToken(request.headers.get('authorization'))
          ;({ limitHeaders } = await edgeAuth.admit(token, limiter, async (identity) => {
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

        // Content-Length is enforced by httpKit; an undeclared (chunked) length is counted while streaming.
        const limited =
          body instanceof ReadableStream && !request.headers.has('content-length')
            ? limitBody(body, bodyLimitBytes)
            : undefined
        const trusted = trustProxyHops > 0
        // With tracing on, the upstream's server span is a child of this call's client span.
        const upstreamSpan = startClientSpan(`${request.method} ${upstream.name}`, {
          'http.request.method': request.method,
          'server.address': upstream.name,
          'url.path': path,
        })
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
              traceparent: upstreamSpan?.traceparent ?? traceparent,
            }),
            body: limited?.stream ?? body,
            clientSignal: request.signal,
            ...(limited ? { bodyFailure: limited.failure } : {}),
          },
          (status, seconds) => {
            upstreamSeconds.observe({ upstream: upstream.name, status: String(status) }, seconds)
            upstreamSpan?.end(status)
          },
        )
        for (const [name, value] of Object.entries(limitHeaders)) response.headers.set(name, value)
        return response
      },
      { parse: () => UNPARSED, detail: { hide: true } },
    )
  }
  return plugin
}
