import { ConfigError, eventBusFor, type Runtime, redisFor, verifierFor } from '@parley/common'
import { PRESENCE_TTL_MS, UPSTREAMS } from '@parley/contracts'
import type { AppDeps } from './app'
import { type Config, upstreamTimeoutKey, upstreamUrlKey } from './config'
import { GATEWAY_DOCUMENT } from './modules/docs/model'
import { DocsAggregator } from './modules/docs/service'
import { subscribeRevocations } from './modules/edge-auth/consumers'
import { EdgeAuth, RevocationStore } from './modules/edge-auth/service'
import { subscribeMembership } from './modules/ephemeral/consumers'
import { EphemeralHub } from './modules/ephemeral/service'
import { API_PREFIX, type Upstream } from './modules/proxy/service'
import { parsePolicies, type RateLimitPolicies } from './modules/rate-limit/model'
import { RateLimiter } from './modules/rate-limit/service'
import { subscribeRealtime } from './modules/realtime/consumers'
import { RealtimeHub } from './modules/realtime/service'
import { subscribeStreamWriter } from './modules/sync/consumers'
import { StreamFeed, UserStreams } from './modules/sync/service'

/** The services behind the gateway, in roster order, with their configured URL and timeout. */
export function upstreamsOf(config: Config): Upstream[] {
  return UPSTREAMS.map((upstream) => ({
    name: upstream.name,
    prefix: upstream.prefix,
    baseUrl: config[upstreamUrlKey(upstream.name)].replace(/\/$/, ''),
    timeoutMs: config[upstreamTimeoutKey(upstream.name)],
  }))
}

/** The proxy's routes: each upstream under its prefix and under its `morePrefixes` (roster). */
export function routesOf(upstreams: readonly Upstream[]): Upstream[] {
  return upstreams.flatMap((upstream) => {
    const entry = UPSTREAMS.find((service) => service.name === upstream.name)
    const more = entry && 'morePrefixes' in entry ? entry.morePrefixes : []
    return [upstream, ...more.map((prefix) => ({ ...upstream, prefix }))]
  })
}

/** RATE_LIMIT_POLICIES is JSON inside a string: a bad value stops start-up with one line, like loadConfig. */
function policiesOrExit(raw: string): RateLimitPolicies {
  try {
    return parsePolicies(raw)
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    process.stderr.write(`${error.message}\n`)
    process.exit(78)
  }
}

export type ConnectOptions = {
  /** Key prefix of every Redis key (tests); production leaves it empty so presence keys match the contract. */
  redisKeyPrefix?: string
}

/** Connects Redis and the broker, starts the consumers and registers how to release them on shutdown. */
export async function connect(
  config: Config,
  runtime: Runtime,
  options: ConnectOptions = {},
): Promise<AppDeps> {
  const { logger, metrics, lifecycle } = runtime
  const policies = policiesOrExit(config.RATE_LIMIT_POLICIES)
  const redis = redisFor(config, runtime, options.redisKeyPrefix)
  const bus = eventBusFor(config, runtime, 'parley/gateway')

  const jwksFetches = metrics.counter('jwks_fetches_total', 'Fetches of the auth JWKS by outcome', [
    'outcome',
  ])
  const revocations = new RevocationStore(
    redis,
    { ttlSeconds: config.REVOCATION_TTL_SECONDS, cacheMs: config.REVOCATION_CACHE_MS },
    logger,
    metrics,
  )
  const verifier = verifierFor(config, runtime, {
    cooldownMs: config.JWKS_REFETCH_COOLDOWN_MS,
    // Revocation is checked by EdgeAuth on every request (verified tokens are memoised).
    jwksFetch: async (url, init) => {
      try {
        const response = await fetch(url, init)
        jwksFetches.inc({ outcome: response.ok ? 'ok' : 'error' })
        return response
      } catch (error) {
        jwksFetches.inc({ outcome: 'error' })
        throw error
      }
    },
  })
  const edgeAuth = new EdgeAuth(verifier, revocations)
  const limiter = new RateLimiter(redis, policies, logger, metrics)
  const streams = new UserStreams(
    redis,
    { retentionDays: config.STREAM_RETENTION_DAYS, maxEvents: config.STREAM_MAX_EVENTS },
    metrics,
  )
  const hub = new RealtimeHub(
    redis,
    {
      maxConnectionsPerUser: config.WS_MAX_CONNECTIONS_PER_USER,
      pingIntervalMs: config.WS_PING_INTERVAL_MS,
      maxBufferedBytes: config.WS_MAX_BUFFERED_BYTES,
      presenceTtlMs: PRESENCE_TTL_MS,
    },
    logger,
    metrics,
    streams,
    new StreamFeed(redis, streams.channel, logger),
  )
  const upstreams = upstreamsOf(config)
  const ephemeral = new EphemeralHub(
    redis,
    hub,
    limiter,
    {
      chat: {
        baseUrl: config.CHAT_URL.replace(/\/$/, ''),
        timeoutMs: config.CHAT_TIMEOUT_MS,
        contactLoads: config.PRESENCE_CONTACT_LOADS,
      },
      intervalMs: config.WS_PING_INTERVAL_MS,
      presenceTtlMs: PRESENCE_TTL_MS,
    },
    logger,
    metrics,
  )
  const docs = new DocsAggregator(
    GATEWAY_DOCUMENT,
    upstreams.map((upstream) => ({
      service: upstream.name,
      url: upstream.baseUrl,
      pathPrefix: API_PREFIX,
    })),
    { refreshMs: config.DOCS_REFRESH_MS, timeoutMs: config.DOCS_FETCH_TIMEOUT_MS },
    logger,
  )

  await bus.start()
  await subscribeRevocations(bus, revocations)
  await subscribeRealtime(bus, hub, revocations)
  await subscribeStreamWriter(bus, streams)
  await subscribeMembership(bus, ephemeral)
  hub.start()
  await ephemeral.start()

  lifecycle.onDrain('websockets', () => hub.close())
  lifecycle.onClose('rate-limiter', () => limiter.close())
  lifecycle.onClose('ephemeral', () => ephemeral.close())

  return {
    runtime,
    config,
    upstreams: routesOf(upstreams),
    edgeAuth,
    limiter,
    hub,
    ephemeral,
    streams,
    docs,
    // The gateway degrades without either (in-process limits, no pushes); upstreams have their own probes.
    readiness: [
      { name: 'redis', check: () => redis.ping(), critical: false },
      { name: 'broker', check: () => bus.check(), critical: false },
    ],
  }
}
