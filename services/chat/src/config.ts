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
  CHAT_MESSAGE_EDIT_WINDOW_SECONDS: t.Integer({
    minimum: 1,
    default: 172_800,
    description: 'How long after sending its author may edit a message (default 48 h)',
  }),
  CHAT_MAX_REACTIONS_PER_MESSAGE: t.Integer({
    minimum: 1,
    maximum: 100,
    default: 20,
    description: 'Distinct emoji a message may carry as reactions',
  }),
})

export type Config = Static<typeof Env>
