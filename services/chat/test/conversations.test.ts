import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { Problem } from '@parley/contracts'
import type { Conversation, ConversationPage } from '../src/modules/conversations/model'
import type { Message } from '../src/modules/messages/model'
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

async function createConversation(caller: string, participantIds: string[], title?: string) {
  const reply = await chat.call<Conversation>(caller, 'POST', '/conversations', { title, participantIds })
  expect(reply.status).toBe(201)
  return reply.body
}

const countConversations = () => chat.deps.db.collection('conversations').countDocuments()

describe('POST /conversations', () => {
  test('creates a conversation with the caller as a participant', async () => {
    const reply = await chat.call<Conversation>(alice, 'POST', '/conversations', {
      title: '  Weekend plans  ',
      participantIds: [bob, bob],
    })
    expect(reply.status).toBe(201)
    expect(reply.body).toMatchObject({
      title: 'Weekend plans',
      createdBy: alice,
      lastMessage: null,
      unreadCount: 0,
    })
    expect(reply.body.participants).toEqual([
      { userId: alice, displayName: 'Alice', lastReadMessageId: null, lastReadSeq: null, role: 'owner' },
      { userId: bob, displayName: 'Bob', lastReadMessageId: null, lastReadSeq: null, role: 'member' },
    ])
    expect(reply.body.id).toMatch(/^[0-9a-f-]{36}$/)
  })

  test('an empty or missing title is null', async () => {
    expect((await createConversation(alice, [bob], '   ')).title).toBeNull()
    expect((await createConversation(alice, [bob])).title).toBeNull()
  })

  test('unknown participants: 422 naming each unknown id, nothing written', async () => {
    const before = await countConversations()
    const ghost1 = Bun.randomUUIDv7()
    const ghost2 = Bun.randomUUIDv7()
    const reply = await chat.call<Problem>(alice, 'POST', '/conversations', {
      participantIds: [bob, ghost1, ghost2],
    })
    expect(reply.status).toBe(422)
    expect(reply.headers.get('content-type')).toContain('application/problem+json')
    expect(reply.body.detail).toContain(ghost1)
    expect(reply.body.detail).toContain(ghost2)
    expect(reply.body.errors).toEqual([
      { field: 'body.participantIds.1', message: `Unknown user ${ghost1}` },
      { field: 'body.participantIds.2', message: `Unknown user ${ghost2}` },
    ])
    expect(await countConversations()).toBe(before)
  })

  test('bad input is a 422 problem and writes nothing', async () => {
    const before = await countConversations()
    const cases: unknown[] = [
      {},
      { participantIds: [] },
      { participantIds: ['not-a-uuid'] },
      { participantIds: [bob], title: 'x'.repeat(121) },
      { participantIds: [bob], title: 42 },
      { participantIds: bob },
      { participantIds: Array.from({ length: 257 }, () => Bun.randomUUIDv7()) },
    ]
    for (const body of cases) {
      const reply = await chat.call<Problem>(alice, 'POST', '/conversations', body)
      expect(reply.status).toBe(422)
      expect(reply.body.errors?.[0]?.field).toStartWith('body')
    }
    const malformed = await chat.call<Problem>(alice, 'POST', '/conversations', '{"participantIds":')
    expect(malformed.status).toBe(400)
    expect(await countConversations()).toBe(before)
  })

  test('$-operators and non-strings never reach a query', async () => {
    const before = await countConversations()
    for (const participantIds of [[{ $ne: null }], [{ $gt: '' }], { $in: [bob] }, [['x']], [null]]) {
      const reply = await chat.call<Problem>(alice, 'POST', '/conversations', { participantIds })
      expect(reply.status).toBe(422)
    }
    const titleOperator = await chat.call(alice, 'POST', '/conversations', {
      participantIds: [bob],
      title: { $set: 'x' },
    })
    expect(titleOperator.status).toBe(422)
    expect(await countConversations()).toBe(before)
  })

  test('at most 256 participants, the caller included', async () => {
    const others = await chat.newUsers(256)
    const tooMany = await chat.call<Problem>(alice, 'POST', '/conversations', { participantIds: others })
    expect(tooMany.status).toBe(422)
    expect(tooMany.body.errors?.[0]?.field).toBe('body.participantIds')
    const full = await createConversation(alice, others.slice(0, 255))
    expect(full.participants).toHaveLength(256)
  })

  test('requires a valid access token', async () => {
    expect((await chat.call(undefined, 'POST', '/conversations', { participantIds: [bob] })).status).toBe(401)
    const forged = await chat.app.handle(
      new Request('http://localhost/conversations', {
        method: 'POST',
        headers: { authorization: 'Bearer not.a.token', 'content-type': 'application/json' },
        body: JSON.stringify({ participantIds: [bob] }),
      }),
    )
    expect(forged.status).toBe(401)
  })
})

