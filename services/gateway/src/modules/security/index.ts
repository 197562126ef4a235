import { Elysia } from 'elysia'

export type SecurityOptions = { corsOrigins: string; hstsMaxAge: number }

export const API_CSP = "default-src 'none'; frame-ancestors 'none'"

const CORS_METHODS = 'GET, HEAD, POST, PUT, PATCH, DELETE'
const CORS_ALLOWED_HEADERS = 'authorization, content-type, x-request-id, traceparent'
const CORS_EXPOSED_HEADERS = 'ratelimit, ratelimit-policy, retry-after, x-request-id, location'
const CORS_MAX_AGE_SECONDS = '600'

export function parseOrigins(list: string): string[] {
  return list
    .split(',')
    .map((origin) => origin.trim().replace(/\/$/, ''))
    .filter(Boolean)
}

/** The headers every gateway response carries, by the request's `Origin`. */
export type EdgeHeaders = (origin: string | null) => Readonly<Record<string, string>>

/**
 * Security headers and CORS of every response (the docs page sets its own CSP). An allowed
 * origin (listed as `https://host` or as `host`) is echoed in Access-Control-Allow-Origin; no
 * credentials. Built once: a request only picks one of the prepared sets.
 */
export function edgeHeaders({ corsOrigins, hstsMaxAge }: SecurityOptions): EdgeHeaders {
  const base: Record<string, string> = {
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
    'content-security-policy': API_CSP,
    ...(hstsMaxAge > 0 ? { 'strict-transport-security': `max-age=${hstsMaxAge}; includeSubDomains` } : {}),
    'access-control-allow-methods': CORS_METHODS,
    'access-control-allow-headers': CORS_ALLOWED_HEADERS,
    'access-control-expose-headers': CORS_EXPOSED_HEADERS,
    vary: 'Origin',
  }
  const allowed = new Set(parseOrigins(corsOrigins))
  const byOrigin = new Map<string, Record<string, string>>()
  return (origin) => {
    if (!origin) return base
    let headers = byOrigin.get(origin)
    if (!headers) {
      const host = origin.slice(origin.indexOf('://') + 3)
      if (!allowed.has(origin) && !allowed.has(host)) return base
      headers = { ...base, 'access-control-allow-origin': origin }
      byOrigin.set(origin, headers)
    }
    return headers
  }
}

/** The edge headers on every answer of the app, and CORS preflights (OPTIONS) answered 204. */
export function security(headersFor: EdgeHeaders) {
  return new Elysia({ name: 'gateway.security' }).onRequest(({ request, set }) => {
    const headers = headersFor(request.headers.get('origin'))
    Object.assign(set.headers, headers)
    if (request.method === 'OPTIONS')
      return new Response(null, {
        status: 204,
        headers: { ...headers, 'access-control-max-age': CORS_MAX_AGE_SECONDS },
      })
  })
}
