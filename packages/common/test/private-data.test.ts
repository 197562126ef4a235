import { afterAll, beforeAll, expect, test } from 'bun:test'
import {
  createTestDatabase,
  createTestVhost,
  type TestDatabase,
  type TestVhost,
  waitFor,
} from '@parley/testkit'
import { sql } from 'drizzle-orm'
import { pgTable, text, uuid } from 'drizzle-orm/pg-core'
import { createLogger } from '../src/logger'
import { createPostgres } from '../src/postgres'
import { createRuntime } from '../src/runtime'
import { newBus, userRegistered } from './support'

const accounts = pgTable('accounts', {
  id: uuid('id').primaryKey(),
  email: text('email').notNull().unique(),
  passwordHash: text('password_hash').notNull(),
})

let database: TestDatabase
let vhost: TestVhost
let postgres: ReturnType<typeof createPostgres<{ accounts: typeof accounts }>>

beforeAll(async () => {
  database = await createTestDatabase()
  vhost = await createTestVhost()
  postgres = createPostgres(database.url, { schema: { accounts }, max: 2 })
  await postgres.db.execute(
    sql`create table accounts (id uuid primary key, email text not null unique, password_hash text not null)`,
  )
})

afterAll(async () => {
  await postgres.close()
  await database.drop()
  await vhost.drop()
})

/** A pino logger of the shared kind, writing its lines to memory. */
function capturedLogger(service: string) {
  const lines: string[] = []
  const logger = createLogger(service, 'debug', { write: (line: string) => void lines.push(line) })
  return { logger, output: () => lines.join('') }
}

/** Inserts the same email twice: the second insert fails with a unique violation (23505). */
async function duplicateInsert(email: string, passwordHash: string): Promise<Error> {
  await postgres.db.insert(accounts).values({ id: crypto.randomUUID(), email, passwordHash })
  try {
    await postgres.db.insert(accounts).values({ id: crypto.randomUUID(), email, passwordHash })
  } catch (error) {
    if (error instanceof Error) return error
    throw error
  }
  throw new Error('expected a unique violation')
}

test('a failed query logged through the shared logger writes no bound value, only its kind and code', async () => {
  const email = `leak-${crypto.randomUUID().slice(0, 8)}@private.example`
  const passwordHash = `$argon2id$v=19$m=19456,t=2,p=1$${crypto.randomUUID()}`
  const failure = await duplicateInsert(email, passwordHash)
  const badId = `not-a-uuid-${crypto.randomUUID().slice(0, 8)}`
  const castFailure = await postgres.db
    .select()
    .from(accounts)
    .where(sql`${accounts.id} = ${badId}`)
    .then(
      () => new Error('expected an invalid uuid'),
      (error: Error) => error,
    )

  const { logger, output } = capturedLogger('private-data-test')
  logger.error({ err: failure }, 'insert failed')
  logger.warn({ err: String(failure) }, 'insert failed, as a string')
  logger.error(failure, 'insert failed, the error alone')
  logger.error({ err: castFailure }, 'select failed')
  const written = output()

  for (const secret of [email, passwordHash, badId]) expect(written).not.toContain(secret)
  expect(written).not.toContain('insert into')
  expect(written).not.toContain('params:')
  expect(written).not.toContain('Key (email)')

  const logged = JSON.parse(written.split('\n')[0] ?? '{}') as { err: Record<string, unknown> }
  expect(logged.err.type).toBe('DrizzleQueryError')
  expect(logged.err.errorCode).toBe('23505')
  expect(logged.err.stack).toContain('    at ')
  const cause = logged.err.cause as Record<string, unknown>
  expect(cause.type).toBe('PostgresError')
  expect(cause.message).toBe('duplicate key value violates unique constraint "accounts_email_key"')
  expect(cause.constraint).toBe('accounts_email_key')
  expect(cause.table).toBe('accounts')
})

test("a failing consumer's dead letter carries the failure's kind and code, never its text", async () => {
  const { logger, output } = capturedLogger('private-data-bus')
  const runtime = createRuntime('private-data-bus', 'debug', logger)
  const bus = newBus(vhost.url, runtime)
  const queue = 'test.private.dead'
  const event = userRegistered({ email: `dl-${crypto.randomUUID().slice(0, 8)}@private.example` })
  const passwordHash = `$argon2id$v=19$${crypto.randomUUID()}`
  try {
    await bus.start()
    await bus.connected()
    await bus.subscribe({
      queue,
      retryDelaysMs: [],
      handlers: {
        // The effect is a real insert that violates the unique email, as a projection replaying would.
        'user.registered': async ({ data }) => {
          await duplicateInsert(data.email, passwordHash).then((error) => Promise.reject(error))
        },
      },
    })
    await bus.publish('user.registered', event)
    const [dead] = await waitFor(
      async () => {
        const messages = await vhost.getMessages(`${queue}.dead`, 5)
        return messages.length === 1 ? messages : undefined
      },
      { what: 'the dead letter' },
    )
    const headers = dead?.properties.headers ?? {}
    expect(headers['x-parley-reason']).toBe('failed')
    expect(headers['x-parley-error']).toBe('DrizzleQueryError')
    expect(headers['x-parley-error-code']).toBe('23505')
    const headerText = JSON.stringify(headers)
    for (const secret of [event.email, passwordHash, 'insert into', 'duplicate key'])
      expect(headerText).not.toContain(secret)
    // The event itself is still in the payload, for whoever replays it.
    expect(dead?.payload).toContain(event.userId)
    await waitFor(() => output().includes('handler failed, dead-lettered'), { what: 'the failure log line' })
    for (const secret of [event.email, passwordHash]) expect(output()).not.toContain(secret)
  } finally {
    await bus.close()
  }
})
