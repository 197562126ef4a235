import { jwt } from '@elysiajs/jwt'
import { requestContext } from '@parley/common'
import { Elysia } from 'elysia'
import { ACCESS_TOKEN_ALGORITHM, type SigningKeys } from '../../keys'
import { Jwks, TokenPair } from './model'
import type { IssuedSession } from './service'

/**
 * Signs access tokens with the current key. @elysiajs/jwt holds exactly one static key, which
 * is what signing needs; verification accepts the previous key too, so it goes through the
 * JWKS (AccessTokenVerifier) instead.
 */
export function accessTokenSigner(keys: SigningKeys, options: { issuer: string; audience: string }) {
  return jwt({
    name: 'accessTokens',
    secret: keys.privateKey,
    alg: ACCESS_TOKEN_ALGORITHM,
    kid: keys.kid,
    // RFC 9068: marks the JWT as an access token, not an ID token or anything else signed with the key.
    typ: 'at+jwt',
    iss: options.issuer,
    aud: options.audience,
  })
}

export type AccessTokenSigner = ReturnType<typeof accessTokenSigner>['decorator']['accessTokens']

export async function tokenPair(signer: AccessTokenSigner, issued: IssuedSession, accessTtlSeconds: number) {
  const pair: TokenPair = {
    accessToken: await signer.sign(issued.claims),
    refreshToken: issued.refreshToken,
    tokenType: 'Bearer',
    expiresIn: accessTtlSeconds,
    refreshExpiresIn: issued.refreshExpiresIn,
  }
  return pair
}

/** The public keys: the current one and, during a rotation, the previous one. */
export function jwksRoutes(keys: SigningKeys) {
  return new Elysia({ name: 'auth.jwks' }).use(requestContext).get(
    '/auth/.well-known/jwks.json',
    ({ set }) => {
      // Short: after a rotation verifiers also refetch on an unknown `kid`, which a long cache would defeat.
      set.headers['cache-control'] = 'public, max-age=60'
      return keys.jwks
    },
    {
      response: { 200: Jwks },
      detail: {
        tags: ['auth'],
        summary: 'Public keys that verify access tokens (JWKS)',
        description:
          'Every key has `kid`, `alg: EdDSA` and `use: sig`; pick the key by the token header `kid`.',
      },
    },
  )
}

export { TokenPair }
