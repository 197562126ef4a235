import { type AccessTokenVerifier, authPlugin, problemResponses, requestContext } from '@parley/common'
import { normaliseDisplayName } from '@parley/contracts'
import { Elysia } from 'elysia'
import { type accessTokenSigner, tokenPair } from '../tokens'
import { LoginBody, Me, RegisterBody, SessionWithUser } from './model'
import { type AccountService, normaliseEmail } from './service'

/** Trims before validation, so " Ada@Example.com " is a valid email and "  " an empty display name. */
function normaliseBody({ body }: { body: unknown }): void {
  if (typeof body !== 'object' || body === null) return
  const fields = body as Record<string, unknown>
  if (typeof fields.email === 'string') fields.email = normaliseEmail(fields.email)
  if (typeof fields.displayName === 'string') fields.displayName = normaliseDisplayName(fields.displayName)
}

/** Registration, login and the caller's account. */
export function accountRoutes(
  accounts: AccountService,
  signer: ReturnType<typeof accessTokenSigner>,
  verifier: AccessTokenVerifier,
  accessTtlSeconds: number,
) {
  return new Elysia({ name: 'auth.accounts', prefix: '/auth' })
    .use(requestContext)
    .use(signer)
    .use(authPlugin(verifier))
    .post(
      '/register',
      async ({ body, accessTokens, requestId, status }) => {
        const { user, session } = await accounts.register(body, requestId)
        return status(201, { ...(await tokenPair(accessTokens, session, accessTtlSeconds)), user })
      },
      {
        transform: normaliseBody,
        // JSON only, declared so the OpenAPI document lists the body under application/json.
        parse: 'json',
        body: RegisterBody,
        response: { 201: SessionWithUser, ...problemResponses(400, 409, 422) },
        detail: {
          tags: ['auth'],
          summary: 'Create an account and sign in',
          description:
            'Publishes `user.registered` (the user service creates the profile, the notification service sends the welcome mail). 409 when the email address is taken.',
        },
      },
    )
    .post(
      '/login',
      async ({ body, accessTokens }) => {
        const { user, session } = await accounts.login(body)
        return { ...(await tokenPair(accessTokens, session, accessTtlSeconds)), user }
      },
      {
        transform: normaliseBody,
        parse: 'json',
        body: LoginBody,
        response: { 200: SessionWithUser, ...problemResponses(400, 401, 422) },
        detail: {
          tags: ['auth'],
          summary: 'Sign in with email and password',
          description:
            'Starts a new session. An unknown email and a wrong password get the same 401 after the same work.',
        },
      },
    )
    .get('/me', ({ identity }) => accounts.me(identity.userId, identity.sessionId), {
      auth: true,
      response: { 200: Me, ...problemResponses(401) },
      detail: {
        tags: ['auth'],
        summary: 'The caller’s identity, roles and verification state',
        description:
          'Read from the account, not the token: `emailVerified` is current even when the access token’s `email_verified` claim is older.',
      },
    })
}
