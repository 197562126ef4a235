import { type AccessTokenVerifier, httpKit, type ReadinessCheck, type Runtime } from '@parley/common'
import { Elysia } from 'elysia'
import type { Config } from './config'
import { notificationRoutes } from './modules/notifications'
import type { NotificationService } from './modules/notifications/service'

export type AppDeps = {
  runtime: Runtime
  config: Config
  /** Checks behind the ops port's /ready (runService serves them with opsApp). */
  readiness: ReadinessCheck[]
  verifier: AccessTokenVerifier
  notifications: NotificationService
}

/** Builds the notification service; index.ts connects the clients and listens. */
export function buildApp({ runtime, config, verifier, notifications }: AppDeps) {
  return new Elysia()
    .use(
      httpKit({
        service: 'notification',
        description: 'Email and in-app notifications',
        logger: runtime.logger,
        metrics: runtime.metrics,
        bodyLimitBytes: config.BODY_LIMIT_BYTES,
      }),
    )
    .use(notificationRoutes(notifications, verifier))
}

export type App = ReturnType<typeof buildApp>
