import { AccessTokenVerifier, type VerifierOptions } from './auth'
import { requiredSetting } from './config'
import { EventBus } from './events/bus'
import { closeRedis, createRedis, type Redis } from './redis'
import type { Runtime } from './runtime'

/**
 * Clients built from the shared environment blocks and tied to the process lifecycle, so
 * every service wires them the same way: consumers drain on SIGTERM, clients close last.
 */

export type AmqpConfig = {
  /** Unset only outside development by mistake: eventBusFor then throws a ConfigError naming it. */
  AMQP_URL?: string
  AMQP_EXCHANGE: string
  AMQP_PREFETCH: number
  SHUTDOWN_GRACE_MS: number
}

/** An EventBus for this service (not started: subscribe, then `start()`); a ConfigError if AMQP_URL is unset. */
export function eventBusFor(config: AmqpConfig, runtime: Runtime, source: string): EventBus {
  const bus = new EventBus({
    url: requiredSetting(config, 'AMQP_URL'),
    exchange: config.AMQP_EXCHANGE,
    source,
    prefetch: config.AMQP_PREFETCH,
    logger: runtime.logger,
    metrics: runtime.metrics,
  })
  runtime.lifecycle.onDrain('consumers', () => bus.stopConsuming(config.SHUTDOWN_GRACE_MS))
  runtime.lifecycle.onClose('broker', () => bus.close())
  return bus
}

/** A fail-fast Redis client (see createRedis), closed at shutdown; a ConfigError if REDIS_URL is unset. */
export function redisFor(config: { REDIS_URL?: string }, runtime: Runtime, keyPrefix?: string): Redis {
  const redis = createRedis(requiredSetting(config, 'REDIS_URL'), runtime.logger, { keyPrefix })
  runtime.lifecycle.onClose('redis', () => closeRedis(redis))
  return redis
}

export type JwtVerifyConfig = {
  JWKS_URL: string
  JWT_ISSUER: string
  JWT_AUDIENCE: string
  JWKS_CACHE_MAX_AGE_MS: number
}

/**
 * Verifies access tokens against the auth service's JWKS (tests pass their own key set).
 * Pass `{ logger, metrics }` of the runtime so failed JWKS refreshes are logged and counted.
 */
export function verifierFor(
  config: JwtVerifyConfig,
  runtime: Runtime,
  overrides: Partial<VerifierOptions> = {},
): AccessTokenVerifier {
  return new AccessTokenVerifier({
    jwks: new URL(config.JWKS_URL),
    issuer: config.JWT_ISSUER,
    audience: config.JWT_AUDIENCE,
    cacheMaxAgeMs: config.JWKS_CACHE_MAX_AGE_MS,
    // JWKS refetch failures are logged and counted (jwks_refresh_failures_total)
    logger: runtime.logger,
    metrics: runtime.metrics,
    ...overrides,
  })
}
