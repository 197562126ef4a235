import { AmqpEnv, BaseEnv, envSchema, PostgresEnv, RedisEnv } from '@parley/common'
import { type Static, Type as t } from '@sinclair/typebox'

export const Env = envSchema({
  ...BaseEnv,
  ...PostgresEnv,
  ...RedisEnv,
  ...AmqpEnv,
  PORT: t.Integer({
    minimum: 1,
    maximum: 65535,
    default: 4001,
    description: 'HTTP port of the user service',
  }),
})

export type Config = Static<typeof Env>
