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

/** A comma-separated list of non-negative integers, e.g. `5000,30000,120000`. */
const MILLISECOND_LIST = '^[0-9]+(,[0-9]+)*$'

export const Env = envSchema({
  ...BaseEnv,
  ...PostgresEnv,
  ...RedisEnv,
  ...AmqpEnv,
  ...OutboxEnv,
  ...JwtVerifyEnv,
  ...RetentionEnv,
  ...portEnv('notification'),
  // No default: the URL may carry SMTP credentials, and a silently defaulted relay would only
  // surface as dead-lettered mail long after start-up.
  SMTP_URL: t.String({
    pattern: '^smtps?://',
    description: 'SMTP relay URL (smtp:// or smtps://, credentials in the URL), e.g. smtp://127.0.0.1:1025',
  }),
  SMTP_MAX_CONNECTIONS: t.Integer({
    minimum: 1,
    maximum: 100,
    default: 5,
    description: 'Pooled SMTP connections kept open to the relay',
  }),
  SMTP_TRANSACTIONAL_MAX_CONNECTIONS: t.Integer({
    minimum: 1,
    maximum: 100,
    default: 2,
    description:
      'SMTP connections of the separate pool for verification codes, so bulk email never delays them',
  }),
  MESSAGE_EMAIL_HOURLY_CAP: t.Integer({
    minimum: 1,
    default: 10,
    description:
      'New-message emails one recipient gets per sliding hour across all conversations; more are skipped (hourly_cap)',
  }),
  NOTIFICATION_RETENTION_DAYS: t.Integer({
    minimum: 1,
    default: 90,
    description: 'Age after which in-app notifications, read or not, are purged',
  }),
  EMAIL_DELIVERY_RETENTION_DAYS: t.Integer({
    minimum: 1,
    default: 30,
    description:
      'Age after which completed email delivery records are purged (a redelivery older than this could mail again)',
  }),
  MAIL_FROM: t.String({
    pattern: '^[^\\r\\n]*@[^\\r\\n]*$',
    default: 'Parley <no-reply@parley.localhost>',
    description: 'From header of every email, e.g. `Parley <no-reply@example.com>`',
  }),
  MAIL_REPLY_TO: t.Optional(
    t.String({
      pattern: '^[^\\r\\n]*@[^\\r\\n]*$',
      description: 'Reply-To header of every email (unset: none)',
    }),
  ),
  NOTIFICATION_RETRY_DELAYS_MS: t.String({
    pattern: MILLISECOND_LIST,
    default: '5000,30000,120000,600000,1800000',
    description:
      'Delays before each retry of a failed event (e.g. SMTP down), comma-separated; then dead-lettered. Changing it needs the retry queues re-created',
  }),
})

export type Config = Static<typeof Env>

export function retryDelays(config: Pick<Config, 'NOTIFICATION_RETRY_DELAYS_MS'>): number[] {
  return config.NOTIFICATION_RETRY_DELAYS_MS.split(',').map(Number)
}
