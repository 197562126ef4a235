import { describe, expect, test } from 'bun:test'
import { Type as t } from '@sinclair/typebox'
import { AmqpEnv, BaseEnv, ConfigError, envSchema, PostgresEnv, parseConfig } from '../src/config'

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
