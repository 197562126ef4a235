import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import { opsApp } from '@parley/common'
import { buildEvent } from '@parley/common/events'
import { Problem } from '@parley/contracts'
import { jsonRequest } from '@parley/testkit'
import type { Notification, NotificationPage } from '../src/modules/notifications/model'
import { type Harness, newUserId, startHarness } from './harness'

// Real servers on a shared 2-core machine: give the pipelines time under load (Bun's default is 5 s).
setDefaultTimeout(30_000)

let h: Harness
const owner = newUserId()
const other = newUserId()
const sender = newUserId()
let ownerToken: string
let otherToken: string
let otherNotification: Notification

async function call(method: string, path: string, token?: string) {
  const response = await h.app.handle(
    jsonRequest(method, path, undefined, token ? { authorization: `Bearer ${token}` } : {}),
  )
  const text = await response.text()
  return {
    status: response.status,
    type: response.headers.get('content-type'),
    body: text ? JSON.parse(text) : null,
  }
}

/** Seeds through the consumer's own code path (no broker needed for API tests). */
async function seedMessages(recipientId: string, count: number) {
  for (let index = 0; index < count; index++) {
    await h.deps.notifications.onMessageSent(
      buildEvent('parley/chat', 'message.sent', {
        messageId: `m${index}`,
        conversationId: 'c1',
        senderId: sender,
        recipientIds: [recipientId],
        preview: `message ${index}`,
        createdAt: new Date().toISOString(),
      }),
    )
  }
}

beforeAll(async () => {
  h = await startHarness()
  ownerToken = await h.signer.sign({ sub: owner })
  otherToken = await h.signer.sign({ sub: other })
  await seedMessages(owner, 25)
  await seedMessages(other, 1)
  otherNotification = (await call('GET', '/notifications', otherToken)).body.items[0]
})

afterAll(async () => {
  await h?.close()
})

describe('authentication', () => {
  test.each([
    ['GET', '/notifications'],
    ['GET', '/notifications/unread-count'],
    ['POST', `/notifications/${newUserId()}/read`],
    ['POST', '/notifications/read-all'],
  ])('%s %s without a token answers 401 problem', async (method, path) => {
    const response = await call(method, path)
    expect(response.status).toBe(401)
    expect(response.type).toContain('application/problem+json')
  })

  test('a token from another signer answers 401', async () => {
    const { createTestSigner } = await import('@parley/testkit')
    const stranger = await createTestSigner()
    expect((await call('GET', '/notifications', await stranger.sign({ sub: owner }))).status).toBe(401)
  })
})

describe('GET /notifications', () => {
  test('pages newest first with an opaque cursor, only the caller’s notifications', async () => {
    const seen: Notification[] = []
    let cursor: string | null = null
    const sizes: number[] = []
    do {
      const query: string = cursor ? `?limit=10&cursor=${encodeURIComponent(cursor)}` : '?limit=10'
      const { status, body } = await call('GET', `/notifications${query}`, ownerToken)
      expect(status).toBe(200)
      const page = body as NotificationPage
      sizes.push(page.items.length)
      seen.push(...page.items)
      cursor = page.nextCursor
    } while (cursor)
    expect(sizes).toEqual([10, 10, 5])
    expect(new Set(seen.map((item) => item.id)).size).toBe(25)
    expect(seen.map((item) => (item.payload as { preview: string }).preview)).toEqual(
      Array.from({ length: 25 }, (_, index) => `message ${24 - index}`),
    )
    expect(seen.every((item) => item.type === 'message.received' && item.readAt === null)).toBe(true)
    expect(seen.some((item) => item.id === otherNotification.id)).toBe(false)
  })

  test('defaults to 20 per page', async () => {
    const { body } = await call('GET', '/notifications', ownerToken)
    expect(body.items).toHaveLength(20)
    expect(typeof body.nextCursor).toBe('string')
  })

  test.each(['limit=0', 'limit=101'])('?%s answers 422', async (query) => {
    // Elysia reports a coerced number out of range without its field name (type 'property'),
    // so only the status is asserted here.
    const { status, type } = await call('GET', `/notifications?${query}`, ownerToken)
    expect(status).toBe(422)
    expect(type).toContain('application/problem+json')
  })

  test.each([
    ['limit=ten', 'query.limit'],
    ['unread=maybe', 'query.unread'],
    ['cursor=not-a-cursor', 'query.cursor'],
    [`cursor=${'x'.repeat(600)}`, 'query.cursor'],
  ])('?%s answers 422 naming %s', async (query, field) => {
    const { status, type, body } = await call('GET', `/notifications?${query}`, ownerToken)
    expect(status).toBe(422)
    expect(type).toContain('application/problem+json')
    expect(body.errors.map((error: { field: string }) => error.field)).toContain(field)
  })
})

