import { afterAll, beforeAll, expect, setDefaultTimeout, test } from 'bun:test'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createTestDatabase, type TestDatabase, waitFor } from '@parley/testkit'
import postgres from 'postgres'
import { type ConcurrentIndex, runMigrations } from '../src/postgres'

// Real servers on a shared 2-core machine (Bun's default is 5 s).
setDefaultTimeout(30_000)

let folder: string
let database: TestDatabase
let sql: postgres.Sql

/** A drizzle-kit migrations folder with one migration creating `items`. */
function writeMigrations(): string {
  const dir = mkdtempSync(join(tmpdir(), 'parley-migrations-'))
  mkdirSync(join(dir, 'meta'))
  writeFileSync(
    join(dir, 'meta', '_journal.json'),
    JSON.stringify({
      version: '7',
      dialect: 'postgresql',
      entries: [{ idx: 0, version: '7', when: 1_700_000_000_000, tag: '0000_items', breakpoints: true }],
    }),
  )
  writeFileSync(
    join(dir, '0000_items.sql'),
    'CREATE TABLE "items" ("id" serial PRIMARY KEY, "code" text NOT NULL, "created_at" timestamptz DEFAULT now() NOT NULL);',
  )
  return dir
}

beforeAll(async () => {
  folder = writeMigrations()
  database = await createTestDatabase()
  sql = postgres(database.url, { max: 3, onnotice: () => undefined })
})

afterAll(async () => {
  await sql?.end()
  await database?.drop()
  rmSync(folder, { recursive: true, force: true })
})

async function indexState(name: string): Promise<{ valid: boolean; definition: string } | undefined> {
  const [row] = await sql<{ valid: boolean; definition: string }[]>`
    select i.indisvalid as valid, pg_get_indexdef(i.indexrelid) as definition
    from pg_index i join pg_class c on c.oid = i.indexrelid where c.relname = ${name}`
  return row
}

const byAge: ConcurrentIndex = { name: 'items_created_at_idx', on: 'items (created_at)' }

test('builds declared indexes concurrently after the migrations: writes to the table go on meanwhile', async () => {
  await runMigrations(database.url, folder)
  // An open writing transaction: a CONCURRENTLY build waits for it to end; a plain CREATE INDEX
  // would too, but would also queue every later write behind its lock.
  const reserved = await sql.reserve()
  await reserved`begin`
  await reserved`insert into items (code) values ('open')`
  let migrated = false
  const migration = runMigrations(database.url, folder, [byAge]).then(() => {
    migrated = true
  })
  try {
    await waitFor(
      async () =>
        (
          await sql`select 1 from pg_stat_activity
            where query ilike 'create index concurrently%' and wait_event_type = 'Lock'`
        ).length > 0,
      { what: 'the build waiting for the open transaction' },
    )
    // Another write while the build is under way: not blocked.
    await sql`insert into items (code) values ('during the build')`
    expect(migrated).toBe(false)
  } finally {
    await reserved`commit`
    reserved.release()
  }
  await migration
  expect(await indexState(byAge.name)).toEqual({
    valid: true,
    definition: 'CREATE INDEX items_created_at_idx ON public.items USING btree (created_at)',
  })
})

test('is idempotent: a second run keeps the one valid index', async () => {
  await runMigrations(database.url, folder, [byAge])
  await runMigrations(database.url, folder, [byAge])
  const rows = await sql`select 1 from pg_indexes where indexname = ${byAge.name}`
  expect(rows).toHaveLength(1)
  expect((await indexState(byAge.name))?.valid).toBe(true)
})

test('an INVALID leftover of a failed build is dropped and rebuilt', async () => {
  const unique: ConcurrentIndex = { name: 'items_code_key', on: 'items (code)', unique: true }
  await sql`insert into items (code) values ('twice'), ('twice')`
  // Duplicates: the build fails, leaving an INVALID index behind, and the migration fails with it.
  const failure = await runMigrations(database.url, folder, [unique]).then(
    () => 'migrated',
    (error: unknown) => error,
  )
  expect(failure).toMatchObject({ code: '23505' })
  expect((await indexState(unique.name))?.valid).toBe(false)

  await sql`delete from items where code = 'twice'`
  await runMigrations(database.url, folder, [unique])
  expect(await indexState(unique.name)).toEqual({
    valid: true,
    definition: 'CREATE UNIQUE INDEX items_code_key ON public.items USING btree (code)',
  })
})

test('two migrators at once: one builds, the other waits its turn, both succeed', async () => {
  const second: ConcurrentIndex = { name: 'items_code_created_idx', on: 'items (code, created_at)' }
  await Promise.all([
    runMigrations(database.url, folder, [second]),
    runMigrations(database.url, folder, [second]),
  ])
  expect((await indexState(second.name))?.valid).toBe(true)
})
