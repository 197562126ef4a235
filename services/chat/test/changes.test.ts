import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { CloudEvent, Problem } from '@parley/contracts'
import { waitFor } from '@parley/testkit'
import type { MessageDoc, ReactionDoc } from '../src/db'
import type { Conversation } from '../src/modules/conversations/model'
import type { Message, MessagePage } from '../src/modules/messages/model'
import type { MessageReactions } from '../src/modules/reactions/model'
import { createEventSink, createHarness, type Harness } from './harness'

let chat: Harness
let sink: Awaited<ReturnType<typeof createEventSink>>
let alice: string
let bob: string
let carol: string
let mallory: string

beforeAll(async () => {
  chat = await createHarness()
  sink = await createEventSink(chat.vhost.url, ['message.updated', 'message.deleted'])
  ;[alice, bob, carol, mallory] = await Promise.all([
    chat.newUser('Alice'),
    chat.newUser('Bob'),
    chat.newUser('Carol'),
    chat.newUser('Mallory'),
  ])
})

afterAll(async () => {
  await sink.close()
  await chat.close()
})

const messages = () => chat.deps.db.collection<MessageDoc>('messages')
const reactions = () => chat.deps.db.collection<ReactionDoc>('reactions')

async function conversationOf(caller: string, others: string[]): Promise<string> {
  const reply = await chat.call<Conversation>(caller, 'POST', '/conversations', { participantIds: others })
  expect(reply.status).toBe(201)
  return reply.body.id
}

async function send(caller: string, conversationId: string, body: string): Promise<Message> {
  const reply = await chat.call<Message>(caller, 'POST', `/conversations/${conversationId}/messages`, {
    body,
  })
  expect(reply.status).toBe(201)
  return reply.body
}

const edit = (caller: string, conversationId: string, messageId: string, body: unknown) =>
  chat.call<Message & Problem>(
    caller,
    'PATCH',
    `/conversations/${conversationId}/messages/${messageId}`,
    body,
  )

const remove = (caller: string, conversationId: string, messageId: string) =>
  chat.call<Problem>(caller, 'DELETE', `/conversations/${conversationId}/messages/${messageId}`)

const page = async (caller: string, conversationId: string, query = '') => {
  const reply = await chat.call<MessagePage>(
    caller,
    'GET',
    `/conversations/${conversationId}/messages${query}`,
  )
  expect(reply.status).toBe(200)
  return reply.body.items
}

const conversation = async (caller: string, conversationId: string) =>
  (await chat.call<Conversation>(caller, 'GET', `/conversations/${conversationId}`)).body

function eventsFor<T extends 'message.updated' | 'message.deleted'>(type: T, messageId: string) {
  return sink.events.filter(
    (event): event is CloudEvent<T> =>
      event.type === type && (event as CloudEvent<T>).data.messageId === messageId,
  )
}

/** Waits for one event of `type` for `messageId`; the only one so far. */
async function onlyEvent<T extends 'message.updated' | 'message.deleted'>(type: T, messageId: string) {
  const [event, ...more] = await waitFor(
    () => (eventsFor(type, messageId).length > 0 ? eventsFor(type, messageId) : undefined),
    { what: `${type} for ${messageId}` },
  )
  expect(more).toEqual([])
  return event as CloudEvent<T>
}

