import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { CloudEvent, EventType, Problem } from '@parley/contracts'
import { waitFor } from '@parley/testkit'
import type { BlockDoc, ConversationDoc } from '../src/db'
import type { BlockList } from '../src/modules/blocks/model'
import type { Conversation } from '../src/modules/conversations/model'
import type { Message } from '../src/modules/messages/model'
import { createEventSink, createHarness, type Harness } from './harness'

let chat: Harness
let sink: Awaited<ReturnType<typeof createEventSink>>

const TYPES: EventType[] = [
  'conversation.muted',
  'conversation.unmuted',
  'message.sent',
  'user.blocked',
  'user.unblocked',
  'conversation.created',
]

beforeAll(async () => {
  chat = await createHarness()
  sink = await createEventSink(chat.vhost.url, TYPES)
})

afterAll(async () => {
  await sink.close()
  await chat.close()
})

const conversations = () => chat.deps.db.collection<ConversationDoc>('conversations')
const blocks = () => chat.deps.db.collection<BlockDoc>('blocks')

function eventsOf<T extends EventType>(type: T, match: (event: CloudEvent<T>) => boolean): CloudEvent<T>[] {
  return sink.events.filter(
    (event): event is CloudEvent<T> => event.type === type && match(event as CloudEvent<T>),
  )
}

const eventually = <T extends EventType>(type: T, match: (event: CloudEvent<T>) => boolean, count = 1) =>
  waitFor(() => (eventsOf(type, match).length >= count ? eventsOf(type, match) : undefined), {
    what: `${count} ${type}`,
  })

async function conversationOf(caller: string, others: string[]): Promise<string> {
  const reply = await chat.call<Conversation>(caller, 'POST', '/conversations', { participantIds: others })
  expect(reply.status).toBe(201)
  return reply.body.id
}

describe('mute', () => {
  test('a participant mutes: muted in their view only, message.sent names them, unread counts still move', async () => {
    const [amy, bo, cy] = await Promise.all([chat.newUser('Amy'), chat.newUser('Bo'), chat.newUser('Cy')])
    const id = await conversationOf(amy, [bo, cy])
    const muted = await chat.call<Conversation>(bo, 'PUT', `/conversations/${id}/mute`)
    expect(muted.status).toBe(200)
    expect(muted.body.muted).toBe(true)
    // Idempotent: once.
    expect((await chat.call<Conversation>(bo, 'PUT', `/conversations/${id}/mute`)).body.muted).toBe(true)
    expect((await chat.call<Conversation>(amy, 'GET', `/conversations/${id}`)).body.muted).toBe(false)
    const [event] = await eventually('conversation.muted', (e) => e.data.conversationId === id)
    expect(event?.data).toMatchObject({ conversationId: id, userId: bo })

    const sent = await chat.call<Message>(amy, 'POST', `/conversations/${id}/messages`, { body: 'psst' })
    expect(sent.status).toBe(201)
    const [message] = await eventually('message.sent', (e) => e.data.messageId === sent.body.id)
    expect(message?.data.mutedUserIds).toEqual([bo])
    expect((await chat.call<Conversation>(bo, 'GET', `/conversations/${id}`)).body.unreadCount).toBe(1)

    const unmuted = await chat.call<Conversation>(bo, 'DELETE', `/conversations/${id}/mute`)
    expect(unmuted.body.muted).toBe(false)
    await eventually('conversation.unmuted', (e) => e.data.conversationId === id)
    const next = await chat.call<Message>(amy, 'POST', `/conversations/${id}/messages`, { body: 'hello' })
    const [loud] = await eventually('message.sent', (e) => e.data.messageId === next.body.id)
    expect(loud?.data.mutedUserIds).toEqual([])
    await Bun.sleep(200)
    expect(eventsOf('conversation.muted', (e) => e.data.conversationId === id)).toHaveLength(1)
    expect(eventsOf('conversation.unmuted', (e) => e.data.conversationId === id)).toHaveLength(1)
    expect(await chat.metricsText()).toMatch(/chat_mutes_total\{action="mute"[^}]*\} [1-9]/)
  })

  test('bad input 422 naming params.id; a non-participant gets 404; nothing written, no event', async () => {
    const [dan, eli, zed] = await Promise.all([chat.newUser('Dan'), chat.newUser('Eli'), chat.newUser('Zed')])
    const id = await conversationOf(dan, [eli])
    const bad = await chat.call<Problem>(dan, 'PUT', '/conversations/not-an-id/mute')
    expect(bad.status).toBe(422)
    expect(bad.body.errors?.[0]?.field).toBe('params.id')
    expect((await chat.call(zed, 'PUT', `/conversations/${id}/mute`)).status).toBe(404)
    expect((await chat.call(zed, 'DELETE', `/conversations/${id}/mute`)).status).toBe(404)
    expect((await conversations().findOne({ _id: id }))?.mutedBy).toBeUndefined()
    await Bun.sleep(200)
    expect(eventsOf('conversation.muted', (e) => e.data.conversationId === id)).toEqual([])
  })

  test('leaving drops the mute', async () => {
    const [fox, gil] = await Promise.all([chat.newUser('Fox'), chat.newUser('Gil')])
    const id = await conversationOf(fox, [gil])
    await chat.call(gil, 'PUT', `/conversations/${id}/mute`)
    expect((await conversations().findOne({ _id: id }))?.mutedBy).toEqual({ [gil]: true })
    await chat.call(gil, 'DELETE', `/conversations/${id}/participants/me`)
    expect((await conversations().findOne({ _id: id }))?.mutedBy?.[gil]).toBeUndefined()
  })
})

