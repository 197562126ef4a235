import { AmqpEnv, BaseEnv, envSchema, MongoEnv, RedisEnv } from '@parley/common'
import { type Static, Type as t } from '@sinclair/typebox'

export const Env = envSchema({
  ...BaseEnv,
  ...MongoEnv,
  ...RedisEnv,
  ...AmqpEnv,
  PORT: t.Integer({
    minimum: 1,
    maximum: 65535,
    default: 4002,
    description: 'HTTP port of the chat service',
  }),
})

export type Config = Static<typeof Env>
