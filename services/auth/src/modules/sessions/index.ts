import {
  type AccessTokenVerifier,
  authPlugin,
  OPTIONAL_BODY,
  problemResponses,
  requestContext,
} from '@parley/common'
import { Elysia, t } from 'elysia'
import { type accessTokenSigner, TokenPair, tokenPair } from '../tokens'
import { LogoutBody, RefreshBody, RevokeBody } from './model'
import type { SessionService } from './service'

/** Refresh (rotation), logout and revoke-everything. */
export function sessionRoutes(
  sessions: SessionService,
  signer: ReturnType<typeof accessTokenSigner>,
  verifier: AccessTokenVerifier,
  accessTtlSeconds: number,
) {
  return new Elysia({ name: 'auth.sessions', prefix: '/auth' })
    .use(requestContext)
    .use(signer)
    .use(authPlugin(verifier))
    .post(
      '/refresh',
      async ({ body, accessTokens }) =>
        // Signed inside the refresh's transaction: see SessionService.refresh.
        sessions.refresh(body.refreshToken, (issued) => tokenPair(accessTokens, issued, accessTtlSeconds)),
      {
        // JSON only, declared so the OpenAPI document lists the body under application/json.
        parse: 'json',
        body: RefreshBody,
        response: { 200: TokenPair, ...problemResponses(400, 401, 422) },
        detail: {
          tags: ['auth'],
          summary: 'Exchange a refresh token for a new pair (rotation)',
          description:
            'Every refresh token works once. Presenting one again within REFRESH_REUSE_GRACE_SECONDS of its exchange, while its successor is unused, is a retry: the same new refresh token (and a fresh access token). Otherwise it revokes the whole session (every token descended from the same login) and answers 401, as RFC 9700 §4.14.2 asks.',
        },
      },
    )
    .post(
      '/logout',
      async ({ body, identity, set }) => {
        await sessions.logout(identity.userId, body.refreshToken)
        set.status = 204
      },
      {
        auth: true,
        parse: 'json',
        body: LogoutBody,
        response: { 204: t.Void(), ...problemResponses(400, 401, 404, 422) },
        detail: {
          tags: ['auth'],
          summary: 'End one session',
          description:
            'Revokes the session the refresh token belongs to (every token of that login). Its access tokens stop working at the auth service at once and elsewhere when they expire.',
        },
      },
    )
    .post(
      '/revoke',
      async ({ body, identity, requestId, set }) => {
        await sessions.revokeAll(identity, body?.userId, requestId)
        set.status = 204
      },
      {
        auth: true,
        parse: 'json',
        body: RevokeBody,
        response: { 204: t.Void(), ...problemResponses(400, 401, 403, 404, 422) },
        detail: {
          tags: ['auth'],
          summary: 'Revoke every session of a user',
          // The OpenAPI plugin marks every body required; the gateway's merged document honours this.
          [OPTIONAL_BODY]: true,
          description:
            'Without a body: every session of the caller. With `{userId}`: that user’s sessions, which needs the `admin` role. Publishes `user.sessions_revoked`, so the gateway rejects access tokens issued before now.',
        },
      },
    )
}