describe('block', () => {
  test('the blocked user cannot start a direct conversation or add the blocker (403 naming the field)', async () => {
    const [hana, ivo, jo] = await Promise.all([chat.newUser('Hana'), chat.newUser('Ivo'), chat.newUser('Jo')])
    const shared = await conversationOf(ivo, [hana])
    expect((await chat.call(hana, 'PUT', `/conversations/blocks/${ivo}`)).status).toBe(204)
    expect((await chat.call(hana, 'PUT', `/conversations/blocks/${ivo}`)).status).toBe(204)
    const [event] = await eventually('user.blocked', (e) => e.data.userId === hana)
    expect(event?.data).toMatchObject({ userId: hana, blockedUserId: ivo })
    await Bun.sleep(200)
    expect(eventsOf('user.blocked', (e) => e.data.userId === hana)).toHaveLength(1)
    const listed = await chat.call<BlockList>(hana, 'GET', '/conversations/blocks')
    expect(listed.status).toBe(200)
    expect(listed.body.items.map((item) => item.userId)).toEqual([ivo])

    const before = await conversations().countDocuments({ participantIds: ivo })
    const dm = await chat.call<Problem>(ivo, 'POST', '/conversations', {
      participantIds: [hana],
      direct: true,
    })
    expect(dm.status).toBe(403)
    expect(dm.body.errors?.[0]?.field).toBe('body.participantIds.0')
    const group = await chat.call<Problem>(ivo, 'POST', '/conversations', { participantIds: [jo, hana] })
    expect(group.status).toBe(403)
    expect(group.body.errors?.map((error) => error.field)).toEqual(['body.participantIds.1'])
    expect(await conversations().countDocuments({ participantIds: ivo })).toBe(before)
    const withJo = await conversationOf(ivo, [jo])
    const add = await chat.call<Problem>(ivo, 'POST', `/conversations/${withJo}/participants`, {
      userIds: [hana],
    })
    expect(add.status).toBe(403)
    expect(add.body.errors?.[0]?.field).toBe('body.userIds.0')
    expect((await conversations().findOne({ _id: withJo }))?.participantIds).toEqual([ivo, jo])

    // The blocker still may; the shared conversation stays and still delivers Ivo's messages.
    expect(
      (await chat.call(hana, 'POST', '/conversations', { participantIds: [ivo], direct: true })).status,
    ).toBe(201)
    const sent = await chat.call<Message>(ivo, 'POST', `/conversations/${shared}/messages`, {
      body: 'still here',
    })
    expect(sent.status).toBe(201)
    const [message] = await eventually('message.sent', (e) => e.data.messageId === sent.body.id)
    expect(message?.data.recipientIds).toEqual([hana])

    // Unblocked: Ivo may add Hana again.
    expect((await chat.call(hana, 'DELETE', `/conversations/blocks/${ivo}`)).status).toBe(204)
    await eventually('user.unblocked', (e) => e.data.userId === hana)
    expect((await chat.call<BlockList>(hana, 'GET', '/conversations/blocks')).body.items).toEqual([])
    const readded = await chat.call(ivo, 'POST', `/conversations/${withJo}/participants`, { userIds: [hana] })
    expect(readded.status).toBe(200)
    expect(await chat.metricsText()).toMatch(/chat_blocks_total\{action="block"[^}]*\} [1-9]/)
  })

  test('bad input: 422 naming params.userId (not an id), 409 for oneself, 404 for an unknown user; nothing written, no event', async () => {
    const kai = await chat.newUser('Kai')
    for (const [target, status] of [
      ['nope', 422],
      [kai, 409],
    ] as const) {
      const reply = await chat.call<Problem>(kai, 'PUT', `/conversations/blocks/${target}`)
      expect(reply.status).toBe(status)
      expect(reply.body.errors?.[0]?.field).toBe('params.userId')
    }
    for (const method of ['PUT', 'DELETE'] as const)
      expect(
        (await chat.call<Problem>(kai, method, `/conversations/blocks/${Bun.randomUUIDv7()}`)).status,
      ).toBe(404)
    expect(await blocks().countDocuments({ userId: kai })).toBe(0)
    await Bun.sleep(200)
    expect(eventsOf('user.blocked', (e) => e.data.userId === kai)).toEqual([])
    expect((await chat.call(undefined, 'GET', '/conversations/blocks')).status).toBe(401)
  })
})
