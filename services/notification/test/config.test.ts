import { expect, test } from 'bun:test'
import { ConfigError, parseConfig } from '@parley/common'
import { Env, retryDelays } from '../src/config'

const required = {
  DATABASE_URL: 'postgres://u:p@localhost:5432/db',
  JWKS_URL: 'http://auth:4003/auth/.well-known/jwks.json',
  SMTP_URL: 'smtp://mail:1025',
}

test('SMTP_URL has no default: a missing relay stops start-up naming it', () => {
  const { SMTP_URL: _, ...withoutSmtp } = required
  expect(() => parseConfig(Env, withoutSmtp)).toThrow(
    new ConfigError('SMTP_URL', 'is required (a string matching ^smtps?://)'),
  )
  expect(() => parseConfig(Env, { ...required, SMTP_URL: 'http://mail' })).toThrow(ConfigError)
})

test('mail headers from the environment cannot carry line breaks', () => {
  expect(() => parseConfig(Env, { ...required, MAIL_FROM: 'a@b.c\r\nBcc: x@y.z' })).toThrow(ConfigError)
  expect(() => parseConfig(Env, { ...required, MAIL_REPLY_TO: 'help@b.c\nX: y' })).toThrow(ConfigError)
})

test('defaults and retry delays', () => {
  const config = parseConfig(Env, required)
  expect(config.PORT).toBe(4004)
  expect(config.MAIL_REPLY_TO).toBeUndefined()
  expect(retryDelays(config)).toEqual([5000, 30000, 120000, 600000, 1800000])
  expect(retryDelays(parseConfig(Env, { ...required, NOTIFICATION_RETRY_DELAYS_MS: '10,20' }))).toEqual([
    10, 20,
  ])
  expect(() => parseConfig(Env, { ...required, NOTIFICATION_RETRY_DELAYS_MS: '10,,20' })).toThrow(ConfigError)
})
