// Type.Integer, not Elysia's t.Integer: that one also accepts numeric strings and documents them.
import { Type } from '@sinclair/typebox'
import { t } from 'elysia'

export const TokenPair = t.Object({
  accessToken: t.String({ description: 'JWT (EdDSA, `kid` in the header), verifiable with the JWKS' }),
  refreshToken: t.String({ description: 'Opaque, single use: every refresh returns a new one' }),
  tokenType: t.Literal('Bearer', { description: 'Send the access token as `Authorization: Bearer <token>`' }),
  expiresIn: Type.Integer({ description: 'Seconds until the access token expires' }),
  refreshExpiresIn: Type.Integer({ description: 'Seconds until the refresh token expires' }),
})
export type TokenPair = typeof TokenPair.static

export const Jwks = t.Object({
  keys: t.Array(
    t.Object(
      {
        kty: t.String({ description: 'Key type (RFC 7517): `OKP` for the Ed25519 keys' }),
        crv: t.Optional(t.String({ description: 'Curve of an `OKP` key: `Ed25519`' })),
        x: t.Optional(t.String({ description: 'The public key, base64url (RFC 8037)' })),
        kid: t.String({ description: 'Key id: matches the `kid` header of the tokens it signed' }),
        alg: t.String({ description: 'Signature algorithm: `EdDSA`' }),
        use: t.String({ description: 'Key use: `sig` (signatures)' }),
      },
      { additionalProperties: true },
    ),
    { description: 'The current signing key and, during a rotation, the previous one' },
  ),
})
