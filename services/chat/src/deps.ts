import {
  type AccessTokenVerifier,
  eventBusFor,
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
import type { Redis } from '@parley/common/redis'
import { startRetention } from '@parley/common/retention'
import type { Db } from 'mongodb'
import type { AppDeps } from './app'
import { ChatCache } from './cache'
import type { Config } from './config'
import { chatCollections, ensureIndexes } from './db'
import { ConversationService, EVENT_SOURCE } from './modules/conversations/service'
import { ConversationStore } from './modules/conversations/store'
import { MessageService } from './modules/messages/service'
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
}

/** The chat services over open clients: `connect` opens them; the benchmark brings its own. */
export function chatServices(db: Db, cache: ChatCache, outbox: MongoOutbox, metrics: Metrics) {
  const collections = chatCollections(db)
  const users = new UserDirectory(collections.users)
  const store = new ConversationStore(db, collections.conversations, collections.messages, cache, outbox)
  return {
    users,
    conversations: new ConversationService(collections.conversations, store, users, outbox),
    messages: new MessageService(
      collections.messages,
      collections.conversations,
      store,
      cache,
      outbox,
      metrics,
    ),
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
  const { users, conversations, messages } = chatServices(mongo.db, cache, outbox, metrics)

  await subscribeUserProjection(bus, mongo.db, users)
  await bus.start()
  startRetention(
    runtime,
    [processedEventsMongoPurge(mongo.db, config.PROCESSED_EVENTS_RETENTION_DAYS)],
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
    ],
    verifier: options.verifier ?? verifierFor(config, runtime),
    conversations,
    messages,
    db: mongo.db,
    redis,
    bus,
    relay,
    users,
  }
}
