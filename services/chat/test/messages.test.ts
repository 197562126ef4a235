import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { newId } from '@parley/common'
import type { Problem } from '@parley/contracts'
import { blockOf, type MessageDoc } from '../src/db'
import type { Conversation } from '../src/modules/conversations/model'
import type { Message, MessagePage, ReadReceipt } from '../src/modules/messages/model'
import { createHarness, type Harness } from './harness'

let chat: Harness
let alice: string
let bob: string
let carol: string
let mallory: string

beforeAll(async () => {
  chat = await createHarness()
  ;[alice, bob, carol, mallory] = await Promise.all([
    chat.newUser('Alice'),
    chat.newUser('Bob'),
    chat.newUser('Carol'),
    chat.newUser('Mallory'),
  ])
})

afterAll(() => chat.close())

const messages = () => chat.deps.db.collection<MessageDoc>('messages')

async function conversationOf(caller: string, others: string[]): Promise<string> {
  const reply = await chat.call<Conversation>(caller, 'POST', '/conversations', { participantIds: others })
  expect(reply.status).toBe(201)
  return reply.body.id
}

async function send(caller: string, conversationId: string, body: string, clientMessageId?: string) {
  return chat.call<Message>(caller, 'POST', `/conversations/${conversationId}/messages`, {
    body,
    ...(clientMessageId === undefined ? {} : { clientMessageId }),
  })
}

async function sendAll(caller: string, conversationId: string, count: number): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < count; i++) {
    const reply = await send(caller, conversationId, `message ${i}`)
    expect(reply.status).toBe(201)
    ids.push(reply.body.id)
  }
  return ids
}

const page = (caller: string, conversationId: string, query = '') =>
  chat.call<MessagePage>(caller, 'GET', `/conversations/${conversationId}/messages${query}`)

describe('POST /conversations/:id/messages', () => {
  test('stores the trimmed body and updates lastMessage', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const reply = await send(alice, conversationId, '  hello Bob  ')
    expect(reply.status).toBe(201)
    expect(reply.body).toMatchObject({
      conversationId,
      senderId: alice,
      body: 'hello Bob',
      clientMessageId: null,
    })
    expect(Date.parse(reply.body.createdAt)).toBeGreaterThan(Date.now() - 60_000)

    const conversation = await chat.call<Conversation>(bob, 'GET', `/conversations/${conversationId}`)
    expect(conversation.body.lastMessage).toEqual({
      id: reply.body.id,
      seq: 1,
      senderId: alice,
      preview: 'hello Bob',
      createdAt: reply.body.createdAt,
      deleted: false,
    })
    expect(conversation.body.unreadCount).toBe(1)
    expect(conversation.body.participants.find((p) => p.userId === alice)?.lastReadMessageId).toBe(
      reply.body.id,
    )
  })

  test('the preview is at most 200 characters, cut on a character boundary', async () => {
    const conversationId = await conversationOf(alice, [bob])
    await send(alice, conversationId, 'x'.repeat(500))
    const long = await chat.call<Conversation>(alice, 'GET', `/conversations/${conversationId}`)
    expect(long.body.lastMessage?.preview).toBe(`${'x'.repeat(199)}…`)

    await send(alice, conversationId, '😀'.repeat(150))
    const emoji = await chat.call<Conversation>(alice, 'GET', `/conversations/${conversationId}`)
    const preview = emoji.body.lastMessage?.preview ?? ''
    expect(preview.length).toBeLessThanOrEqual(200)
    expect(preview).toBe(`${'😀'.repeat(99)}…`)
  })

  test('body limits count characters after trimming', async () => {
    const conversationId = await conversationOf(alice, [bob])
    expect((await send(alice, conversationId, `  ${'é'.repeat(4000)}  `)).status).toBe(201)
    expect((await send(alice, conversationId, '😀'.repeat(4000))).status).toBe(201)
    for (const body of ['', '   \n\t ', 'a'.repeat(4001), 'nul \u0000 inside']) {
      const reply = await chat.call<Problem>(alice, 'POST', `/conversations/${conversationId}/messages`, {
        body,
      })
      expect(reply.status).toBe(422)
      expect(reply.body.errors?.[0]?.field).toBe('body.body')
    }
  })

  test('an edit to a blank body or one with U+0000 (the store refuses it) is 422 naming body.body', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const sent = await send(alice, conversationId, 'first')
    const messageId = (sent.body as { id: string }).id
    for (const body of ['', ' \u3000\n', 'ends with \u0000']) {
      const reply = await chat.call<Problem>(
        alice,
        'PATCH',
        `/conversations/${conversationId}/messages/${messageId}`,
        {
          body,
        },
      )
      expect(reply.status).toBe(422)
      expect(reply.body.errors?.[0]?.field).toBe('body.body')
    }
  })

  test('bad bodies and $-operators: 422, nothing written, nothing published', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const before = await messages().countDocuments()
    const bodies: unknown[] = [
      {},
      { body: { $gt: '' } },
      { body: ['hi'] },
      { body: 42 },
      { body: null },
      { body: 'ok', clientMessageId: { $ne: null } },
      { body: 'ok', clientMessageId: '' },
      { body: 'ok', clientMessageId: 'has space' },
      { body: 'ok', clientMessageId: 'x'.repeat(129) },
    ]
    for (const body of bodies) {
      const reply = await chat.call<Problem>(alice, 'POST', `/conversations/${conversationId}/messages`, body)
      expect(reply.status).toBe(422)
      expect(reply.body.errors?.[0]?.field).toStartWith('body')
    }
    // The event lives in the message document: no document, no event.
    expect(await messages().countDocuments()).toBe(before)
  })

  test('non-participants get 404 and write nothing; malformed ids 422; no token 401', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const before = await messages().countDocuments()
    const outsider = await chat.call<Problem>(mallory, 'POST', `/conversations/${conversationId}/messages`, {
      body: 'let me in',
    })
    expect(outsider.status).toBe(404)
    expect(outsider.body.title).toBe('Not Found')
    expect((await send(alice, Bun.randomUUIDv7(), 'nowhere')).status).toBe(404)
    const operatorId = encodeURIComponent('{"$ne":1}')
    expect((await send(alice, operatorId, 'x')).status).toBe(422)
    expect(
      (await chat.call(undefined, 'POST', `/conversations/${conversationId}/messages`, { body: 'x' })).status,
    ).toBe(401)
    expect(await messages().countDocuments()).toBe(before)
  })
})

