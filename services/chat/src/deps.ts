import {
  type AccessTokenVerifier,
  eventBusFor,
  type Logger,
  type Metrics,
  type Runtime,
  redisFor,
  verifierFor,
} from '@parley/common'
import type { EventBus } from '@parley/common/events'
import {
  MongoOutbox,
  MongoOutboxRelay,
  mongoFor,
  processedEventsMongoPurge,
  startMongoOutboxRelay,
} from '@parley/common/mongo'
import { type ObjectStore, objectStoreFor } from '@parley/common/objects'
import type { Redis } from '@parley/common/redis'
import { startRetention } from '@parley/common/retention'
import type { Db } from 'mongodb'
import type { AppDeps } from './app'
import { ChatCache } from './cache'
import type { Config } from './config'
import { chatCollections, ensureIndexes } from './db'
import { type AttachmentRules, AttachmentService } from './modules/attachments/service'
import { BlockService } from './modules/blocks/service'
import { ConversationService, EVENT_SOURCE } from './modules/conversations/service'
import { ConversationStore } from './modules/conversations/store'
import { DEFAULT_MESSAGE_RULES, type MessageRules, MessageService } from './modules/messages/service'
import { PinService } from './modules/pins/service'
import { ReactionService } from './modules/reactions/service'
import { subscribeUserProjection } from './modules/users/consumers'
import { UserDirectory } from './modules/users/service'

export type ConnectOptions = {
  /** Defaults to one over the JWKS at JWKS_URL; tests pass one over a test key set. */
  verifier?: AccessTokenVerifier
  /** Namespace of this process's Redis keys (tests use one per file). */
  redisKeyPrefix?: string
  /** Run the outbox relay (default true); recovery tests write with it stopped. */
  relay?: boolean
}

/** What buildApp needs, plus the handles tests and benchmarks reach into. */
export type ChatDeps = AppDeps & {
  db: Db
  redis: Redis
  bus: EventBus
  relay: MongoOutboxRelay
  users: UserDirectory
  objects: ObjectStore
}

/** What the configuration decides about messages (defaults: the configuration's). */
export type ChatRules = MessageRules & { maxReactionsPerMessage: number }

export const DEFAULT_CHAT_RULES: ChatRules = { ...DEFAULT_MESSAGE_RULES, maxReactionsPerMessage: 20 }

export function chatRulesOf(config: Config): ChatRules {
  return {
    editWindowMs: config.CHAT_MESSAGE_EDIT_WINDOW_SECONDS * 1000,
    maxReactionsPerMessage: config.CHAT_MAX_REACTIONS_PER_MESSAGE,
  }
}

export function attachmentRulesOf(config: Config): AttachmentRules {
  return {
    maxBytes: config.CHAT_ATTACHMENT_MAX_BYTES,
    contentTypes: new Set(config.CHAT_ATTACHMENT_CONTENT_TYPES.split(',')),
    uploadUrlSeconds: config.CHAT_ATTACHMENT_UPLOAD_URL_SECONDS,
    downloadUrlSeconds: config.CHAT_ATTACHMENT_DOWNLOAD_URL_SECONDS,
    orphanMs: config.CHAT_ATTACHMENT_ORPHAN_SECONDS * 1000,
    dailyCount: config.CHAT_ATTACHMENT_DAILY_COUNT,
    dailyBytes: config.CHAT_ATTACHMENT_DAILY_BYTES,
  }
}

export type ChatServices = {
  users: UserDirectory
  conversations: ConversationService
  messages: MessageService
  /** Only with an object store (`files`). */
  attachments?: AttachmentService
}

/** What attachments need beyond MongoDB: the object store, Redis (daily quotas), their rules. */
export type AttachmentWiring = {
  objects: ObjectStore
  redis: Redis
  logger: Logger
  rules: AttachmentRules
}

