import { AccessTokenVerifier, ConfigError, eventBusFor, type Runtime, redisFor } from '@parley/common'
import type { EventBus } from '@parley/common/events'
import { postgresFor, startOutboxRelay } from '@parley/common/postgres'
import { processedEventsPurge, startRetention } from '@parley/common/retention'
import type { AppDeps } from './app'
import type { Config } from './config'
import * as schema from './db/schema'
import { EVENT_SOURCE } from './events'
import { loadSigningKeys, type SigningKeys } from './keys'
import { subscribeProfileUpdates } from './modules/accounts/consumers'
import { PasswordHasher } from './modules/accounts/password'
import { AccountService } from './modules/accounts/service'
import { SessionService } from './modules/sessions/service'
import { refreshSuccessorSecret } from './modules/tokens/service'
import { VerificationService } from './modules/verification/service'

export { migrate } from './db'

const SESSION_PURGE_INTERVAL_MS = 60 * 60_000

export type AuthDeps = AppDeps & { bus: EventBus }

/** A key problem is a configuration error: one line naming the variable, like loadConfig. */
async function signingKeysOrExit(config: Config, runtime: Runtime): Promise<SigningKeys> {
  try {
    return await loadSigningKeys(config, runtime.logger)
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    process.stderr.write(`${error.message}\n`)
    process.exit(78)
  }
}

/** Connects what the auth service needs and registers how to release it on shutdown. */
export async function connect(config: Config, runtime: Runtime): Promise<AuthDeps> {
  const { logger, metrics, lifecycle } = runtime
  const keys = await signingKeysOrExit(config, runtime)

  const postgres = postgresFor(config, runtime, schema)
  const redis = redisFor(config, runtime, config.REDIS_KEY_PREFIX)
  const bus = eventBusFor(config, runtime, EVENT_SOURCE)
  await subscribeProfileUpdates(bus, postgres.db)
  await bus.start()
  await startOutboxRelay(postgres.sql, bus, runtime, { maxAttempts: config.OUTBOX_MAX_ATTEMPTS })
  startRetention(
    runtime,
    [processedEventsPurge(postgres.sql, config.PROCESSED_EVENTS_RETENTION_DAYS)],
    config,
  )

  const sessions = new SessionService(
    postgres.db,
    {
      accessTtlSeconds: config.ACCESS_TOKEN_TTL_SECONDS,
      refreshTtlSeconds: config.REFRESH_TOKEN_TTL_SECONDS,
      reuseGraceSeconds: config.REFRESH_REUSE_GRACE_SECONDS,
      successorSecret: await refreshSuccessorSecret(keys.privateKey),
    },
    metrics,
    logger,
  )
  const purge = setInterval(() => {
    sessions.purgeExpired().catch((error) => logger.warn({ err: error }, 'purging expired sessions failed'))
  }, SESSION_PURGE_INTERVAL_MS)
  lifecycle.onDrain('session-purge', () => clearInterval(purge))
  const hasher = new PasswordHasher({
    memoryCost: config.ARGON2_MEMORY_KIB,
    timeCost: config.ARGON2_TIME_COST,
  })
  const verifier = new AccessTokenVerifier({
    jwks: keys.jwks,
    issuer: config.JWT_ISSUER,
    audience: config.JWT_AUDIENCE,
    isRevoked: async (identity) => !(await sessions.isActive(identity.sessionId)),
  })
  return {
    runtime,
    config,
    keys,
    verifier,
    sessions,
    accounts: new AccountService(postgres.db, hasher, sessions, metrics),
    verification: new VerificationService(
      postgres.db,
      redis,
      {
        codeTtlSeconds: config.VERIFICATION_CODE_TTL_SECONDS,
        maxAttempts: config.VERIFICATION_MAX_ATTEMPTS,
        resendSeconds: config.VERIFICATION_RESEND_SECONDS,
        pepper: keys.codePepper,
      },
      metrics,
    ),
    bus,
    readiness: [
      { name: 'postgres', check: postgres.check },
      // Only email verification needs Redis; it answers 503 while the rest keeps working.
      { name: 'redis', check: () => redis.ping(), critical: false },
      { name: 'broker', check: () => bus.check(), critical: false },
    ],
  }
}
