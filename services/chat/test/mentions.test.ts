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

const sentIn = (conversationId: string) =>
  sink.events.filter(
    (event): event is CloudEvent<'message.sent'> =>
      event.type === 'message.sent' &&
      (event as CloudEvent<'message.sent'>).data.conversationId === conversationId,
  )

async function conversationOf(caller: string, others: string[]): Promise<string> {
  const reply = await chat.call<Conversation>(caller, 'POST', '/conversations', { participantIds: others })
  expect(reply.status).toBe(201)
  return reply.body.id
}

describe('mentions', () => {
  test('mentions are stored, returned and carried as mentionedUserIds (sender left out, muted kept)', async () => {
    const [amy, bo, cy] = await Promise.all([chat.newUser('Amy'), chat.newUser('Bo'), chat.newUser('Cy')])
    const id = await conversationOf(amy, [bo, cy])
    expect((await chat.call(bo, 'PUT', `/conversations/${id}/mute`)).status).toBe(200)
    const sent = await chat.call<Message>(amy, 'POST', `/conversations/${id}/messages`, {
      body: '@Bo @Amy look',
      mentions: [bo, amy, bo],
    })
    expect(sent.status).toBe(201)
    expect(sent.body.mentions).toEqual([bo, amy])
    const [event] = await waitFor(() => {
      const found = sentIn(id).filter((e) => e.data.messageId === sent.body.id)
      return found.length > 0 ? found : undefined
    })
    expect(event?.data.mentionedUserIds).toEqual([bo])
    expect(event?.data.mutedUserIds).toEqual([bo])

    const plain = await chat.call<Message>(cy, 'POST', `/conversations/${id}/messages`, { body: 'no one' })
    expect(plain.body.mentions).toEqual([])
    const [unmentioned] = await waitFor(() => {
      const found = sentIn(id).filter((e) => e.data.messageId === plain.body.id)
      return found.length > 0 ? found : undefined
    })
    expect(unmentioned?.data.mentionedUserIds).toEqual([])

    // Pages (cached and not) show them.
    const page = await chat.call<MessagePage>(cy, 'GET', `/conversations/${id}/messages`)
    expect(page.body.items.map((item) => item.mentions)).toEqual([[bo, amy], []])
    expect(await chat.metricsText()).toMatch(/chat_mentions_total(\{[^}]*\})? [1-9]/)
  })

  test('a mention of a non-participant is 422 naming each such index; nothing written, no event', async () => {
    const [dan, eli, zed, yan] = await Promise.all([
      chat.newUser('Dan'),
      chat.newUser('Eli'),
      chat.newUser('Zed'),
      chat.newUser('Yan'),
    ])
    const id = await conversationOf(dan, [eli])
    const outsider = await chat.call<Problem>(dan, 'POST', `/conversations/${id}/messages`, {
      body: 'hi',
      mentions: [eli, zed, yan],
    })
    expect(outsider.status).toBe(422)
    expect(outsider.body.errors?.map((error) => error.field)).toEqual(['body.mentions.1', 'body.mentions.2'])
    const malformed = await chat.call<Problem>(dan, 'POST', `/conversations/${id}/messages`, {
      body: 'hi',
      mentions: ['not-an-id'],
    })
    expect(malformed.status).toBe(422)
    expect(malformed.body.errors?.[0]?.field).toBe('body.mentions.0')
    // A non-participant cannot send (and so mention) at all.
    expect(
      (await chat.call(zed, 'POST', `/conversations/${id}/messages`, { body: 'hi', mentions: [dan] })).status,
    ).toBe(404)
    expect(await messages().countDocuments({ conversationId: id })).toBe(0)
    await Bun.sleep(200)
    expect(sentIn(id)).toEqual([])
  })
})
