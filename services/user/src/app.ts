import { type AccessTokenVerifier, httpKit, type ReadinessCheck, type Runtime } from '@parley/common'
import { Elysia } from 'elysia'
import type { Config } from './config'
import { profileRoutes } from './modules/profiles'
import type { ProfileService } from './modules/profiles/service'

export type AppDeps = {
  runtime: Runtime
  config: Config
  /** Checks behind the ops port's /ready (runService serves them with opsApp). */
  readiness: ReadinessCheck[]
  verifier: AccessTokenVerifier
  profiles: ProfileService
}

/** Builds the user service; index.ts connects the clients and listens. */
export function buildApp({ runtime, config, verifier, profiles }: AppDeps) {
  return new Elysia()
    .use(
      httpKit({
        service: 'user',
        description: 'User profiles and search',
        logger: runtime.logger,
        metrics: runtime.metrics,
        bodyLimitBytes: config.BODY_LIMIT_BYTES,
      }),
    )
    .use(profileRoutes(profiles, verifier))
}

export type App = ReturnType<typeof buildApp>
