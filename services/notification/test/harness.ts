import { createRuntime, parseConfig, type Runtime } from '@parley/common'
import { buildEvent, EventBus } from '@parley/common/events'
import { closeRedis, createRedis, type Redis } from '@parley/common/redis'
import type { CloudEvent, EventData, EventType } from '@parley/contracts'
import {
  createTestDatabase,
  createTestSigner,
  createTestVhost,
  type TestDatabase,
  type TestVhost,
  testInfra,
  testLogger,
  testRedisPrefix,
  uniqueName,
  waitFor,
} from '@parley/testkit'
import postgres from 'postgres'
import { buildApp } from '../src/app'
import { type Config, Env } from '../src/config'
import { MIGRATIONS } from '../src/db'
import { connect, type NotificationDeps } from '../src/deps'
import { EMAIL_QUEUE, TRANSACTIONAL_EMAIL_QUEUE } from '../src/modules/mail/service'
import { INBOX_QUEUE } from '../src/modules/notifications/service'
import { USERS_QUEUE } from '../src/modules/users/consumers'

/** Which queue receives which event type (as bound in the consumers.ts of each module). */
const QUEUES_BY_TYPE: Partial<Record<EventType, string[]>> = {
  'user.registered': [USERS_QUEUE, EMAIL_QUEUE],
  'user.profile_updated': [USERS_QUEUE],
  'user.email_verification_requested': [TRANSACTIONAL_EMAIL_QUEUE],
  'user.email_verified': [USERS_QUEUE, EMAIL_QUEUE],
  'message.sent': [INBOX_QUEUE, EMAIL_QUEUE],
  'conversation.created': [INBOX_QUEUE],
}

export type Harness = {
  app: ReturnType<typeof buildApp>
  deps: NotificationDeps
  runtime: Runtime
  config: Config
  signer: Awaited<ReturnType<typeof createTestSigner>>
  /** Publishes like the producing services do (same exchange, this file's vhost). */
  publisher: EventBus
  /** Same key prefix as the service: writes presence keys as the gateway would. */
  redis: Redis
  /** Direct SQL on this file's database, for assertions. */
  sql: postgres.Sql
  db: TestDatabase
  vhost: TestVhost
  publish: <T extends EventType>(type: T, data: EventData<T>) => Promise<string>
  /** Publishes an envelope as is (the same one twice is a redelivery). */
  publishEvent: (event: CloudEvent) => Promise<void>
  /** Waits until every queue has settled (acknowledged or dead-lettered) everything published so far. */
  settled: () => Promise<void>
  /** Sum of a metric's values whose labels include `labels`. */
  metric: (name: string, labels?: Record<string, string>) => Promise<number>
  close: () => Promise<void>
}

/** The whole service against this file's own database, vhost and Redis prefix, and a real SMTP server. */
export async function startHarness(env: Record<string, string> = {}): Promise<Harness> {
  const [db, vhost, signer] = await Promise.all([
    createTestDatabase(MIGRATIONS),
    createTestVhost(),
    createTestSigner(),
  ])
  const prefix = testRedisPrefix()
  const config = parseConfig(Env, {
    DATABASE_URL: db.url,
    DATABASE_POOL_MAX: '5',
    REDIS_URL: testInfra.redisUrl,
    AMQP_URL: vhost.url,
    JWKS_URL: 'http://127.0.0.1:1/unused',
    SMTP_URL: `smtp://${testInfra.smtpHost}:${testInfra.smtpPort}`,
    MAIL_FROM: 'Parley Test <no-reply@parley.test>',
    MAIL_REPLY_TO: 'support@parley.test',
    NOTIFICATION_RETRY_DELAYS_MS: '100,200,400',
    SHUTDOWN_GRACE_MS: '2000',
    ...env,
  })
  const runtime = createRuntime('notification', 'silent', testLogger('notification'))
  const deps = await connect(config, runtime, { jwks: signer.jwks, redisKeyPrefix: prefix })
  await deps.bus.connected()
  const publisher = new EventBus({
    url: vhost.url,
    exchange: config.AMQP_EXCHANGE,
    source: 'parley/test',
    prefetch: 10,
    logger: testLogger(),
    metrics: createRuntime('test', 'silent', testLogger()).metrics,
  })
  await publisher.start()
  await publisher.connected()
  const redis = createRedis(testInfra.redisUrl, testLogger(), { keyPrefix: prefix })
  const sql = postgres(db.url, { max: 2, onnotice: () => undefined })

  const metric = async (name: string, labels: Record<string, string> = {}) => {
    const found = runtime.metrics.registry.getSingleMetric(name)
    if (!found) return 0
    const { values } = await found.get()
    return values
      .filter((value) => Object.entries(labels).every(([key, expected]) => value.labels[key] === expected))
      .reduce((sum, value) => sum + value.value, 0)
  }

  const published = new Map<string, number>()
  const publishEvent = async (event: CloudEvent) => {
    for (const queue of QUEUES_BY_TYPE[event.type] ?? [])
      published.set(queue, (published.get(queue) ?? 0) + 1)
    await publisher.publishEvent(event)
  }
  const settled = async () => {
    for (const [queue, count] of published) {
      await waitFor(
        async () => {
          const done =
            (await metric('events_consumed_total', { queue, outcome: 'ok' })) +
            (await metric('events_consumed_total', { queue, outcome: 'dead' }))
          return done >= count || undefined
        },
        { timeoutMs: 20_000, what: `${count} event(s) settled on ${queue}` },
      )
    }
  }

  return {
    app: buildApp(deps),
    deps,
    runtime,
    config,
    signer,
    publisher,
    redis,
    sql,
    db,
    vhost,
    publish: async (type, data) => {
      const event = buildEvent('parley/test', type, data)
      await publishEvent(event)
      return event.id
    },
    publishEvent,
    settled,
    metric,
    close: async () => {
      await publisher.close()
      await runtime.lifecycle.shutdown()
      await dropKeys(prefix)
      await closeRedis(redis)
      await sql.end()
      await Promise.all([db.drop(), vhost.drop()])
    },
  }
}

/** Deletes every key under this file's prefix (presence sets have no TTL). */
async function dropKeys(prefix: string): Promise<void> {
  const raw = createRedis(testInfra.redisUrl, testLogger())
  try {
    await new Promise((resolve) => raw.once('ready', resolve))
    let cursor = '0'
    do {
      const [next, keys] = await raw.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500)
      if (keys.length > 0) await raw.del(...keys)
      cursor = next
    } while (cursor !== '0')
  } finally {
    await closeRedis(raw)
  }
}

/** An address nobody else's test uses, so the shared SMTP sink's mailbox for it is ours. */
export function uniqueAddress(): string {
  return `${uniqueName('rcpt')}@parley.test`
}

export function newUserId(): string {
  return Bun.randomUUIDv7()
}

export function registered(
  userId: string,
  email: string,
  displayName: string,
  emailVerified = false,
): EventData<'user.registered'> {
  return {
    userId,
    email,
    displayName,
    emailVerified,
    roles: ['user'],
    createdAt: new Date().toISOString(),
  }
}
