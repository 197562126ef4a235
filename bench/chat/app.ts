// The chat app in the benchmark's own process (app.handle, no network) on a database of its own:
// what bench/chat/paging.ts and bench/chat/messaging.ts measure pages against. Not a test helper.
import { AccessTokenVerifier } from '../../packages/common/src/auth.ts'
import { createRuntime, parseConfig } from '../../packages/common/src/index.ts'
import { MongoOutbox } from '../../packages/common/src/mongo.ts'
import { closeRedis, createRedis } from '../../packages/common/src/redis.ts'
import {
  createTestMongo,
  type createTestSigner,
  testInfra,
  testLogger,
  testRedisPrefix,
} from '../../packages/testkit/src/index.ts'
import { MongoClient, type MongoClientOptions } from '../../services/chat/node_modules/mongodb'
import { buildApp } from '../../services/chat/src/app.ts'
import { ChatCache } from '../../services/chat/src/cache.ts'
import { Env } from '../../services/chat/src/config.ts'
import { ensureIndexes } from '../../services/chat/src/db/index.ts'
import { chatServices } from '../../services/chat/src/deps.ts'

export async function inProcessChat(
  signer: Awaited<ReturnType<typeof createTestSigner>>,
  clientOptions: MongoClientOptions = {},
) {
  const mongo = createTestMongo()
  const runtime = createRuntime('chat', 'silent', testLogger('chat'))
  const config = parseConfig(Env, {
    MONGO_URL: mongo.url,
    MONGO_DB: mongo.dbName,
    REDIS_URL: testInfra.redisUrl,
    JWKS_URL: 'http://127.0.0.1:9/unused',
  })
  // Its own client without the service's 10 s socket timeout: a FerretDB scan of 10^5 documents can take longer.
  const client = new MongoClient(mongo.url, { retryWrites: false, maxPoolSize: 20, ...clientOptions })
  const db = client.db(mongo.dbName)
  await ensureIndexes(db)
  const redis = createRedis(testInfra.redisUrl, runtime.logger, { keyPrefix: testRedisPrefix() })
  const cache = new ChatCache(redis, runtime.metrics, runtime.logger, config.CHAT_CACHE_TTL_SECONDS)
  // No outbox relay and no direct publishes: events stay staged (publishing would compete with the reads).
  const deps = { ...chatServices(db, cache, new MongoOutbox(db), runtime.metrics), db, redis }
  const app = buildApp({
    runtime,
    config,
    readiness: [],
    verifier: new AccessTokenVerifier({
      jwks: signer.jwks,
      issuer: signer.issuer,
      audience: signer.audience,
    }),
    conversations: deps.conversations,
    messages: deps.messages,
  })
  return {
    app,
    deps,
    client,
    async close() {
      await closeRedis(redis)
      await client.close()
      await mongo.drop()
    },
  }
}