describe('GET /conversations', () => {
  test("lists the caller's conversations by last activity with lastMessage and unreadCount", async () => {
    const dave = await chat.newUser('Dave')
    const erin = await chat.newUser('Erin')
    const first = await createConversation(dave, [erin], 'first')
    const second = await createConversation(dave, [erin], 'second')
    const third = await createConversation(erin, [dave], 'third')

    const sent = await chat.call<Message>(erin, 'POST', `/conversations/${first.id}/messages`, {
      body: 'hi Dave',
    })
    expect(sent.status).toBe(201)
    await chat.call(erin, 'POST', `/conversations/${first.id}/messages`, { body: 'are you there?' })

    const list = await chat.call<ConversationPage>(dave, 'GET', '/conversations')
    expect(list.status).toBe(200)
    expect(list.body.items.map((c) => c.title)).toEqual(['first', 'third', 'second'])
    expect(list.body.nextCursor).toBeNull()
    const [active] = list.body.items
    expect(active?.lastMessage).toMatchObject({ senderId: erin, preview: 'are you there?' })
    expect(active?.unreadCount).toBe(2)
    expect(list.body.items[1]?.unreadCount).toBe(0)

    // Erin sent both, so she has read them.
    const erinList = await chat.call<ConversationPage>(erin, 'GET', '/conversations')
    expect(erinList.body.items.find((c) => c.id === first.id)?.unreadCount).toBe(0)
    expect(erinList.body.items.map((c) => c.id)).toEqual([first.id, third.id, second.id])
  })

  test('pages with an opaque cursor, each conversation exactly once', async () => {
    const frank = await chat.newUser('Frank')
    const created = []
    for (let i = 0; i < 7; i++) created.push(await createConversation(frank, [alice], `page ${i}`))
    const seen: string[] = []
    let cursor: string | null = null
    do {
      const query: string = cursor ? `?limit=3&cursor=${encodeURIComponent(cursor)}` : '?limit=3'
      const page: { status: number; body: ConversationPage } = await chat.call<ConversationPage>(
        frank,
        'GET',
        `/conversations${query}`,
      )
      expect(page.status).toBe(200)
      expect(page.body.items.length).toBeLessThanOrEqual(3)
      seen.push(...page.body.items.map((c) => c.id))
      cursor = page.body.nextCursor
    } while (cursor)
    expect(seen).toEqual(created.map((c) => c.id).reverse())
  })

  test('bad limit or cursor: 422', async () => {
    for (const query of ['?limit=0', '?limit=101', '?limit=abc']) {
      const reply = await chat.call<Problem>(alice, 'GET', `/conversations${query}`)
      expect(reply.status).toBe(422)
      expect(reply.headers.get('content-type')).toContain('application/problem+json')
      expect(reply.body.errors?.[0]?.field).toBe('query.limit')
    }
    for (const cursor of ['garbage', 'W10']) {
      const reply = await chat.call<Problem>(alice, 'GET', `/conversations?cursor=${cursor}`)
      expect(reply.status).toBe(422)
      expect(reply.body.errors).toEqual([{ field: 'query.cursor', message: 'Invalid cursor' }])
    }
    // Not even base64url: refused by the schema's pattern.
    const shapeless = await chat.call<Problem>(
      alice,
      'GET',
      `/conversations?cursor=${encodeURIComponent('{"$gt":""}')}`,
    )
    expect(shapeless.status).toBe(422)
    expect(shapeless.body.errors?.[0]?.field).toBe('query.cursor')
    const forged = Buffer.from(JSON.stringify([Date.now(), { $gt: '' }])).toString('base64url')
    expect((await chat.call(alice, 'GET', `/conversations?cursor=${forged}`)).status).toBe(422)
  })

  test('requires a token', async () => {
    expect((await chat.call(undefined, 'GET', '/conversations')).status).toBe(401)
  })
})

