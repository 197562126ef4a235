import { afterAll, beforeAll, expect, test } from 'bun:test'
import { createTestMongo, type TestMongo } from '@parley/testkit'
import { BULK_WRITE_CHUNK, bulkWriteChunked, createMongo, type MongoHandle } from '../src/mongo'

let database: TestMongo
let mongo: MongoHandle

beforeAll(async () => {
  database = createTestMongo()
  mongo = createMongo(database.url, database.dbName)
})

afterAll(async () => {
  await mongo.close()
  await database.drop()
})

// FerretDB 1.24 on PostgreSQL holds a pooled connection per operation of a bulk until the bulk
// ends: one bulkWrite of 100 updates (more than its pool of 50) never returns and leaves the
// server answering nobody. In chunks it completes, on FerretDB and MongoDB alike.
test('a bulk of many more updates than FerretDB’s connection pool completes in chunks', async () => {
  const documents = mongo.db.collection<{ _id: string; seq?: number }>('bulk')
  await documents.insertMany(Array.from({ length: 300 }, (_, index) => ({ _id: `d${index}` })))
  const operations = Array.from({ length: 300 }, (_, index) => ({
    updateOne: { filter: { _id: `d${index}` }, update: { $set: { seq: index } } },
  }))
  expect(operations.length).toBeGreaterThan(BULK_WRITE_CHUNK * 10)
  const result = await bulkWriteChunked(documents, operations, { ordered: false })
  expect(result.modifiedCount).toBe(300)
  expect(await documents.countDocuments({ seq: { $exists: true } })).toBe(300)
})
