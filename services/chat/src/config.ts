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
import { ObjectStoreEnv } from '@parley/common/objects'
import { RetentionEnv } from '@parley/common/retention'
import { type Static, Type as t } from '@sinclair/typebox'
import { ATTACHMENT_TYPE_PATTERN, DEFAULT_ATTACHMENT_TYPES } from './modules/attachments/types'

export const Env = envSchema({
  ...BaseEnv,
  ...MongoEnv,
  ...RedisEnv,
  ...AmqpEnv,
  ...OutboxEnv,
  ...JwtVerifyEnv,
  ...RetentionEnv,
  ...ObjectStoreEnv,
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
  CHAT_ATTACHMENT_MAX_BYTES: t.Integer({
    minimum: 1,
    default: 26_214_400,
    description: 'Largest attachment a user may declare and upload, in bytes (default 25 MiB)',
  }),
  CHAT_ATTACHMENT_CONTENT_TYPES: t.String({
    pattern: `^(${ATTACHMENT_TYPE_PATTERN})(,(${ATTACHMENT_TYPE_PATTERN}))*$`,
    default: DEFAULT_ATTACHMENT_TYPES,
    description: `Comma-separated allow-list of attachment content types, among those whose bytes chat can check: ${DEFAULT_ATTACHMENT_TYPES}`,
  }),
  CHAT_ATTACHMENT_UPLOAD_URL_SECONDS: t.Integer({
    minimum: 1,
    maximum: 3600,
    default: 300,
    description: 'Lifetime of a presigned upload (PUT) URL',
  }),
  CHAT_ATTACHMENT_DOWNLOAD_URL_SECONDS: t.Integer({
    minimum: 1,
    maximum: 86_400,
    default: 300,
    description: 'Lifetime of the presigned download (GET) URLs in message views',
  }),
  CHAT_ATTACHMENT_ORPHAN_SECONDS: t.Integer({
    minimum: 1,
    default: 86_400,
    description:
      'Age after which an upload never attached to a message is deleted (by the retention pass, every RETENTION_INTERVAL_MS)',
  }),
  CHAT_ATTACHMENT_DAILY_COUNT: t.Integer({
    minimum: 1,
    default: 200,
    description: 'Attachments one user may create per UTC day (429 past it)',
  }),
  CHAT_ATTACHMENT_DAILY_BYTES: t.Integer({
    minimum: 1,
    default: 1_073_741_824,
    description: 'Declared attachment bytes one user may create per UTC day (429 past it; default 1 GiB)',
  }),
})

export type Config = Static<typeof Env>