describe('idempotent send', () => {
  test('the same clientMessageId returns the stored message: 201 then 200', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const first = await send(alice, conversationId, 'once', 'client-1')
    const again = await send(alice, conversationId, 'once', 'client-1')
    expect(first.status).toBe(201)
    expect(again.status).toBe(200)
    expect(again.body).toEqual(first.body)
    expect(first.body.clientMessageId).toBe('client-1')

    // The key is per sender and per conversation.
    const fromBob = await send(bob, conversationId, 'once', 'client-1')
    expect(fromBob.status).toBe(201)
    expect(fromBob.body.id).not.toBe(first.body.id)
    const elsewhere = await send(alice, await conversationOf(alice, [bob]), 'once', 'client-1')
    expect(elsewhere.status).toBe(201)
    expect(await messages().countDocuments({ conversationId })).toBe(2)
  })

  test('50 concurrent sends with one clientMessageId store exactly one message', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const replies = await Promise.all(
      Array.from({ length: 50 }, () => send(alice, conversationId, 'racing', 'race-1')),
    )
    const statuses = replies.map((reply) => reply.status).sort()
    expect(statuses.filter((status) => status === 201)).toHaveLength(1)
    expect(statuses.filter((status) => status === 200)).toHaveLength(49)
    expect(new Set(replies.map((reply) => reply.body.id)).size).toBe(1)
    expect(await messages().countDocuments({ conversationId })).toBe(1)
    const latest = await page(bob, conversationId)
    expect(latest.body.items).toHaveLength(1)
    const conversation = await chat.call<Conversation>(bob, 'GET', `/conversations/${conversationId}`)
    expect(conversation.body.unreadCount).toBe(1)
  })
  test('a retry repairs a conversation update lost to a crash after the insert', async () => {
    const conversationId = await conversationOf(alice, [bob])
    // The process died between inserting the message and updating the conversation.
    const orphan: MessageDoc = {
      _id: newId(),
      conversationId,
      seq: 1,
      seqBlock: blockOf(1),
      senderId: alice,
      body: 'half written',
      clientMessageId: 'crash-1',
      idempotencyKey: `${conversationId}:${alice}:crash-1`,
      createdAt: new Date(),
    }
    await messages().insertOne(orphan)
    const before = await chat.call<Conversation>(bob, 'GET', `/conversations/${conversationId}`)
    expect(before.body.lastMessage).toBeNull()

    const retry = await send(alice, conversationId, 'half written', 'crash-1')
    expect(retry.status).toBe(200)
    expect(retry.body.id).toBe(orphan._id)
    const after = await chat.call<Conversation>(bob, 'GET', `/conversations/${conversationId}`)
    expect(after.body.lastMessage?.id).toBe(orphan._id)
    expect(after.body.unreadCount).toBe(1)
    expect((await page(bob, conversationId)).body.items.map((m) => m.id)).toEqual([orphan._id])
  })
})

