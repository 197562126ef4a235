import {
  AmqpEnv,
  BaseEnv,
  envSchema,
  JwtVerifyEnv,
  OutboxEnv,
  PostgresEnv,
  portEnv,
  RedisEnv,
} from '@parley/common'
import { RetentionEnv } from '@parley/common/retention'
import { type Static, Type as t } from '@sinclair/typebox'

export const Env = envSchema({
  ...BaseEnv,
  ...PostgresEnv,
  ...RedisEnv,
  ...AmqpEnv,
  ...OutboxEnv,
  ...JwtVerifyEnv,
  ...RetentionEnv,
  ...portEnv('user'),
  PROFILE_CACHE_TTL_SECONDS: t.Integer({
    minimum: 1,
    default: 300,
    description: 'How long a profile stays in the Redis cache (writes refresh it at once)',
  }),
  PROFILE_WAIT_MS: t.Integer({
    minimum: 0,
    maximum: 30_000,
    default: 2_000,
    description:
      'How long GET/PATCH /users/me wait for a just-registered profile to be projected before answering 503',
  }),
})

export type Config = Static<typeof Env>
