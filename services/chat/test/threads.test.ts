import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { CloudEvent, Problem } from '@parley/contracts'
import { waitFor } from '@parley/testkit'
import type { MessageDoc } from '../src/db'
import type { Conversation } from '../src/modules/conversations/model'
import type { Message, MessagePage } from '../src/modules/messages/model'
import { createEventSink, createHarness, type Harness } from './harness'

let chat: Harness
let sink: Awaited<ReturnType<typeof createEventSink>>

beforeAll(async () => {
  chat = await createHarness()
  sink = await createEventSink(chat.vhost.url, ['message.sent'])
})

afterAll(async () => {
  await sink.close()
  await chat.close()
})

const messages = () => chat.deps.db.collection<MessageDoc>('messages')

async function conversationOf(caller: string, others: string[]): Promise<string> {
  const reply = await chat.call<Conversation>(caller, 'POST', '/conversations', { participantIds: others })
  expect(reply.status).toBe(201)
  return reply.body.id
}

const send = (caller: string, conversationId: string, body: unknown) =>
  chat.call<Message & Problem>(caller, 'POST', `/conversations/${conversationId}/messages`, body)

const sentEvent = (messageId: string) =>
  waitFor(
    () =>
      sink.events.find(
        (event): event is CloudEvent<'message.sent'> =>
          event.type === 'message.sent' && (event as CloudEvent<'message.sent'>).data.messageId === messageId,
      ),
    { what: `message.sent ${messageId}` },
  )

describe('replies and threads', () => {
  test('replies carry replyTo; the parent shows the summary (count, last, 3 recent repliers) on every page', async () => {
    const [ada, bea, cal, dov] = await Promise.all([
      chat.newUser('Ada'),
      chat.newUser('Bea'),
      chat.newUser('Cal'),
      chat.newUser('Dov'),
    ])
    const id = await conversationOf(ada, [bea, cal, dov])
    const parent = await send(ada, id, { body: 'Ideas for the offsite?' })
    // The latest page is cached before the replies: it must not show a stale summary.
    const cached = await chat.call<MessagePage>(ada, 'GET', `/conversations/${id}/messages`)
    expect(cached.body.items[0]?.thread).toBeNull()

    const replyIds: string[] = []
    for (const [who, body] of [
      [bea, 'Hiking'],
      [cal, 'Cooking class'],
      [dov, 'Escape room'],
      [bea, 'Or a boat'],
      [ada, 'Boat it is'],
    ] as const) {
      const reply = await send(who, id, { body, replyTo: parent.body.id })
      expect(reply.status).toBe(201)
      expect(reply.body.replyTo).toBe(parent.body.id)
      replyIds.push(reply.body.id)
    }
    const event = await sentEvent(replyIds[0] as string)
    expect(event.data.replyTo).toBe(parent.body.id)

    const page = await chat.call<MessagePage>(bea, 'GET', `/conversations/${id}/messages`)
    const shown = page.body.items.find((item) => item.id === parent.body.id)
    expect(shown?.thread).toMatchObject({ replyCount: 5, recentReplierIds: [ada, bea, dov] })
    expect(shown?.thread?.lastReplyAt).toBeString()
    expect(page.body.items.find((item) => item.id === replyIds[0])?.replyTo).toBe(parent.body.id)
    // An older page (by cursor, not the cached one) shows it too.
    const older = await chat.call<MessagePage>(bea, 'GET', `/conversations/${id}/messages?before=2`)
    expect(older.body.items[0]?.thread?.replyCount).toBe(5)

    // Replies, oldest first, two at a time.
    const first = await chat.call<MessagePage>(
      cal,
      'GET',
      `/conversations/${id}/messages/${parent.body.id}/replies?limit=2`,
    )
    expect(first.status).toBe(200)
    expect(first.body.items.map((item) => item.body)).toEqual(['Hiking', 'Cooking class'])
    const seen = [...first.body.items]
    let cursor = first.body.nextCursor
    while (cursor) {
      const next = await chat.call<MessagePage>(
        cal,
        'GET',
        `/conversations/${id}/messages/${parent.body.id}/replies?limit=2&after=${cursor}`,
      )
      seen.push(...next.body.items)
      cursor = next.body.nextCursor
    }
    expect(seen.map((item) => item.id)).toEqual(replyIds)

    // A reply to a reply joins the thread (one level deep).
    const nested = await send(cal, id, { body: 'Seasick here', replyTo: replyIds[3] })
    expect(nested.body.replyTo).toBe(parent.body.id)
    expect((await messages().findOne({ _id: parent.body.id }))?.thread?.replyCount).toBe(6)
  })

  test('concurrent replies are all counted', async () => {
    const [eda, fin] = await Promise.all([chat.newUser('Eda'), chat.newUser('Fin')])
    const id = await conversationOf(eda, [fin])
    const parent = await send(eda, id, { body: 'Vote' })
    await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        send(i % 2 ? eda : fin, id, { body: `+${i}`, replyTo: parent.body.id }),
      ),
    )
    expect((await messages().findOne({ _id: parent.body.id }))?.thread?.replyCount).toBe(6)
  })

  test('bad input: 422 naming body.replyTo, nothing written; non-participants get 404', async () => {
    const [gia, hob, ink] = await Promise.all([chat.newUser('Gia'), chat.newUser('Hob'), chat.newUser('Ink')])
    const id = await conversationOf(gia, [hob])
    const elsewhere = await conversationOf(gia, [ink])
    const foreign = await send(gia, elsewhere, { body: 'other room' })
    const parent = await send(gia, id, { body: 'here' })
    for (const replyTo of [Bun.randomUUIDv7(), foreign.body.id, 'nope', 7]) {
      const reply = await send(hob, id, { body: 'answer', replyTo })
      expect(reply.status).toBe(422)
      expect(reply.body.errors?.[0]?.field).toBe('body.replyTo')
    }
    expect(await messages().countDocuments({ conversationId: id })).toBe(1)
    expect((await send(ink, id, { body: 'intruder', replyTo: parent.body.id })).status).toBe(404)
    const path = `/conversations/${id}/messages/${parent.body.id}/replies`
    expect((await chat.call(ink, 'GET', path)).status).toBe(404)
    expect(
      (await chat.call(hob, 'GET', `/conversations/${id}/messages/${foreign.body.id}/replies`)).status,
    ).toBe(404)
    const badCursor = await chat.call<Problem>(hob, 'GET', `${path}?after=abc`)
    expect(badCursor.status).toBe(422)
    expect(badCursor.body.errors?.[0]?.field).toBe('query.after')
    expect((await chat.call<MessagePage>(hob, 'GET', path)).body).toEqual({ items: [], nextCursor: null })
    expect((await messages().findOne({ _id: parent.body.id }))?.thread).toBeUndefined()
  })
})