describe('marking read', () => {
  test('POST /notifications/:id/read marks one read, idempotently', async () => {
    const { body: page } = await call('GET', '/notifications?limit=3', ownerToken)
    const target: Notification = page.items[1]
    const first = await call('POST', `/notifications/${target.id}/read`, ownerToken)
    expect(first.status).toBe(200)
    expect(first.body.id).toBe(target.id)
    expect(typeof first.body.readAt).toBe('string')
    const again = await call('POST', `/notifications/${target.id}/read`, ownerToken)
    expect(again.body.readAt).toBe(first.body.readAt)

    const unread = (await call('GET', '/notifications?unread=true&limit=100', ownerToken))
      .body as NotificationPage
    expect(unread.items).toHaveLength(24)
    expect(unread.items.some((item) => item.id === target.id)).toBe(false)
    const read = (await call('GET', '/notifications?unread=false', ownerToken)).body as NotificationPage
    expect(read.items.map((item) => item.id)).toEqual([target.id])
  })

  test('someone else’s notification or an unknown id answers 404 and changes nothing', async () => {
    for (const id of [otherNotification.id, newUserId()]) {
      const { status, type, body } = await call('POST', `/notifications/${id}/read`, ownerToken)
      expect(status).toBe(404)
      expect(type).toContain('application/problem+json')
      expect(body.status).toBe(404)
    }
    const [row] = await h.sql`select read_at from notifications where id = ${otherNotification.id}`
    expect(row?.read_at).toBeNull()
  })

  test('a malformed id answers 422', async () => {
    const { status, body } = await call('POST', '/notifications/not-a-uuid/read', ownerToken)
    expect(status).toBe(422)
    expect(body.errors[0].field).toBe('params.id')
  })

  test('POST /notifications/read-all marks the rest read and reports how many', async () => {
    expect((await call('GET', '/notifications/unread-count', ownerToken)).body).toEqual({
      unread: 24,
      capped: false,
    })
    const { status, body } = await call('POST', '/notifications/read-all', ownerToken)
    expect(status).toBe(200)
    expect(body).toEqual({ markedRead: 24 })
    expect((await call('POST', '/notifications/read-all', ownerToken)).body).toEqual({ markedRead: 0 })
    expect((await call('GET', '/notifications/unread-count', ownerToken)).body).toEqual({
      unread: 0,
      capped: false,
    })
    expect((await call('GET', '/notifications?unread=true', ownerToken)).body).toEqual({
      items: [],
      nextCursor: null,
    })
    // Another user's notifications are untouched.
    expect((await call('GET', '/notifications/unread-count', otherToken)).body).toEqual({
      unread: 1,
      capped: false,
    })
  })
})

test('the OpenAPI document lists the notification routes', async () => {
  const { status, body } = await call('GET', '/docs/json')
  expect(status).toBe(200)
  expect(Object.keys(body.paths)).toEqual(
    expect.arrayContaining([
      '/notifications',
      '/notifications/unread-count',
      '/notifications/{id}/read',
      '/notifications/read-all',
    ]),
  )
})

test('every notification route documents 401 with the shared Problem schema', async () => {
  const { body } = await call('GET', '/docs/json')
  const operations = Object.values(
    body.paths as Record<
      string,
      Record<
        string,
        {
          security?: unknown[]
          responses: Record<string, { content?: Record<string, { schema?: { $id?: string } }> }>
        }
      >
    >,
  ).flatMap((methods) => Object.values(methods))
  expect(operations).toHaveLength(4)
  for (const operation of operations) {
    expect(operation.security).toEqual([{ bearer: [] }])
    expect(operation.responses['401']?.content?.['application/json']?.schema?.$id).toBe(Problem.$id)
  }
})

test('/ready (ops port) reports the database, Redis and the broker', async () => {
  h.runtime.lifecycle.markReady()
  const ready = await opsApp(h.runtime, h.deps.readiness).handle(new Request('http://localhost/ready'))
  expect(ready.status).toBe(200)
  expect(((await ready.json()) as { checks: unknown }).checks).toEqual({
    postgres: 'ok',
    redis: 'ok',
    broker: 'ok',
  })
})
