// Type.Integer, not Elysia's t.Integer: that one also accepts numeric strings and documents them.
import { Type } from '@sinclair/typebox'
import { t } from 'elysia'

export const TokenPair = t.Object({
  accessToken: t.String({ description: 'JWT (EdDSA, `kid` in the header), verifiable with the JWKS' }),
  refreshToken: t.String({ description: 'Opaque, single use: every refresh returns a new one' }),
  tokenType: t.Literal('Bearer'),
  expiresIn: Type.Integer({ description: 'Seconds until the access token expires' }),
  refreshExpiresIn: Type.Integer({ description: 'Seconds until the refresh token expires' }),
})
export type TokenPair = typeof TokenPair.static

export const Jwks = t.Object({
  keys: t.Array(
    t.Object(
      {
        kty: t.String(),
        crv: t.Optional(t.String()),
        x: t.Optional(t.String()),
        kid: t.String(),
        alg: t.String(),
        use: t.String(),
      },
      { additionalProperties: true },
    ),
  ),
})
