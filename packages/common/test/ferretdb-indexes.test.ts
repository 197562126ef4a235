import { afterAll, beforeAll, expect, test } from 'bun:test'
import { createTestMongo, type TestMongo, testInfra } from '@parley/testkit'
import postgres from 'postgres'
import { createMongo, isFerretDB, type MongoHandle } from '../src/mongo'

// scripts/ferretdb-postgresql.sql, as scripts/infra.sh installs it in FerretDB's PostgreSQL
// database: every index FerretDB creates gets a GIN twin that its pushed-down equality filters
// (`_jsonb->$1 @> $2`) can use. With a mongod, or FerretDB on SQLite (PARLEY_FERRETDB_HANDLER),
// there is nothing to twin, and the test says so.

const FERRETDB_DATABASE = process.env.PARLEY_FERRETDB_PG_DATABASE ?? 'parley_ferretdb'

let target: TestMongo
let mongo: MongoHandle
let sql: postgres.Sql

beforeAll(async () => {
  target = createTestMongo()
  mongo = createMongo(target.url, target.dbName)
  const url = new URL(testInfra.postgresAdminUrl)
  url.pathname = `/${FERRETDB_DATABASE}`
  sql = postgres(url.toString(), { max: 1, onnotice: () => undefined })
})

afterAll(async () => {
  await mongo.close()
  await target.drop()
  await sql.end()
})

/** FerretDB's table for a collection of the test database, or null when it is not on this PostgreSQL. */
async function tableOf(collection: string): Promise<string | null> {
  const [schema] = await sql`SELECT 1 FROM pg_namespace WHERE nspname = ${target.dbName}`.catch(() => [])
  if (!schema) return null
  const [row] = await sql.unsafe(
    `SELECT _jsonb->>'table' AS "table" FROM "${target.dbName}"._ferretdb_database_metadata WHERE _jsonb->>'_id' = $1`,
    [collection],
  )
  return (row?.table as string | undefined) ?? null
}

const indexesOf = async (table: string) =>
  (
    await sql`SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = ${target.dbName} AND tablename = ${table}`
  ).map((row) => ({ name: row.indexname as string, definition: row.indexdef as string }))

test('FerretDB on PostgreSQL: each index gets a GIN twin its equality filters use, dropped with it', async () => {
  const collection = mongo.db.collection<{ _id: string; conversationId: string; seqBlock: number }>(
    'messages',
  )
  await collection.createIndex({ conversationId: 1, seqBlock: 1 })
  await collection.insertMany(
    Array.from({ length: 500 }, (_, n) => ({ _id: `m${n}`, conversationId: `c${n % 50}`, seqBlock: n % 7 })),
  )
  if (!(await isFerretDB(mongo.db))) return // a real MongoDB: its own indexes answer every filter
  const table = await tableOf('messages')
  if (process.env.PARLEY_FERRETDB_HANDLER === 'sqlite') return expect(table).toBeNull()
  expect(table).not.toBeNull()
  const indexes = await indexesOf(table as string)
  const twins = indexes.filter((index) => index.definition.includes('USING gin'))
  // _id and (conversationId, seqBlock), each twinned on the same expressions.
  expect(twins.map((index) => index.definition.replace(/^.* USING gin /, '')).sort()).toEqual([
    "(((_jsonb -> '_id'::text)) jsonb_path_ops)",
    "(((_jsonb -> 'conversationId'::text)) jsonb_path_ops, ((_jsonb -> 'seqBlock'::text)) jsonb_path_ops)",
  ])

  // The statement FerretDB sends for find({conversationId, seqBlock}), planned with its parameters
  // (custom plans, as the database forces). Scans priced out: on 500 rows a scan may simply be
  // cheaper; what matters is that an index can answer it at all (without a twin none can).
  const text = await sql.begin(async (tx) => {
    await tx`SET LOCAL enable_seqscan = off`
    const plan = await tx.unsafe(
      `EXPLAIN SELECT _jsonb FROM "${target.dbName}"."${table}" WHERE _jsonb->$1 @> $2 AND _jsonb->$3 @> $4`,
      ['conversationId', '"c7"', 'seqBlock', '3'],
    )
    return plan.map((row) => row['QUERY PLAN']).join('\n')
  })
  expect(text).toContain('Bitmap Index Scan on gin_')
  expect(text).not.toContain('Seq Scan')

  await collection.dropIndex('conversationId_1_seqBlock_1')
  const left = await indexesOf(table as string)
  expect(left.filter((index) => index.definition.includes('USING gin'))).toHaveLength(1)
})