/** The chat services over open clients: `connect` opens them; the benchmark brings its own. */
export function chatServices(
  db: Db,
  cache: ChatCache,
  outbox: MongoOutbox,
  metrics: Metrics,
  rules: ChatRules,
  files: AttachmentWiring,
): ChatServices & { attachments: AttachmentService }
export function chatServices(
  db: Db,
  cache: ChatCache,
  outbox: MongoOutbox,
  metrics: Metrics,
  rules?: ChatRules,
): ChatServices
export function chatServices(
  db: Db,
  cache: ChatCache,
  outbox: MongoOutbox,
  metrics: Metrics,
  rules: ChatRules = DEFAULT_CHAT_RULES,
  files?: AttachmentWiring,
): ChatServices {
  const collections = chatCollections(db)
  const users = new UserDirectory(collections.users, cache)
  const store = new ConversationStore(db, collections.conversations, collections.messages, cache, outbox)
  const attachments =
    files &&
    new AttachmentService(
      collections.attachments,
      store,
      files.objects,
      files.redis,
      metrics,
      files.logger,
      files.rules,
    )
  const reactions = new ReactionService(
    collections.reactions,
    collections.messages,
    store,
    outbox,
    metrics,
    rules.maxReactionsPerMessage,
  )
  const blocks = new BlockService(collections.blocks, users, outbox, metrics)
  return {
    users,
    conversations: new ConversationService(collections.conversations, store, users, outbox, blocks, metrics),
    messages: new MessageService(
      collections.messages,
      collections.conversations,
      store,
      cache,
      outbox,
      metrics,
      reactions,
      new PinService(collections.messages, store, reactions, metrics, attachments),
      rules,
      attachments,
    ),
    attachments,
  }
}

/** Connects what the chat service needs and registers how to release it on shutdown. */
export async function connect(
  config: Config,
  runtime: Runtime,
  options: ConnectOptions = {},
): Promise<ChatDeps> {
  const { logger, metrics } = runtime

  // Indexes are also `migrate`'s job; ensured here too (idempotent) so a dev process needs no separate step.
  const mongo = mongoFor(config, runtime, ensureIndexes)
  const redis = redisFor(config, runtime, options.redisKeyPrefix)

  const bus = eventBusFor(config, runtime, EVENT_SOURCE)

  // Recovery tests write with no relay running and nothing published directly.
  const relay =
    options.relay === false
      ? new MongoOutboxRelay(mongo.db, bus, logger, metrics)
      : startMongoOutboxRelay(mongo.db, bus, runtime, { maxAttempts: config.OUTBOX_MAX_ATTEMPTS })
  const outbox = new MongoOutbox(mongo.db, {
    relay,
    ...(options.relay !== false && { direct: { bus, runtime } }),
  })
  // Drains run before the broker and MongoDB clients close: confirms and deletes in flight finish.
  runtime.lifecycle.onDrain('outbox direct publishes', () => outbox.settled())
  const cache = new ChatCache(redis, metrics, logger, config.CHAT_CACHE_TTL_SECONDS)
  const objects = objectStoreFor(config)
  const { users, conversations, messages, attachments } = chatServices(
    mongo.db,
    cache,
    outbox,
    metrics,
    chatRulesOf(config),
    { objects, redis, logger, rules: attachmentRulesOf(config) },
  )

  await subscribeUserProjection(bus, mongo.db, users)
  await bus.start()
  startRetention(
    runtime,
    // Orphan uploads and the objects of deleted messages go with the other expired data.
    [processedEventsMongoPurge(mongo.db, config.PROCESSED_EVENTS_RETENTION_DAYS), attachments.sweepTarget()],
    config,
  )

  return {
    runtime,
    config,
    readiness: [
      { name: 'mongodb', check: mongo.check },
      // The cache is bypassed and the outbox holds events while these are down.
      { name: 'redis', check: () => redis.ping(), critical: false },
      { name: 'rabbitmq', check: () => bus.check(), critical: false },
      // Only attachments need it: messages go on while it is down (attachment calls answer 503).
      { name: 'object-store', check: () => objects.check(), critical: false },
    ],
    verifier: options.verifier ?? verifierFor(config, runtime),
    conversations,
    messages,
    attachments,
    objects,
    db: mongo.db,
    redis,
    bus,
    relay,
    users,
  }
}
