import { AccessTokenVerifier, type Runtime } from '@parley/common'
import { EventBus } from '@parley/common/events'
import { PgOutboxRelay } from '@parley/common/postgres'
import { closeRedis, createRedis } from '@parley/common/redis'
import type { AppDeps } from './app'
import type { Config } from './config'
import { openDatabase } from './db/client'
import { ProfileArrivals } from './modules/profiles/arrivals'
import { ProfileCache } from './modules/profiles/cache'
import { EVENT_SOURCE, ProfileService } from './modules/profiles/service'
import { subscribeProjection } from './modules/projection'
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

  const postgres = openDatabase(config.DATABASE_URL, config.DATABASE_POOL_MAX)
  lifecycle.onClose('postgres', postgres.close)
  const arrivals = new ProfileArrivals(postgres.sql, logger)
  await arrivals.start()
  lifecycle.onClose('profile arrivals', () => arrivals.stop())

  const redis = createRedis(config.REDIS_URL, logger, { keyPrefix: options.redisKeyPrefix ?? 'user:' })
  lifecycle.onClose('redis', () => closeRedis(redis))
  const cache = new ProfileCache(redis, config.PROFILE_CACHE_TTL_SECONDS, metrics, logger)

  const bus = new EventBus({
    url: config.AMQP_URL,
    exchange: config.AMQP_EXCHANGE,
    source: EVENT_SOURCE,
    prefetch: config.AMQP_PREFETCH,
    logger,
    metrics,
  })
  lifecycle.onClose('broker', () => bus.close())
  await subscribeProjection(bus, new ProfileProjection(postgres.db, cache))
  await bus.start()
  lifecycle.onDrain('consumers', () => bus.stopConsuming())
  const relay = new PgOutboxRelay(postgres.sql, bus, logger, metrics)
  await relay.start()
  lifecycle.onDrain('outbox relay', () => relay.stop())

  const verifier =
    options.verifier ??
    new AccessTokenVerifier({
      jwks: new URL(config.JWKS_URL),
      issuer: config.JWT_ISSUER,
      audience: config.JWT_AUDIENCE,
    })

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
