import { cors } from '@elysiajs/cors'
import { Elysia } from 'elysia'

export type SecurityOptions = { corsOrigins: string; hstsMaxAge: number }

export const API_CSP = "default-src 'none'; frame-ancestors 'none'"

export function parseOrigins(list: string): string[] {
  return list
    .split(',')
    .map((origin) => origin.trim().replace(/\/$/, ''))
    .filter(Boolean)
}

/** CORS from the allow-list and the security headers of every response (the docs page sets its own CSP). */
export function security({ corsOrigins, hstsMaxAge }: SecurityOptions) {
  const headers: Record<string, string> = {
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
    'content-security-policy': API_CSP,
    ...(hstsMaxAge > 0 ? { 'strict-transport-security': `max-age=${hstsMaxAge}; includeSubDomains` } : {}),
  }
  return new Elysia({ name: 'gateway.security' })
    .use(
      cors({
        origin: parseOrigins(corsOrigins),
        methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
        allowedHeaders: ['authorization', 'content-type', 'x-request-id', 'traceparent'],
        exposeHeaders: ['ratelimit', 'ratelimit-policy', 'retry-after', 'x-request-id', 'location'],
        credentials: false,
        maxAge: 600,
      }),
    )
    .onRequest(({ set }) => {
      Object.assign(set.headers, headers)
    })
}
