import { describe, expect, test } from 'bun:test'
import { Type as t } from '@sinclair/typebox'
import {
  AmqpEnv,
  BaseEnv,
  ConfigError,
  envSchema,
  PostgresEnv,
  parseConfig,
  RedisEnv,
  requiredSetting,
} from '../src/config'
import { createRuntime } from '../src/runtime'
import { eventBusFor, redisFor } from '../src/wiring'

const Env = envSchema({
  ...BaseEnv,
  ...PostgresEnv,
  ...AmqpEnv,
  PORT: t.Integer({ minimum: 1, default: 4000 }),
})

describe('parseConfig', () => {
  test('applies defaults and converts numbers', () => {
    const config = parseConfig(Env, { DATABASE_URL: 'postgres://u:p@h/db', PORT: '4100' })
    expect(config.PORT).toBe(4100)
    expect(config.HOST).toBe('127.0.0.1')
    expect(config.AMQP_EXCHANGE).toBe('parley.events')
  })

  test('a missing variable is named', () => {
    expect(() => parseConfig(Env, {})).toThrow(
      new ConfigError('DATABASE_URL', 'is required (a string matching ^postgres(ql)?://)'),
    )
  })

  test('a malformed variable is named without echoing its value', () => {
    try {
      parseConfig(Env, { DATABASE_URL: 'mysql://secret-password@h/db' })
      throw new Error('expected a ConfigError')
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError)
      expect((error as ConfigError).variable).toBe('DATABASE_URL')
      expect((error as Error).message).not.toContain('secret-password')
    }
    expect(() => parseConfig(Env, { DATABASE_URL: 'postgres://h/db', PORT: 'eighty' })).toThrow(
      /PORT must be an integer/,
    )
    expect(() => parseConfig(Env, { DATABASE_URL: 'postgres://h/db', LOG_LEVEL: 'loud' })).toThrow(
      /LOG_LEVEL must be one of/,
    )
  })

  test('loadConfig stops the process with one line naming the variable', async () => {
    const child = Bun.spawn(
      [
        'bun',
        '-e',
        "import { loadConfig, envSchema, PostgresEnv } from './src/config'; loadConfig(envSchema(PostgresEnv))",
      ],
      {
        cwd: `${import.meta.dir}/..`,
        env: { PATH: process.env.PATH ?? '' },
        stderr: 'pipe',
        stdout: 'pipe',
      },
    )
    const [code, stderr] = await Promise.all([child.exited, new Response(child.stderr).text()])
    expect(code).toBe(78)
    expect(stderr.trim().split('\n')).toEqual([
      'invalid configuration: DATABASE_URL is required (a string matching ^postgres(ql)?://)',
    ])
  })
})

describe('REDIS_URL and AMQP_URL outside development', () => {
  const ClientEnv = envSchema({ ...BaseEnv, ...RedisEnv, ...AmqpEnv })
  const redisUrl = 'redis://cache.internal:6379'
  const amqpUrl = 'amqp://parley:pw@broker.internal:5672/%2F'

  test('only PARLEY_ENV=development defaults them to the local servers', () => {
    const development = parseConfig(ClientEnv, { PARLEY_ENV: 'development' })
    expect(development.REDIS_URL).toBe('redis://127.0.0.1:6379')
    expect(development.AMQP_URL).toBe('amqp://guest:guest@127.0.0.1:5672/%2F')
    expect(parseConfig(ClientEnv, { PARLEY_ENV: 'development', REDIS_URL: redisUrl }).REDIS_URL).toBe(
      redisUrl,
    )

    for (const env of [{}, { PARLEY_ENV: 'production' }, { REDIS_URL: '', AMQP_URL: '' }]) {
      const config = parseConfig(ClientEnv, env)
      expect(config.PARLEY_ENV).toBe('production')
      expect(config.REDIS_URL).toBeUndefined()
      expect(config.AMQP_URL).toBeUndefined()
      expect(() => requiredSetting(config, 'REDIS_URL')).toThrow(
        new ConfigError(
          'REDIS_URL',
          'is required unless PARLEY_ENV=development (a string matching ^rediss?://)',
        ),
      )
    }
    const explicit = parseConfig(ClientEnv, { REDIS_URL: redisUrl, AMQP_URL: amqpUrl })
    expect([explicit.REDIS_URL, explicit.AMQP_URL]).toEqual([redisUrl, amqpUrl])
    expect(() => parseConfig(ClientEnv, { REDIS_URL: 'http://cache' })).toThrow(/REDIS_URL must be/)
  })

  test('building the Redis client or the bus without them is a ConfigError naming the variable', () => {
    const runtime = createRuntime('config-test', 'silent')
    const config = parseConfig(ClientEnv, {})
    expect(() => redisFor(config, runtime)).toThrow(/^invalid configuration: REDIS_URL is required/)
    expect(() => eventBusFor(config, runtime, 'parley/test')).toThrow(
      /^invalid configuration: AMQP_URL is required/,
    )
  })

  test('a production start-up with an empty REDIS_URL or AMQP_URL stops with one line naming it', async () => {
    // A service whose connect builds a Redis client and a bus, as every service's deps.ts does.
    const script = [
      "import { runService, redisFor, eventBusFor, envSchema, BaseEnv, RedisEnv, AmqpEnv } from './src'",
      "import { Elysia } from 'elysia'",
      "import { Type } from '@sinclair/typebox'",
      'await runService({',
      "  service: 'config-test',",
      '  env: envSchema({ ...BaseEnv, ...RedisEnv, ...AmqpEnv, PORT: Type.Integer({ default: 1 }) }),',
      "  connect: async (config, runtime) => ({ redis: redisFor(config, runtime), bus: eventBusFor(config, runtime, 'parley/test') }),",
      '  buildApp: () => new Elysia(),',
      '})',
    ].join('\n')
    const run = async (env: Record<string, string>) => {
      const child = Bun.spawn(['bun', '-e', script], {
        cwd: `${import.meta.dir}/..`,
        env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'silent', ...env },
        stderr: 'pipe',
        stdout: 'pipe',
      })
      const timer = setTimeout(() => child.kill(), 10_000)
      const [code, stderr] = await Promise.all([child.exited, new Response(child.stderr).text()])
      clearTimeout(timer)
      return { code, lines: stderr.trim().split('\n') }
    }
    expect(await run({ REDIS_URL: '', AMQP_URL: amqpUrl })).toEqual({
      code: 78,
      lines: [
        'invalid configuration: REDIS_URL is required unless PARLEY_ENV=development (a string matching ^rediss?://)',
      ],
    })
    expect(await run({ PARLEY_ENV: 'production', REDIS_URL: redisUrl })).toEqual({
      code: 78,
      lines: [
        'invalid configuration: AMQP_URL is required unless PARLEY_ENV=development (a string matching ^amqps?://)',
      ],
    })
  })
})
