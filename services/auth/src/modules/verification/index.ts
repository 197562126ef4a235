import { type AccessTokenVerifier, authPlugin, problemResponses, requestContext } from '@parley/common'
import { Elysia } from 'elysia'
import { ConfirmBody, VerificationRequested, Verified } from './model'
import type { VerificationService } from './service'

/** Email verification by a mailed one-time code. */
export function verificationRoutes(verification: VerificationService, verifier: AccessTokenVerifier) {
  return new Elysia({ name: 'auth.verification', prefix: '/auth/verify-email' })
    .use(requestContext)
    .use(authPlugin(verifier))
    .post(
      '/request',
      async ({ identity, requestId, status }) =>
        status(202, await verification.request(identity.userId, requestId)),
      {
        auth: true,
        response: { 202: VerificationRequested, ...problemResponses(401, 409, 429, 503) },
        detail: {
          tags: ['auth'],
          summary: 'Mail a verification code to the caller’s email address',
          description:
            'A new 6-digit code replaces any earlier one; by default it is valid for 10 minutes and allows 5 attempts, and one code per minute may be requested (429 with Retry-After otherwise); 409 when already verified.',
        },
      },
    )
    .post(
      '/confirm',
      async ({ identity, body, requestId }) => {
        await verification.confirm(identity.userId, body.code, requestId)
        return { emailVerified: true as const }
      },
      {
        auth: true,
        // JSON only, declared so the OpenAPI document lists the body under application/json.
        parse: 'json',
        body: ConfirmBody,
        response: { 200: Verified, ...problemResponses(400, 401, 409, 422, 503) },
        detail: {
          tags: ['auth'],
          summary: 'Confirm the caller’s email address with the mailed code',
          description:
            'Publishes `user.email_verified`. Access tokens carry `email_verified` from their issue: refresh to get one that says true. 400 for an incorrect, expired or used-up code.',
        },
      },
    )
}
