import { httpKit, type ReadinessCheck, type Runtime } from '@parley/common'
import { Elysia } from 'elysia'
import type { Config } from './config'
import { docsRoutes } from './modules/docs'
import type { DocsAggregator } from './modules/docs/service'
import type { EdgeAuth } from './modules/edge-auth/service'
import type { EphemeralHub } from './modules/ephemeral/service'
import { proxyHandler, proxyRoutes } from './modules/proxy'
import type { Upstream } from './modules/proxy/service'
import type { RateLimiter } from './modules/rate-limit/service'
import { realtimeRoutes } from './modules/realtime'
import type { RealtimeHub } from './modules/realtime/service'
import { edgeHeaders, security } from './modules/security'
import { syncRoutes } from './modules/sync'
import type { UserStreams } from './modules/sync/service'

const MAX_CLIENT_FRAME_BYTES = 16 * 1024

export type AppDeps = {
  runtime: Runtime
  config: Config
  /** Checks behind the ops port's /ready (runService serves them with opsApp). */
  readiness: ReadinessCheck[]
  upstreams: readonly Upstream[]
  edgeAuth: EdgeAuth
  limiter: RateLimiter
  hub: RealtimeHub
  ephemeral: EphemeralHub
  streams: UserStreams
  docs: DocsAggregator
}

/** Builds the gateway; deps.ts connects the clients and index.ts listens. */
export function buildApp({
  runtime,
  config,
  upstreams,
  edgeAuth,
  limiter,
  hub,
  ephemeral,
  streams,
  docs,
}: AppDeps) {
  const headersFor = edgeHeaders({ corsOrigins: config.CORS_ORIGINS, hstsMaxAge: config.HSTS_MAX_AGE })
  const proxy = proxyHandler({
    upstreams,
    edgeAuth,
    limiter,
    metrics: runtime.metrics,
    logger: runtime.logger,
    edgeHeaders: headersFor,
    trustProxyHops: config.TRUST_PROXY_HOPS,
    bodyLimitBytes: config.BODY_LIMIT_BYTES,
  })
  // Clients only ever send tiny control frames; Bun drops a connection that sends a bigger one.
  const app = new Elysia({ websocket: { maxPayloadLength: MAX_CLIENT_FRAME_BYTES } })
  return (
    app
      // Proxied requests, nearly all of the traffic, skip the framework (see proxyHandler).
      .wrap((handle) => (request: Request) => proxy(request, app.server) ?? handle(request))
      .use(
        httpKit({
          service: 'gateway',
          description: 'Public edge: routing, authentication, rate limits, docs, WebSocket',
          logger: runtime.logger,
          metrics: runtime.metrics,
          bodyLimitBytes: config.BODY_LIMIT_BYTES,
          // The proxy routes the canonical spelling of every path it receives.
          paths: 'canonicalise',
        }),
      )
      .use(security(headersFor))
      .use(docsRoutes(docs))
      .use(realtimeRoutes({ hub, edgeAuth, limiter, ephemeral }))
      .use(syncRoutes({ streams, edgeAuth, limiter, hub }))
      .use(proxyRoutes(proxy))
  )
}

export type App = ReturnType<typeof buildApp>
