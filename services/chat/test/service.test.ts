import { afterAll, beforeAll, expect, test } from 'bun:test'
import { ConfigError, parseConfig } from '@parley/common'
import { isFerretDB } from '@parley/common/mongo'
import { Problem } from '@parley/contracts'
import { createTestMongo, testInfra } from '@parley/testkit'
import { MongoClient } from 'mongodb'
import { Env } from '../src/config'
import { migrate } from '../src/db'
import { createHarness, type Harness } from './harness'

let chat: Harness

beforeAll(async () => {
  chat = await createHarness()
})

afterAll(() => chat.close())

test('health, metrics and an OpenAPI document with every chat route', async () => {
  expect((await chat.app.handle(new Request('http://localhost/health'))).status).toBe(200)
  expect(await chat.metricsText()).toContain('http_request_duration_seconds')
  const doc = (await (await chat.app.handle(new Request('http://localhost/docs/json'))).json()) as {
    paths: Record<string, Record<string, unknown>>
  }
  const routes = Object.entries(doc.paths).flatMap(([path, methods]) =>
    Object.keys(methods).map((method) => `${method.toUpperCase()} ${path}`),
  )
  expect(routes.sort()).toEqual(
    [
      'POST /conversations',
      'GET /conversations',
      'GET /conversations/{id}',
      'PATCH /conversations/{id}',
      'POST /conversations/{id}/participants',
      'DELETE /conversations/{id}/participants/me',
      'POST /conversations/{id}/messages',
      'GET /conversations/{id}/messages',
      'POST /conversations/{id}/read',
      'DELETE /conversations/{id}/participants/{userId}',
      'PUT /conversations/{id}/participants/{userId}/role',
      'PATCH /conversations/{id}/messages/{messageId}',
      'DELETE /conversations/{id}/messages/{messageId}',
      'PUT /conversations/{id}/messages/{messageId}/reactions/{emoji}',
      'DELETE /conversations/{id}/messages/{messageId}/reactions/{emoji}',
      'GET /conversations/{id}/messages/{messageId}/replies',
      'PUT /conversations/{id}/mute',
      'DELETE /conversations/{id}/mute',
      'GET /conversations/blocks',
      'PUT /conversations/blocks/{userId}',
      'DELETE /conversations/blocks/{userId}',
      'GET /conversations/{id}/pins',
      'PUT /conversations/{id}/pins/{messageId}',
      'DELETE /conversations/{id}/pins/{messageId}',
      'POST /attachments',
      'POST /attachments/{id}/complete',
      'GET /attachments/{id}',
    ].sort(),
  )
})

test('every chat route documents its problem answers with the shared Problem schema', async () => {
  type Operation = {
    security?: unknown[]
    responses: Record<string, { content?: Record<string, { schema?: { $id?: string } }> }>
  }
  const doc = (await (await chat.app.handle(new Request('http://localhost/docs/json'))).json()) as {
    paths: Record<string, Record<string, Operation>>
  }
  const problemSchema = (operation: Operation | undefined, status: string) =>
    operation?.responses[status]?.content?.['application/json']?.schema?.$id
  const operations = Object.values(doc.paths).flatMap((methods) => Object.values(methods))
  expect(operations).toHaveLength(27)
  for (const operation of operations) {
    expect(operation.security).toEqual([{ bearer: [] }])
    expect(problemSchema(operation, '401')).toBe(Problem.$id)
  }
  const messages = doc.paths['/conversations/{id}/messages']
  for (const operation of [messages?.post, messages?.get, doc.paths['/conversations/{id}/read']?.post])
    for (const status of ['404', '422']) expect(problemSchema(operation, status)).toBe(Problem.$id)
  // Direct conversations, mute, block, threads and pins document their refusals too.
  const documented: [Operation | undefined, string[]][] = [
    [doc.paths['/conversations']?.post, ['403', '409', '422']],
    [doc.paths['/conversations/{id}/participants']?.post, ['403', '409']],
    [doc.paths['/conversations/{id}/mute']?.put, ['404', '422']],
    [doc.paths['/conversations/{id}/mute']?.delete, ['404', '422']],
    [doc.paths['/conversations/blocks/{userId}']?.put, ['422']],
    [doc.paths['/conversations/blocks/{userId}']?.delete, ['422']],
    [doc.paths['/conversations/{id}/messages/{messageId}/replies']?.get, ['404', '422']],
    [doc.paths['/conversations/{id}/pins']?.get, ['404', '422']],
    [doc.paths['/conversations/{id}/pins/{messageId}']?.put, ['404', '409', '422']],
    [doc.paths['/conversations/{id}/pins/{messageId}']?.delete, ['404', '422']],
  ]
  for (const [operation, statuses] of documented)
    for (const status of statuses) expect(problemSchema(operation, status)).toBe(Problem.$id)
})

test('migrate creates the indexes on an empty database, idempotently', async () => {
  const mongo = createTestMongo()
  const config = parseConfig(Env, {
    MONGO_URL: mongo.url,
    MONGO_DB: mongo.dbName,
    JWKS_URL: 'http://127.0.0.1:9/unused',
  })
  const client = new MongoClient(testInfra.mongoUrl)
  try {
    await migrate(config)
    await migrate(config)
    const db = client.db(mongo.dbName)
    const messageIndexes = await db.collection('messages').indexes()
    expect(messageIndexes.find((index) => index.key.seq === 1)).toMatchObject({
      key: { conversationId: 1, seq: 1 },
      unique: true,
    })
    expect(messageIndexes.find((index) => index.key.idempotencyKey === 1)?.unique).toBe(true)
    // The conversation list index exists on MongoDB only (see ensureIndexes).
    // On FerretDB nothing creates the collection yet: listing its indexes is NamespaceNotFound.
    const conversationIndexes = await db
      .collection('conversations')
      .indexes()
      .catch((error: { code?: number }) => {
        if (error.code === 26) return []
        throw error
      })
    expect(conversationIndexes.some((index) => index.key.participantIds === 1)).toBe(!(await isFerretDB(db)))
  } finally {
    await client.close()
    await mongo.drop()
  }
})

test('configuration errors name the variable', () => {
  expect(() => parseConfig(Env, { JWKS_URL: 'http://127.0.0.1:9/x' })).toThrow(ConfigError)
  expect(() => parseConfig(Env, { JWKS_URL: 'http://127.0.0.1:9/x' })).toThrow('MONGO_URL')
  expect(() =>
    parseConfig(Env, { MONGO_URL: 'mongodb://x', JWKS_URL: 'http://x', CHAT_CACHE_TTL_SECONDS: '0' }),
  ).toThrow('CHAT_CACHE_TTL_SECONDS')
  const defaults = parseConfig(Env, { MONGO_URL: 'mongodb://x', JWKS_URL: 'http://x' })
  expect(defaults.CHAT_MESSAGE_EDIT_WINDOW_SECONDS).toBe(48 * 3600)
  expect(defaults.CHAT_MAX_REACTIONS_PER_MESSAGE).toBe(20)
  for (const [name, value] of [
    ['CHAT_MESSAGE_EDIT_WINDOW_SECONDS', '0'],
    ['CHAT_MAX_REACTIONS_PER_MESSAGE', 'many'],
  ] as const)
    expect(() => parseConfig(Env, { MONGO_URL: 'mongodb://x', JWKS_URL: 'http://x', [name]: value })).toThrow(
      name,
    )
})