describe('GET/PATCH /conversations/:id', () => {
  test('participants read, owners and admins rename; others get 404 as if it did not exist', async () => {
    const conversation = await createConversation(alice, [bob], 'before')
    const promoted = await chat.call(
      alice,
      'PUT',
      `/conversations/${conversation.id}/participants/${bob}/role`,
      {
        role: 'admin',
      },
    )
    expect(promoted.status).toBe(200)
    const read = await chat.call<Conversation>(bob, 'GET', `/conversations/${conversation.id}`)
    expect(read.status).toBe(200)
    expect(read.body.title).toBe('before')

    const renamed = await chat.call<Conversation>(bob, 'PATCH', `/conversations/${conversation.id}`, {
      title: 'after',
    })
    expect(renamed.status).toBe(200)
    expect(renamed.body.title).toBe('after')
    expect(
      (await chat.call<Conversation>(alice, 'GET', `/conversations/${conversation.id}`)).body.title,
    ).toBe('after')
    const cleared = await chat.call<Conversation>(alice, 'PATCH', `/conversations/${conversation.id}`, {
      title: null,
    })
    expect(cleared.body.title).toBeNull()

    const missing = await chat.call<Problem>(mallory, 'GET', `/conversations/${Bun.randomUUIDv7()}`)
    const hidden = await chat.call<Problem>(mallory, 'GET', `/conversations/${conversation.id}`)
    expect(hidden.status).toBe(404)
    expect(hidden.body.detail).toBe(missing.body.detail)
    expect(hidden.headers.get('content-type')).toContain('application/problem+json')
    const hijack = await chat.call(mallory, 'PATCH', `/conversations/${conversation.id}`, { title: 'pwned' })
    expect(hijack.status).toBe(404)
    expect(
      (await chat.call<Conversation>(alice, 'GET', `/conversations/${conversation.id}`)).body.title,
    ).toBeNull()
  })

  test('malformed and operator-shaped ids: 422, never a query', async () => {
    for (const id of ['nope', encodeURIComponent('{"$ne":1}'), encodeURIComponent('{"$gt":""}'), '123']) {
      const reply = await chat.call<Problem>(alice, 'GET', `/conversations/${id}`)
      expect(reply.status).toBe(422)
      expect(reply.body.errors?.[0]?.field).toBe('params.id')
    }
  })

  test('bad title: 422, nothing changed', async () => {
    const conversation = await createConversation(alice, [bob], 'kept')
    for (const body of [{}, { title: 'x'.repeat(121) }, { title: { $set: 'x' } }, { title: 7 }]) {
      expect((await chat.call(alice, 'PATCH', `/conversations/${conversation.id}`, body)).status).toBe(422)
    }
    expect(
      (await chat.call<Conversation>(alice, 'GET', `/conversations/${conversation.id}`)).body.title,
    ).toBe('kept')
  })

  test('requires a token', async () => {
    expect((await chat.call(undefined, 'GET', `/conversations/${Bun.randomUUIDv7()}`)).status).toBe(401)
  })
})

