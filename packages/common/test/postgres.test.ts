import { afterAll, beforeAll, expect, test } from 'bun:test'
import { createTestDatabase, type TestDatabase } from '@parley/testkit'
import { createPostgres } from '../src/postgres'

let database: TestDatabase

beforeAll(async () => {
  database = await createTestDatabase()
})

afterAll(async () => {
  await database.drop()
})

test('a statement running past statementTimeoutMs is cancelled; a short one on the same pool works', async () => {
  const pg = createPostgres(database.url, { schema: {}, max: 1, statementTimeoutMs: 200 })
  try {
    // Settled by hand: bun's `expect(…).rejects` spins on postgres.js's lazy query thenables.
    const failure = await pg.sql`select pg_sleep(2)`.then(
      () => 'finished',
      (error: unknown) => error,
    )
    // 57014 query_canceled: PostgreSQL ended it, not a client-side timer.
    expect(failure).toMatchObject({ code: '57014' })
    const [row] = await pg.sql<{ done: number }[]>`select 1 as done from pg_sleep(0.01)`
    expect(row?.done).toBe(1)
    const [setting] = await pg.sql<{ statement_timeout: string }[]>`show statement_timeout`
    expect(setting?.statement_timeout).toBe('200ms')
  } finally {
    await pg.close()
  }
})

test('every pool has a statement timeout of 10 s unless told otherwise', async () => {
  const pg = createPostgres(database.url, { schema: {}, max: 1 })
  try {
    const [setting] = await pg.sql<{ statement_timeout: string }[]>`show statement_timeout`
    expect(setting?.statement_timeout).toBe('10s')
  } finally {
    await pg.close()
  }
})
