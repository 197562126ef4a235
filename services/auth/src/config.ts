import { AmqpEnv, BaseEnv, envSchema, OutboxEnv, PostgresEnv, portEnv, RedisEnv } from '@parley/common'
import { RetentionEnv } from '@parley/common/retention'
import { type Static, Type as t } from '@sinclair/typebox'

export const Env = envSchema({
  ...BaseEnv,
  ...PostgresEnv,
  ...RedisEnv,
  ...AmqpEnv,
  ...OutboxEnv,
  ...RetentionEnv,
  ...portEnv('auth'),
  REDIS_KEY_PREFIX: t.String({
    default: 'auth:',
    description: 'Prefix of every Redis key the auth service writes (verification codes, cooldowns)',
  }),
  JWT_PRIVATE_KEY: t.Optional(
    t.String({
      minLength: 1,
      description:
        'Ed25519 private key (PKCS8 PEM) signing access tokens; required unless PARLEY_ENV=development',
    }),
  ),
  JWT_KEY_ID: t.Optional(
    t.String({
      minLength: 1,
      maxLength: 128,
      description: '`kid` of JWT_PRIVATE_KEY (default: its RFC 7638 JWK thumbprint)',
    }),
  ),
  JWT_PREVIOUS_PUBLIC_KEY: t.Optional(
    t.String({
      minLength: 1,
      description:
        'Public key (SPKI PEM) of the previous signing key, still served in the JWKS during rotation',
    }),
  ),
  JWT_PREVIOUS_KEY_ID: t.Optional(
    t.String({
      minLength: 1,
      maxLength: 128,
      description: '`kid` of JWT_PREVIOUS_PUBLIC_KEY (default: its RFC 7638 JWK thumbprint)',
    }),
  ),
  JWT_ISSUER: t.String({
    minLength: 1,
    default: 'parley-auth',
    description: '`iss` of issued access tokens',
  }),
  JWT_AUDIENCE: t.String({ minLength: 1, default: 'parley', description: '`aud` of issued access tokens' }),
  ACCESS_TOKEN_TTL_SECONDS: t.Integer({
    minimum: 30,
    maximum: 86_400,
    default: 900,
    description: 'Lifetime of an access token',
  }),
  REFRESH_TOKEN_TTL_SECONDS: t.Integer({
    minimum: 60,
    default: 2_592_000,
    description: 'Lifetime of a refresh token (each rotation issues a new one with a fresh lifetime)',
  }),
  REFRESH_REUSE_GRACE_SECONDS: t.Integer({
    minimum: 0,
    maximum: 60,
    default: 5,
    description:
      'How long after a rotation presenting the old refresh token again returns the same successor (a client retrying after a timeout) instead of revoking the session as reuse; only while that successor is unused. 0 disables it',
  }),
  ARGON2_MEMORY_KIB: t.Integer({
    minimum: 64,
    default: 19_456,
    description: 'argon2id memory cost in KiB per password hash (OWASP: 19456)',
  }),
  ARGON2_TIME_COST: t.Integer({
    minimum: 1,
    default: 2,
    description: 'argon2id iterations per password hash (OWASP: 2)',
  }),
  VERIFICATION_CODE_TTL_SECONDS: t.Integer({
    minimum: 1,
    default: 600,
    description: 'How long an email verification code stays valid',
  }),
  VERIFICATION_MAX_ATTEMPTS: t.Integer({
    minimum: 1,
    default: 5,
    description: 'Wrong guesses allowed per email verification code before it is discarded',
  }),
  VERIFICATION_RESEND_SECONDS: t.Integer({
    minimum: 1,
    default: 60,
    description: 'Minimum time between two email verification codes for one user',
  }),
})

export type Config = Static<typeof Env>
