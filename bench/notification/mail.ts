// Email fan-out of one `message.sent`: how fast the pooled SMTP transport mails every offline
// recipient, by pool size. Each run mails BENCH_RECIPIENTS (default 100) recipients through
// MailService.onMessageSent (users projection and delivery ledger in PostgreSQL, presence and
// throttle in Redis) to the local SMTP sink; the baseline is a pool of one connection.
//   bun bench/notification/mail.ts            BENCH_RECIPIENTS=500 bun bench/notification/mail.ts
import { buildEvent } from '../../packages/common/src/events/index.ts'
import { createRuntime } from '../../packages/common/src/index.ts'
import { createPostgres } from '../../packages/common/src/postgres.ts'
import { closeRedis, createRedis } from '../../packages/common/src/redis.ts'
import {
  createTestDatabase,
  testInfra,
  testLogger,
  testRedisPrefix,
  uniqueName,
} from '../../packages/testkit/src/index.ts'
import { MIGRATIONS } from '../../services/notification/src/db/index.ts'
import { schema, users } from '../../services/notification/src/db/schema.ts'
import { EmailDeliveries } from '../../services/notification/src/modules/mail/deliveries.ts'
import { Mailer } from '../../services/notification/src/modules/mail/mailer.ts'
import { PresenceReader } from '../../services/notification/src/modules/mail/presence.ts'
import { MailService } from '../../services/notification/src/modules/mail/service.ts'
import {
  MessageEmailThrottle,
  RecipientEmailCap,
} from '../../services/notification/src/modules/mail/throttle.ts'
import { UserDirectory } from '../../services/notification/src/modules/users/service.ts'

const recipientsPerMessage = Number(process.env.BENCH_RECIPIENTS ?? 100)
const poolSizes = [1, 5, 10]
const rounds = Number(process.env.BENCH_ROUNDS ?? 3)

const database = await createTestDatabase(MIGRATIONS)
const postgres = createPostgres(database.url, { schema, max: 4 })
const logger = testLogger()
const redis = createRedis(testInfra.redisUrl, logger, { keyPrefix: testRedisPrefix() })
try {
  const sender = Bun.randomUUIDv7()
  await postgres.db
    .insert(users)
    .values({ id: sender, email: 'sender@parley.bench', displayName: 'Bench Sender', updatedAt: new Date() })
  const directory = new UserDirectory(postgres.db)

  async function run(maxConnections: number): Promise<number> {
    const mailer = new Mailer(
      {
        url: `smtp://${testInfra.smtpHost}:${testInfra.smtpPort}`,
        maxConnections,
        from: 'Parley Bench <no-reply@parley.bench>',
      },
      logger,
    )
    const service = new MailService({
      mailers: { bulk: mailer, transactional: mailer },
      deliveries: new EmailDeliveries(postgres.db),
      directory,
      presence: new PresenceReader(redis),
      throttle: new MessageEmailThrottle(redis),
      // Every recipient is new each round: the per-recipient cap never applies.
      cap: new RecipientEmailCap(redis, 1),
      metrics: createRuntime('bench', 'silent', logger).metrics,
      logger,
    })
    const samples: number[] = []
    for (let round = 0; round < rounds; round++) {
      const recipients = Array.from({ length: recipientsPerMessage }, () => {
        const email = `${uniqueName('bench')}@parley.bench`
        // Verified: only verified addresses get new-message email.
        return {
          id: Bun.randomUUIDv7(),
          email,
          verifiedEmail: email,
          displayName: 'Recipient',
          updatedAt: new Date(),
        }
      })
      await postgres.db.insert(users).values(recipients)
      const event = buildEvent('parley/bench', 'message.sent', {
        messageId: Bun.randomUUIDv7(),
        conversationId: Bun.randomUUIDv7(),
        senderId: sender,
        recipientIds: recipients.map((recipient) => recipient.id),
        preview: 'A message preview of a typical length, long enough to look like chat.',
        createdAt: new Date().toISOString(),
      })
      const started = performance.now()
      await service.onMessageSent(event)
      samples.push((recipientsPerMessage / (performance.now() - started)) * 1000)
    }
    mailer.close()
    samples.sort((a, b) => a - b)
    return samples[Math.floor(samples.length / 2)] ?? 0
  }

  await run(1) // warm-up: JIT, database pool, sink connections
  console.log(
    `${rounds} rounds of one message.sent to ${recipientsPerMessage} offline recipients each, median, local SMTP sink (2-core shared machine)`,
  )
  console.log('SMTP pool'.padEnd(16), 'emails/s'.padStart(10), 'vs pool of 1'.padStart(14))
  let baseline = 0
  for (const size of poolSizes) {
    const rate = await run(size)
    if (size === 1) baseline = rate
    console.log(
      `${size} connection${size === 1 ? '' : 's'}`.padEnd(16),
      rate.toFixed(0).padStart(10),
      `${(rate / baseline).toFixed(2)}x`.padStart(14),
    )
  }
} finally {
  await closeRedis(redis)
  await postgres.close()
  await database.drop()
}