describe('participants', () => {
  test('adds known users; newcomers start with the history read', async () => {
    const conversation = await createConversation(alice, [bob])
    const hello = await chat.call<Message>(alice, 'POST', `/conversations/${conversation.id}/messages`, {
      body: 'before Carol',
    })
    const added = await chat.call<Conversation>(
      alice,
      'POST',
      `/conversations/${conversation.id}/participants`,
      {
        userIds: [carol, bob],
      },
    )
    expect(added.status).toBe(200)
    expect(added.body.participants.map((p) => p.userId)).toEqual([alice, bob, carol])
    expect(added.body.participants[2]).toEqual({
      userId: carol,
      displayName: 'Carol',
      lastReadMessageId: hello.body.id,
      lastReadSeq: hello.body.seq,
      role: 'member',
    })
    const asCarol = await chat.call<Conversation>(carol, 'GET', `/conversations/${conversation.id}`)
    expect(asCarol.status).toBe(200)
    expect(asCarol.body.unreadCount).toBe(0)

    const again = await chat.call<Conversation>(
      alice,
      'POST',
      `/conversations/${conversation.id}/participants`,
      {
        userIds: [carol],
      },
    )
    expect(again.body.participants).toHaveLength(3)
  })

  test('unknown users: 422 naming them; non-participants: 404; bad ids: 422', async () => {
    const conversation = await createConversation(alice, [bob])
    const ghost = Bun.randomUUIDv7()
    const unknown = await chat.call<Problem>(
      alice,
      'POST',
      `/conversations/${conversation.id}/participants`,
      {
        userIds: [carol, ghost],
      },
    )
    expect(unknown.status).toBe(422)
    expect(unknown.body.errors).toEqual([{ field: 'body.userIds.1', message: `Unknown user ${ghost}` }])
    const outsider = await chat.call(mallory, 'POST', `/conversations/${conversation.id}/participants`, {
      userIds: [mallory],
    })
    expect(outsider.status).toBe(404)
    for (const userIds of [[], [{ $ne: null }], 'x', [42]]) {
      expect(
        (await chat.call(alice, 'POST', `/conversations/${conversation.id}/participants`, { userIds }))
          .status,
      ).toBe(422)
    }
    const current = await chat.call<Conversation>(alice, 'GET', `/conversations/${conversation.id}`)
    expect(current.body.participants.map((p) => p.userId)).toEqual([alice, bob])
  })

  test('cannot grow past 256 participants', async () => {
    const crowd = await chat.newUsers(254)
    const conversation = await createConversation(alice, crowd)
    expect(conversation.participants).toHaveLength(255)
    const over = await chat.call<Problem>(alice, 'POST', `/conversations/${conversation.id}/participants`, {
      userIds: [bob, carol],
    })
    expect(over.status).toBe(422)
    const last = await chat.call<Conversation>(
      alice,
      'POST',
      `/conversations/${conversation.id}/participants`,
      {
        userIds: [bob],
      },
    )
    expect(last.body.participants).toHaveLength(256)
  })

  test('leaving removes the caller: 204, then 404 and gone from the list', async () => {
    const conversation = await createConversation(alice, [bob, carol])
    const left = await chat.call(bob, 'DELETE', `/conversations/${conversation.id}/participants/me`)
    expect(left.status).toBe(204)
    expect((await chat.call(bob, 'GET', `/conversations/${conversation.id}`)).status).toBe(404)
    expect((await chat.call(bob, 'DELETE', `/conversations/${conversation.id}/participants/me`)).status).toBe(
      404,
    )
    const bobList = await chat.call<ConversationPage>(bob, 'GET', '/conversations?limit=100')
    expect(bobList.body.items.some((c) => c.id === conversation.id)).toBe(false)
    const asAlice = await chat.call<Conversation>(alice, 'GET', `/conversations/${conversation.id}`)
    expect(asAlice.body.participants.map((p) => p.userId)).toEqual([alice, carol])
    expect(
      (await chat.call(mallory, 'DELETE', `/conversations/${conversation.id}/participants/me`)).status,
    ).toBe(404)
    expect(
      (await chat.call(undefined, 'DELETE', `/conversations/${conversation.id}/participants/me`)).status,
    ).toBe(401)
  })
})
