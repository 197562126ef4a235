import { type AccessTokenVerifier, httpKit, type ReadinessCheck, type Runtime } from '@parley/common'
import { Elysia } from 'elysia'
import type { Config } from './config'
import type { SigningKeys } from './keys'
import { accountRoutes } from './modules/accounts'
import type { AccountService } from './modules/accounts/service'
import { sessionRoutes } from './modules/sessions'
import type { SessionService } from './modules/sessions/service'
import { accessTokenSigner, jwksRoutes } from './modules/tokens'
import { verificationRoutes } from './modules/verification'
import type { VerificationService } from './modules/verification/service'

export type AppDeps = {
  runtime: Runtime
  config: Config
  /** Checks behind the ops port's /ready (runService serves them with opsApp). */
  readiness: ReadinessCheck[]
  keys: SigningKeys
  /** Verifies the service's own access tokens (its JWKS, revoked sessions refused). */
  verifier: AccessTokenVerifier
  accounts: AccountService
  sessions: SessionService
  verification: VerificationService
}

/** Builds the auth service; index.ts connects the clients and listens. */
export function buildApp({ runtime, config, keys, verifier, accounts, sessions, verification }: AppDeps) {
  const signer = accessTokenSigner(keys, { issuer: config.JWT_ISSUER, audience: config.JWT_AUDIENCE })
  const accessTtl = config.ACCESS_TOKEN_TTL_SECONDS
  return new Elysia()
    .use(
      httpKit({
        service: 'auth',
        description: 'Registration, login, tokens, email verification',
        logger: runtime.logger,
        metrics: runtime.metrics,
        bodyLimitBytes: config.BODY_LIMIT_BYTES,
      }),
    )
    .use(accountRoutes(accounts, signer, verifier, accessTtl))
    .use(sessionRoutes(sessions, signer, verifier, accessTtl))
    .use(verificationRoutes(verification, verifier))
    .use(jwksRoutes(keys))
}

export type App = ReturnType<typeof buildApp>
