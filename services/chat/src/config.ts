import {
  AmqpEnv,
  BaseEnv,
  envSchema,
  JwtVerifyEnv,
  MongoEnv,
  OutboxEnv,
  portEnv,
  RedisEnv,
} from '@parley/common'
import { RetentionEnv } from '@parley/common/retention'
import { type Static, Type as t } from '@sinclair/typebox'

export const Env = envSchema({
  ...BaseEnv,
  ...MongoEnv,
  ...RedisEnv,
  ...AmqpEnv,
  ...OutboxEnv,
  ...JwtVerifyEnv,
  ...RetentionEnv,
  ...portEnv('chat'),
  CHAT_CACHE_TTL_SECONDS: t.Integer({
    minimum: 1,
    maximum: 86_400,
    default: 60,
    description:
      'Lifetime of cached conversation metadata and latest message pages in Redis (bounds staleness after a Redis outage)',
  }),
})

export type Config = Static<typeof Env>