describe('GET /conversations/:id/messages', () => {
  test('latest page, then before and after cursors, oldest first, each message once', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const ids = await sendAll(alice, conversationId, 7)

    const latest = await page(bob, conversationId, '?limit=3')
    expect(latest.status).toBe(200)
    expect(latest.body.items.map((m) => m.id)).toEqual(ids.slice(4))
    expect(latest.body.nextCursor).toBe('5')
    const older = await page(bob, conversationId, `?limit=3&before=${latest.body.nextCursor}`)
    expect(older.body.items.map((m) => m.id)).toEqual(ids.slice(1, 4))
    const oldest = await page(bob, conversationId, `?limit=3&before=${older.body.nextCursor}`)
    expect(oldest.body.items.map((m) => m.id)).toEqual(ids.slice(0, 1))
    expect(oldest.body.nextCursor).toBeNull()

    // A message id (the cursor format of the previous version) still works.
    const forward = await page(bob, conversationId, `?limit=4&after=${ids[0]}`)
    expect(forward.body.items.map((m) => m.id)).toEqual(ids.slice(1, 5))
    expect(forward.body.items.map((m) => m.seq)).toEqual([2, 3, 4, 5])
    expect(forward.body.nextCursor).toBe('5')
    const fromStart = await page(bob, conversationId, '?limit=4&after=0')
    expect(fromStart.body.items.map((m) => m.id)).toEqual(ids.slice(0, 4))
    const oldBefore = await page(bob, conversationId, `?limit=2&before=${ids[3]}`)
    expect(oldBefore.body.items.map((m) => m.id)).toEqual(ids.slice(1, 3))
    const rest = await page(bob, conversationId, `?limit=4&after=${forward.body.nextCursor}`)
    expect(rest.body.items.map((m) => m.id)).toEqual(ids.slice(5))
    expect(rest.body.nextCursor).toBeNull()

    const all = await page(bob, conversationId)
    expect(all.body.items.map((m) => m.id)).toEqual(ids)
    expect(all.body.nextCursor).toBeNull()
    expect((await page(bob, await conversationOf(bob, [alice]))).body).toEqual({
      items: [],
      nextCursor: null,
    })
  })

  test('backward paging is stable while new messages arrive', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const ids = await sendAll(alice, conversationId, 9)
    const seen: string[] = []
    let reply = await page(bob, conversationId, '?limit=2')
    seen.unshift(...reply.body.items.map((m) => m.id))
    while (reply.body.nextCursor) {
      await send(bob, conversationId, 'interrupting')
      reply = await page(bob, conversationId, `?limit=2&before=${reply.body.nextCursor}`)
      seen.unshift(...reply.body.items.map((m) => m.id))
    }
    expect(seen).toEqual(ids)
  })

  test('bad cursors and limits: 422; non-participants 404', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const [id] = await sendAll(alice, conversationId, 1)
    const bad = [
      `?after=${id}&before=${id}`,
      '?after=nope',
      `?before=${encodeURIComponent('{"$gt":""}')}`,
      '?limit=0',
      '?limit=101',
      '?limit=ten',
    ]
    for (const query of bad) {
      const reply = await page(alice, conversationId, query)
      expect(reply.status).toBe(422)
      expect(reply.headers.get('content-type')).toContain('application/problem+json')
    }
    expect((await page(alice, conversationId, `?after=${id}&before=${id}`)).body).toMatchObject({
      errors: [{ field: 'query.before' }],
    })
    // Bracket syntax is not parsed into an object: an unknown key, not an operator on `after`.
    const bracket = await page(alice, conversationId, '?after[$gt]=&limit=5')
    expect(bracket.status).toBe(200)
    expect(bracket.body.items.map((m) => m.id)).toEqual([id ?? ''])
    expect((await page(mallory, conversationId)).status).toBe(404)
    expect((await page(mallory, conversationId, `?before=${id}`)).status).toBe(404)
    expect((await chat.call(undefined, 'GET', `/conversations/${conversationId}/messages`)).status).toBe(401)
  })
})

