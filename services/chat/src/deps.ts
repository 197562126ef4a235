import {
  type AccessTokenVerifier,
  eventBusFor,
  type Metrics,
  type Runtime,
  redisFor,
  verifierFor,
} from '@parley/common'
import type { EventBus } from '@parley/common/events'
import { createMongo, MongoOutbox, MongoOutboxRelay } from '@parley/common/mongo'
import type { Redis } from '@parley/common/redis'
import type { Db } from 'mongodb'
import type { AppDeps } from './app'
import { ChatCache } from './cache'
import type { Config } from './config'
import { chatCollections, ensureIndexes } from './db'
import { ConversationService, EVENT_SOURCE, type RelayKick } from './modules/conversations/service'
import { ConversationStore } from './modules/conversations/store'
import { MessageService } from './modules/messages/service'
import { subscribeUserProjection } from './modules/users/consumer'
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
export function chatServices(db: Db, cache: ChatCache, relay: RelayKick, metrics: Metrics) {
  const collections = chatCollections(db)
  const users = new UserDirectory(collections.users)
  const store = new ConversationStore(collections.conversations, collections.messages, cache)
  const outbox = new MongoOutbox(db)
  return {
    users,
    conversations: new ConversationService(collections.conversations, store, users, outbox, relay),
    messages: new MessageService(collections.messages, store, cache, outbox, relay, metrics),
  }
}

/** Connects what the chat service needs and registers how to release it on shutdown. */
export async function connect(
  config: Config,
  runtime: Runtime,
  options: ConnectOptions = {},
): Promise<ChatDeps> {
  const { logger, metrics, lifecycle } = runtime

  const mongo = createMongo(config.MONGO_URL, config.MONGO_DB)
  lifecycle.onClose('mongodb', () => mongo.close())
  // Also `migrate`'s job; repeated here (idempotent) so a dev process needs no separate step.
  // In the background, retried: the process must come up (and be live) while MongoDB is not.
  void (async () => {
    for (let attempt = 1; !lifecycle.shuttingDown; attempt++) {
      try {
        return await ensureIndexes(mongo.db)
      } catch (error) {
        logger.warn(
          { err: error instanceof Error ? error.message : String(error), attempt },
          'index creation failed, retrying',
        )
        await Bun.sleep(Math.min(attempt * 1000, 10_000))
      }
    }
  })()

  const redis = redisFor(config, runtime, options.redisKeyPrefix)

  const bus = eventBusFor(config, runtime, EVENT_SOURCE)

  const relay = new MongoOutboxRelay(mongo.db, bus, logger, metrics)
  const cache = new ChatCache(redis, metrics, logger, config.CHAT_CACHE_TTL_SECONDS)
  const { users, conversations, messages } = chatServices(mongo.db, cache, relay, metrics)

  await subscribeUserProjection(bus, mongo.db, users)
  await bus.start()
  if (options.relay !== false) {
    relay.start()
    lifecycle.onDrain('outbox relay', () => relay.stop())
  }

  return {
    runtime,
    config,
    readiness: [
      { name: 'mongodb', check: mongo.check },
      // The cache is bypassed and the outbox holds events while these are down.
      { name: 'redis', check: () => redis.ping(), critical: false },
      { name: 'rabbitmq', check: () => bus.check(), critical: false },
    ],
    verifier: options.verifier ?? verifierFor(config),
    conversations,
    messages,
    db: mongo.db,
    redis,
    bus,
    relay,
    users,
  }
}
