// Notification inbox reads: does the cost of a page depend on how many notifications a user has?
// Seeds one user with BENCH_NOTIFICATIONS notifications (default 100000, all but 10 read) among
// other users' rows, and a baseline user with 30, then times GET /notifications (first page, a
// page from the middle, unread only) and GET /notifications/unread-count through the whole app
// (routing, token verification, validation, SQL) against the real PostgreSQL.
//   bun bench/notification/inbox.ts            BENCH_NOTIFICATIONS=1000000 bun bench/notification/inbox.ts

import { AccessTokenVerifier } from '../../packages/common/src/auth.ts'
import { createRuntime, parseConfig } from '../../packages/common/src/index.ts'
import { createPostgres } from '../../packages/common/src/postgres.ts'
import {
  createTestDatabase,
  createTestSigner,
  testInfra,
  testLogger,
} from '../../packages/testkit/src/index.ts'
import { buildApp } from '../../services/notification/src/app.ts'
import { Env } from '../../services/notification/src/config.ts'
import { MIGRATIONS } from '../../services/notification/src/db/index.ts'
import { notifications as notificationsTable, schema } from '../../services/notification/src/db/schema.ts'
import { NotificationService } from '../../services/notification/src/modules/notifications/service.ts'
import { UserDirectory } from '../../services/notification/src/modules/users/service.ts'

const total = Number(process.env.BENCH_NOTIFICATIONS ?? 100_000)
const iterations = Number(process.env.BENCH_ITERATIONS ?? 300)
const noiseUsers = 50

const database = await createTestDatabase(MIGRATIONS)
const postgres = createPostgres(database.url, { schema, max: 4 })
try {
  const signer = await createTestSigner()
  const runtime = createRuntime('notification', 'silent', testLogger())
  const config = parseConfig(Env, {
    DATABASE_URL: database.url,
    JWKS_URL: 'http://127.0.0.1:1/unused',
    SMTP_URL: `smtp://${testInfra.smtpHost}:${testInfra.smtpPort}`,
  })
  const notifications = new NotificationService(postgres.db, new UserDirectory(postgres.db), runtime.metrics)
  const app = buildApp({
    runtime,
    config,
    readiness: [],
    verifier: new AccessTokenVerifier({
      jwks: signer.jwks,
      issuer: signer.issuer,
      audience: signer.audience,
    }),
    notifications,
  })

  const big = Bun.randomUUIDv7()
  const small = Bun.randomUUIDv7()
  const others = Array.from({ length: noiseUsers }, () => Bun.randomUUIDv7())
  const payload = {
    conversationId: 'c',
    messageId: 'm',
    senderId: others[0],
    senderName: 'Bench',
    preview: 'A message preview of a typical length, long enough to look like chat.',
    sentAt: new Date().toISOString(),
  }
  console.log(
    `seeding ${total} notifications for one user (+${total} for ${noiseUsers} others, 30 for the baseline user)…`,
  )
  const seedStarted = performance.now()
  const batch = 4000
  let bigIds: string[] = []
  for (let done = 0; done < total; done += batch) {
    const rows = []
    for (let index = done; index < Math.min(total, done + batch); index++) {
      // Interleaved with other users' rows, as a shared table is in production.
      const id = Bun.randomUUIDv7()
      bigIds.push(id)
      rows.push({
        id,
        userId: big,
        type: 'message.received',
        payload,
        readAt: index < total - 10 ? new Date() : null,
      })
      rows.push({
        id: Bun.randomUUIDv7(),
        userId: others[index % noiseUsers] ?? big,
        type: 'message.received',
        payload,
      })
    }
    await postgres.db.insert(notificationsTable).values(rows)
  }
  await postgres.db.insert(notificationsTable).values(
    Array.from({ length: 30 }, () => ({
      id: Bun.randomUUIDv7(),
      userId: small,
      type: 'message.received',
      payload,
    })),
  )
  await postgres.sql`analyze notifications`
  console.log(`seeded in ${((performance.now() - seedStarted) / 1000).toFixed(1)} s`)

  const middleCursor = Buffer.from(bigIds[Math.floor(total / 2)] ?? '').toString('base64url')
  bigIds = []
  const tokens = { big: await signer.sign({ sub: big }), small: await signer.sign({ sub: small }) }

  async function time(path: string, token: string, count = iterations) {
    const request = () =>
      app.handle(new Request(`http://localhost${path}`, { headers: { authorization: `Bearer ${token}` } }))
    const samples: number[] = []
    for (let index = 0; index < count; index++) {
      const started = performance.now()
      const response = await request()
      await response.arrayBuffer()
      samples.push(performance.now() - started)
      if (response.status !== 200) throw new Error(`${path}: ${response.status}`)
    }
    samples.sort((a, b) => a - b)
    const at = (q: number) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] ?? 0
    return { p50: at(0.5), p95: at(0.95) }
  }

  const cases: [string, string, string][] = [
    ['first page, 30 in inbox (baseline)', '/notifications?limit=20', tokens.small],
    [`first page, ${total} in inbox`, '/notifications?limit=20', tokens.big],
    [`page from the middle, ${total} in inbox`, `/notifications?limit=20&cursor=${middleCursor}`, tokens.big],
    [`unread only (10 of ${total})`, '/notifications?unread=true&limit=20', tokens.big],
    ['unread count, 30 unread', '/notifications/unread-count', tokens.small],
    [`unread count, 10 unread of ${total}`, '/notifications/unread-count', tokens.big],
  ]
  // Warm every path (JIT, connection pool, plan cache) before timing the baseline.
  for (const [, path, token] of cases) await time(path, token, 50)
  const baseline = await time('/notifications?limit=20', tokens.small)
  console.log(`\n${iterations} sequential requests each, in-process app.handle (2-core shared machine)`)
  console.log('case'.padEnd(48), 'p50 ms'.padStart(8), 'p95 ms'.padStart(8), 'p50 / baseline'.padStart(16))
  for (const [name, path, token] of cases) {
    const result = name.includes('baseline') ? baseline : await time(path, token)
    console.log(
      name.padEnd(48),
      result.p50.toFixed(2).padStart(8),
      result.p95.toFixed(2).padStart(8),
      `${(result.p50 / baseline.p50).toFixed(2)}x`.padStart(16),
    )
  }
} finally {
  await postgres.close()
  await database.drop()
}