describe('POST /conversations/:id/read', () => {
  test('moves the read marker forward only and drives unreadCount', async () => {
    const conversationId = await conversationOf(alice, [bob, carol])
    const ids = await sendAll(alice, conversationId, 5)
    const unread = async (userId: string) =>
      (await chat.call<Conversation>(userId, 'GET', `/conversations/${conversationId}`)).body.unreadCount
    expect(await unread(bob)).toBe(5)

    const receipt = await chat.call<ReadReceipt>(bob, 'POST', `/conversations/${conversationId}/read`, {
      messageId: ids[1],
    })
    expect(receipt.status).toBe(200)
    expect(receipt.body).toEqual({
      conversationId,
      lastReadMessageId: ids[1] ?? '',
      lastReadSeq: 2,
      unreadCount: 3,
    })
    expect(await unread(bob)).toBe(3)
    expect(await unread(carol)).toBe(5)

    const backwards = await chat.call<ReadReceipt>(bob, 'POST', `/conversations/${conversationId}/read`, {
      messageId: ids[0],
    })
    expect(backwards.body.lastReadMessageId).toBe(ids[1] ?? '')
    expect(backwards.body.lastReadSeq).toBe(2)
    expect(backwards.body.unreadCount).toBe(3)

    // Bob's own messages never count as unread for him, and replying marks the rest read.
    await send(bob, conversationId, 'reply')
    expect(await unread(bob)).toBe(0)
    expect(await unread(carol)).toBe(6)
    const conversation = await chat.call<Conversation>(carol, 'GET', `/conversations/${conversationId}`)
    expect(conversation.body.participants.find((p) => p.userId === bob)?.lastReadMessageId).not.toBe(ids[1])
  })

  test('unreadCount is capped at 100', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const base = Date.now()
    await messages().insertMany(
      Array.from({ length: 110 }, (_, i) => ({
        _id: newId(),
        conversationId,
        seq: i + 1,
        seqBlock: blockOf(i + 1),
        senderId: alice,
        body: `bulk ${i}`,
        createdAt: new Date(base + i),
      })),
    )
    await send(alice, conversationId, 'and one more')
    const conversation = await chat.call<Conversation>(bob, 'GET', `/conversations/${conversationId}`)
    expect(conversation.body.unreadCount).toBe(100)
  })

  test('a message of another conversation or a bad id: 422; non-participants: 404', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const [otherMessage] = await sendAll(alice, await conversationOf(alice, [bob]), 1)
    const [ownMessage] = await sendAll(alice, conversationId, 1)
    const foreign = await chat.call<Problem>(bob, 'POST', `/conversations/${conversationId}/read`, {
      messageId: otherMessage,
    })
    expect(foreign.status).toBe(422)
    expect(foreign.body.errors).toEqual([
      { field: 'body.messageId', message: 'No such message in this conversation' },
    ])
    for (const messageId of [undefined, 'x', { $gt: '' }, 1]) {
      expect(
        (await chat.call(bob, 'POST', `/conversations/${conversationId}/read`, { messageId })).status,
      ).toBe(422)
    }
    const outsider = await chat.call(mallory, 'POST', `/conversations/${conversationId}/read`, {
      messageId: ownMessage,
    })
    expect(outsider.status).toBe(404)
    expect(
      (await chat.call(undefined, 'POST', `/conversations/${conversationId}/read`, { messageId: ownMessage }))
        .status,
    ).toBe(401)
    const conversation = await chat.call<Conversation>(bob, 'GET', `/conversations/${conversationId}`)
    expect(conversation.body.participants.find((p) => p.userId === bob)?.lastReadMessageId).toBeNull()
  })
})