describe('PATCH /conversations/:id/messages/:messageId', () => {
  test('the author edits: editedAt set; pages, the cached latest page and lastMessage follow; message.updated', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const first = await send(alice, conversationId, 'first')
    const second = await send(alice, conversationId, 'second')
    // Fills the cached latest page, which the edit must retire.
    expect((await page(bob, conversationId)).map((m) => m.body)).toEqual(['first', 'second'])

    const edited = await edit(alice, conversationId, second.id, { body: '  second, edited  ' })
    expect(edited.status).toBe(200)
    expect(edited.body).toMatchObject({ id: second.id, seq: 2, body: 'second, edited', deletedAt: null })
    expect(Date.parse(edited.body.editedAt ?? '')).toBeGreaterThan(Date.now() - 60_000)

    const latest = await page(bob, conversationId)
    expect(latest.map((m) => [m.body, m.editedAt !== null])).toEqual([
      ['first', false],
      ['second, edited', true],
    ])
    expect((await page(bob, conversationId, '?after=1')).map((m) => m.body)).toEqual(['second, edited'])
    expect((await conversation(bob, conversationId)).lastMessage).toMatchObject({
      id: second.id,
      preview: 'second, edited',
      deleted: false,
    })

    const event = await onlyEvent('message.updated', second.id)
    expect(event.data).toEqual({
      messageId: second.id,
      conversationId,
      seq: 2,
      senderId: alice,
      participantIds: [alice, bob],
      preview: 'second, edited',
      editedAt: edited.body.editedAt ?? '',
    })

    // An older message: the page follows, lastMessage stays on the newest.
    expect((await edit(alice, conversationId, first.id, { body: 'first, edited' })).status).toBe(200)
    expect((await page(bob, conversationId)).map((m) => m.body)).toEqual(['first, edited', 'second, edited'])
    expect((await conversation(bob, conversationId)).lastMessage?.preview).toBe('second, edited')
  })

  test('the same body again changes nothing and publishes nothing', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const message = await send(alice, conversationId, 'same')
    const unchanged = await edit(alice, conversationId, message.id, { body: ' same ' })
    expect(unchanged.status).toBe(200)
    expect(unchanged.body.editedAt).toBeNull()
    expect((await messages().findOne({ _id: message.id }))?.version).toBeUndefined()
    // A real edit afterwards: its event is the only one for the message.
    expect((await edit(alice, conversationId, message.id, { body: 'different' })).status).toBe(200)
    expect((await onlyEvent('message.updated', message.id)).data.preview).toBe('different')
  })

  test('bad input: 422 naming the field, nothing written, nothing published', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const message = await send(alice, conversationId, 'original')
    const bodies: [unknown, string][] = [
      [{ body: '' }, 'body.body'],
      [{ body: '  \n ' }, 'body.body'],
      [{ body: 'a'.repeat(4001) }, 'body.body'],
      [{ body: { $set: 'x' } }, 'body.body'],
      [{ body: 42 }, 'body.body'],
      [{}, 'body.body'],
    ]
    for (const [body, field] of bodies) {
      const reply = await edit(alice, conversationId, message.id, body)
      expect(reply.status).toBe(422)
      expect(reply.body.errors?.[0]?.field).toBe(field)
    }
    for (const messageId of ['nope', encodeURIComponent('{"$ne":1}'), message.id.toUpperCase()]) {
      const reply = await edit(alice, conversationId, messageId, { body: 'x' })
      expect(reply.status).toBe(422)
      expect(reply.body.errors?.[0]?.field).toBe('params.messageId')
    }
    const stored = await messages().findOne({ _id: message.id })
    expect(stored?.body).toBe('original')
    expect(stored?.editedAt).toBeUndefined()
    expect((await edit(alice, conversationId, message.id, { body: 'marker' })).status).toBe(200)
    expect((await onlyEvent('message.updated', message.id)).data.preview).toBe('marker')
  })

  test('only the author, within the window: others 403, non-participants 404, deleted 409', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const message = await send(alice, conversationId, 'mine')
    const byBob = await edit(bob, conversationId, message.id, { body: 'hijacked' })
    expect(byBob.status).toBe(403)
    expect(byBob.headers.get('content-type')).toContain('application/problem+json')
    // The owner may delete it, not rewrite it.
    const ownMessageOfBob = await send(bob, conversationId, 'bob says')
    expect((await edit(alice, conversationId, ownMessageOfBob.id, { body: 'alice says' })).status).toBe(403)
    expect((await edit(mallory, conversationId, message.id, { body: 'x' })).status).toBe(404)
    expect((await edit(alice, conversationId, Bun.randomUUIDv7(), { body: 'x' })).status).toBe(404)
    // A message of another conversation is not found through this one.
    const elsewhere = await send(alice, await conversationOf(alice, [carol]), 'elsewhere')
    expect((await edit(alice, conversationId, elsewhere.id, { body: 'x' })).status).toBe(404)

    // The default window is 48 h from sending.
    const hours = (count: number) => new Date(Date.now() - count * 3_600_000)
    await messages().updateOne({ _id: message.id }, { $set: { createdAt: hours(47) } })
    expect((await edit(alice, conversationId, message.id, { body: 'still in time' })).status).toBe(200)
    await messages().updateOne({ _id: message.id }, { $set: { createdAt: hours(49) } })
    const late = await edit(alice, conversationId, message.id, { body: 'too late' })
    expect(late.status).toBe(403)
    expect(late.body.detail).toContain('48 h')
    expect((await messages().findOne({ _id: message.id }))?.body).toBe('still in time')

    expect((await remove(alice, conversationId, ownMessageOfBob.id)).status).toBe(204)
    expect((await edit(bob, conversationId, ownMessageOfBob.id, { body: 'undo' })).status).toBe(409)
    expect(eventsFor('message.updated', ownMessageOfBob.id)).toEqual([])
  })
})

