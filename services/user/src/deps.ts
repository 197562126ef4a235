import { type AccessTokenVerifier, eventBusFor, type Runtime, redisFor, verifierFor } from '@parley/common'
import { postgresFor, startOutboxRelay } from '@parley/common/postgres'
import { processedEventsPurge, startRetention } from '@parley/common/retention'
import type { AppDeps } from './app'
import type { Config } from './config'
import * as schema from './db/schema'
import { ProfileArrivals } from './modules/profiles/arrivals'
import { ProfileCache } from './modules/profiles/cache'
import { EVENT_SOURCE, ProfileService } from './modules/profiles/service'
import { subscribeProjection } from './modules/projection/consumers'
import { ProfileProjection } from './modules/projection/service'

export type ConnectOptions = {
  /** Tests verify tokens against a test signer's key set instead of JWKS_URL. */
  verifier?: AccessTokenVerifier
  /** Namespace of this service's Redis keys (tests own a unique one). */
  redisKeyPrefix?: string
}

/** Connects what the user service needs and registers how to release it on shutdown. */
export async function connect(
  config: Config,
  runtime: Runtime,
  options: ConnectOptions = {},
): Promise<AppDeps> {
  const { logger, metrics, lifecycle } = runtime

  const postgres = postgresFor(config, runtime, schema)
  const arrivals = new ProfileArrivals(postgres.sql, logger)
  await arrivals.start()
  lifecycle.onClose('profile arrivals', () => arrivals.stop())

  const redis = redisFor(config, runtime, options.redisKeyPrefix ?? 'user:')
  const cache = new ProfileCache(redis, config.PROFILE_CACHE_TTL_SECONDS, metrics, logger)

  const bus = eventBusFor(config, runtime, EVENT_SOURCE)
  await subscribeProjection(bus, new ProfileProjection(postgres.db, cache))
  await bus.start()
  await startOutboxRelay(postgres.sql, bus, runtime, { maxAttempts: config.OUTBOX_MAX_ATTEMPTS })
  startRetention(
    runtime,
    [processedEventsPurge(postgres.sql, config.PROCESSED_EVENTS_RETENTION_DAYS)],
    config,
  )

  const verifier = options.verifier ?? verifierFor(config, runtime)

  return {
    runtime,
    config,
    verifier,
    profiles: new ProfileService({
      db: postgres.db,
      cache,
      arrivals,
      projectionWaitMs: config.PROFILE_WAIT_MS,
    }),
    readiness: [
      { name: 'postgres', check: postgres.check },
      // The cache is bypassed while Redis is down; the outbox holds events while the broker is.
      { name: 'redis', check: () => redis.ping(), critical: false },
      { name: 'broker', check: () => bus.check(), critical: false },
    ],
  }
}
