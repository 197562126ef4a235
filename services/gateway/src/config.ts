import { AmqpEnv, BaseEnv, envSchema, RedisEnv } from '@parley/common'
import { type Static, Type as t } from '@sinclair/typebox'

export const Env = envSchema({
  ...BaseEnv,
  ...RedisEnv,
  ...AmqpEnv,
  PORT: t.Integer({
    minimum: 1,
    maximum: 65535,
    default: 4000,
    description: 'HTTP port of the gateway service',
  }),
})

export type Config = Static<typeof Env>