describe('DELETE /conversations/:id/messages/:messageId', () => {
  test('the author deletes: a tombstone keeps its seq; pages, lastMessage, reactions and message.deleted follow', async () => {
    const conversationId = await conversationOf(alice, [bob])
    await send(alice, conversationId, 'one')
    await send(bob, conversationId, 'two')
    const three = await send(alice, conversationId, 'three')
    const reacted = await chat.call<MessageReactions>(
      bob,
      'PUT',
      `/conversations/${conversationId}/messages/${three.id}/reactions/${encodeURIComponent('👍')}`,
    )
    expect(reacted.body.reactions).toEqual([{ emoji: '👍', count: 1, me: true }])
    expect((await page(bob, conversationId)).at(-1)?.reactions).toHaveLength(1)

    expect((await remove(alice, conversationId, three.id)).status).toBe(204)
    const latest = await page(bob, conversationId)
    expect(latest.map((m) => [m.seq, m.body, m.deletedAt !== null])).toEqual([
      [1, 'one', false],
      [2, 'two', false],
      [3, '', true],
    ])
    expect(latest[2]?.reactions).toEqual([])
    expect((await page(bob, conversationId, '?after=2')).map((m) => m.seq)).toEqual([3])
    expect((await page(bob, conversationId, '?before=3')).map((m) => m.seq)).toEqual([1, 2])
    expect((await conversation(bob, conversationId)).lastMessage).toMatchObject({
      id: three.id,
      seq: 3,
      preview: '',
      deleted: true,
    })
    expect(await reactions().countDocuments({ messageId: three.id })).toBe(0)
    const stored = await messages().findOne({ _id: three.id })
    expect(stored).toMatchObject({ body: '', deletedBy: alice, seq: 3 })

    const event = await onlyEvent('message.deleted', three.id)
    expect(event.data).toMatchObject({
      messageId: three.id,
      conversationId,
      seq: 3,
      senderId: alice,
      deletedBy: alice,
      participantIds: [alice, bob],
    })
    // Again: nothing changes, nothing is published (the next delete's event comes alone).
    expect((await remove(alice, conversationId, three.id)).status).toBe(204)
    const marker = await send(alice, conversationId, 'marker')
    expect((await remove(alice, conversationId, marker.id)).status).toBe(204)
    await onlyEvent('message.deleted', marker.id)
    expect(eventsFor('message.deleted', three.id)).toHaveLength(1)
    // Reactions to a tombstone are refused.
    const late = await chat.call<Problem>(
      bob,
      'PUT',
      `/conversations/${conversationId}/messages/${three.id}/reactions/${encodeURIComponent('👍')}`,
    )
    expect(late.status).toBe(409)
  })

  test("owners and admins delete others' messages; members 403; non-participants and unknown ids 404", async () => {
    const conversationId = await conversationOf(alice, [bob, carol])
    const bobs = await send(bob, conversationId, 'from bob')
    const byCarol = await remove(carol, conversationId, bobs.id)
    expect(byCarol.status).toBe(403)
    expect((await remove(mallory, conversationId, bobs.id)).status).toBe(404)
    expect((await remove(alice, conversationId, Bun.randomUUIDv7())).status).toBe(404)
    expect((await messages().findOne({ _id: bobs.id }))?.body).toBe('from bob')

    expect((await remove(alice, conversationId, bobs.id)).status).toBe(204)
    expect((await onlyEvent('message.deleted', bobs.id)).data).toMatchObject({
      senderId: bob,
      deletedBy: alice,
    })

    const promoted = await chat.call(
      alice,
      'PUT',
      `/conversations/${conversationId}/participants/${carol}/role`,
      {
        role: 'admin',
      },
    )
    expect(promoted.status).toBe(200)
    const again = await send(bob, conversationId, 'from bob again')
    expect((await remove(carol, conversationId, again.id)).status).toBe(204)
    expect((await onlyEvent('message.deleted', again.id)).data.deletedBy).toBe(carol)
  })

  test('malformed ids: 422 naming the field, nothing written', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const message = await send(alice, conversationId, 'kept')
    for (const [conversation, id, field] of [
      [conversationId, 'nope', 'params.messageId'],
      ['nope', message.id, 'params.id'],
    ] as const) {
      const reply = await remove(alice, conversation, id)
      expect(reply.status).toBe(422)
      expect(reply.body.errors?.[0]?.field).toBe(field)
    }
    expect((await messages().findOne({ _id: message.id }))?.deletedAt).toBeUndefined()
    expect(
      (await chat.call(undefined, 'DELETE', `/conversations/${conversationId}/messages/${message.id}`))
        .status,
    ).toBe(401)
  })
})

describe('configured limits', () => {
  test('CHAT_MESSAGE_EDIT_WINDOW_SECONDS and CHAT_MAX_REACTIONS_PER_MESSAGE are honoured', async () => {
    const strict = await createHarness({
      env: { CHAT_MESSAGE_EDIT_WINDOW_SECONDS: '60', CHAT_MAX_REACTIONS_PER_MESSAGE: '2' },
    })
    try {
      const [owner, guest] = await Promise.all([strict.newUser('Owner'), strict.newUser('Guest')])
      const created = await strict.call<Conversation>(owner, 'POST', '/conversations', {
        participantIds: [guest],
      })
      const path = `/conversations/${created.body.id}/messages`
      const sent = await strict.call<Message>(owner, 'POST', path, { body: 'quick' })
      expect((await strict.call(owner, 'PATCH', `${path}/${sent.body.id}`, { body: 'quicker' })).status).toBe(
        200,
      )
      await strict.deps.db
        .collection<MessageDoc>('messages')
        .updateOne({ _id: sent.body.id }, { $set: { createdAt: new Date(Date.now() - 61_000) } })
      const late = await strict.call<Problem>(owner, 'PATCH', `${path}/${sent.body.id}`, { body: 'too late' })
      expect(late.status).toBe(403)
      expect(late.body.detail).toContain('60 s')

      const reactionPath = (emoji: string) => `${path}/${sent.body.id}/reactions/${encodeURIComponent(emoji)}`
      expect((await strict.call(guest, 'PUT', reactionPath('👍'))).status).toBe(200)
      expect((await strict.call(guest, 'PUT', reactionPath('👎'))).status).toBe(200)
      expect((await strict.call(guest, 'PUT', reactionPath('🎉'))).status).toBe(409)
    } finally {
      await strict.close()
    }
  })
})
