import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { CloudEvent, Problem } from '@parley/contracts'
import { waitFor } from '@parley/testkit'
import type { ReactionDoc } from '../src/db'
import type { Conversation } from '../src/modules/conversations/model'
import type { Message, MessagePage } from '../src/modules/messages/model'
import type { MessageReactions } from '../src/modules/reactions/model'
import { normalizeEmoji } from '../src/modules/reactions/service'
import { createEventSink, createHarness, type Harness } from './harness'

let chat: Harness
let sink: Awaited<ReturnType<typeof createEventSink>>
let alice: string
let bob: string
let mallory: string

beforeAll(async () => {
  chat = await createHarness()
  sink = await createEventSink(chat.vhost.url, ['message.reaction_added', 'message.reaction_removed'])
  ;[alice, bob, mallory] = await Promise.all([
    chat.newUser('Alice'),
    chat.newUser('Bob'),
    chat.newUser('Mallory'),
  ])
})

afterAll(async () => {
  await sink.close()
  await chat.close()
})

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

const react = (
  method: 'PUT' | 'DELETE',
  caller: string,
  conversationId: string,
  messageId: string,
  emoji: string,
) =>
  chat.call<MessageReactions & Partial<Problem>>(
    caller,
    method,
    `/conversations/${conversationId}/messages/${messageId}/reactions/${encodeURIComponent(emoji)}`,
  )

const page = async (caller: string, conversationId: string, query = '') => {
  const reply = await chat.call<MessagePage>(
    caller,
    'GET',
    `/conversations/${conversationId}/messages${query}`,
  )
  expect(reply.status).toBe(200)
  return reply.body.items
}

type ReactionEvent = CloudEvent<'message.reaction_added' | 'message.reaction_removed'>
const eventsFor = (messageId: string) =>
  sink.events.filter((event) => (event as ReactionEvent).data.messageId === messageId) as ReactionEvent[]

describe('PUT / DELETE …/messages/:messageId/reactions/:emoji', () => {
  test('adds and removes idempotently; views carry {emoji, count, me}; one event per change', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const message = await send(alice, conversationId, 'react to me')
    expect((await page(bob, conversationId))[0]?.reactions).toEqual([])

    const added = await react('PUT', bob, conversationId, message.id, '👍')
    expect(added.status).toBe(200)
    expect(added.body).toEqual({ messageId: message.id, reactions: [{ emoji: '👍', count: 1, me: true }] })
    expect((await react('PUT', bob, conversationId, message.id, '👍')).body.reactions).toEqual([
      { emoji: '👍', count: 1, me: true },
    ])
    await react('PUT', alice, conversationId, message.id, '👍')
    await react('PUT', alice, conversationId, message.id, '🎉')
    // The cached latest page was retired by each change.
    expect((await page(bob, conversationId))[0]?.reactions).toEqual([
      { emoji: '👍', count: 2, me: true },
      { emoji: '🎉', count: 1, me: false },
    ])
    expect((await page(alice, conversationId, '?after=0'))[0]?.reactions).toEqual([
      { emoji: '👍', count: 2, me: true },
      { emoji: '🎉', count: 1, me: true },
    ])

    const removed = await react('DELETE', bob, conversationId, message.id, '👍')
    expect(removed.status).toBe(200)
    // Ties in code point order.
    expect(removed.body.reactions).toEqual([
      { emoji: '🎉', count: 1, me: false },
      { emoji: '👍', count: 1, me: false },
    ])
    expect((await react('DELETE', bob, conversationId, message.id, '👍')).status).toBe(200)
    // Added again after the removal: the same document, a new version.
    expect((await react('PUT', bob, conversationId, message.id, '👍')).body.reactions[0]).toEqual({
      emoji: '👍',
      count: 2,
      me: true,
    })
    expect(await reactions().countDocuments({ messageId: message.id })).toBe(3)

    const expected = [
      ['message.reaction_added', bob, '👍'],
      ['message.reaction_added', alice, '👍'],
      ['message.reaction_added', alice, '🎉'],
      ['message.reaction_removed', bob, '👍'],
      ['message.reaction_added', bob, '👍'],
    ]
    const seen = await waitFor(
      () => (eventsFor(message.id).length >= expected.length ? eventsFor(message.id) : undefined),
      {
        what: 'the reaction events',
      },
    )
    await Bun.sleep(200)
    expect(eventsFor(message.id).map((event) => [event.type, event.data.userId, event.data.emoji])).toEqual(
      expected,
    )
    expect(seen[0]?.data).toMatchObject({ conversationId, seq: 1, participantIds: [alice, bob] })
  })

  test('exactly one emoji: RGI emoji (skin tones, ZWJ sequences, flags, keycaps); else 422 naming params.emoji', async () => {
    for (const emoji of ['👍', '👍🏽', '👨‍👩‍👧', '🇫🇷', '1️⃣', '❤️', '🏳️‍🌈'])
      expect(normalizeEmoji(emoji)).toBe(emoji)
    // A text-presentation pictograph counts as its emoji form.
    expect(normalizeEmoji('❤')).toBe('❤️')
    for (const emoji of ['a', '1', ':)', '👍👍', '👍a', ' 👍', 'é', '\u200d', '👍\u200d'])
      expect(normalizeEmoji(emoji)).toBeNull()

    const conversationId = await conversationOf(alice, [bob])
    const message = await send(alice, conversationId, 'pick one')
    for (const emoji of ['a', '👍👍', ':)', '{"$ne":1}']) {
      const reply = await react('PUT', bob, conversationId, message.id, emoji)
      expect(reply.status).toBe(422)
      expect(reply.body.errors?.[0]?.field).toBe('params.emoji')
    }
    expect((await react('PUT', bob, conversationId, message.id, 'x'.repeat(65))).status).toBe(422)
    expect(await reactions().countDocuments({ messageId: message.id })).toBe(0)
    // ❤ and ❤️ are the same reaction.
    await react('PUT', bob, conversationId, message.id, '❤')
    expect((await react('PUT', alice, conversationId, message.id, '❤️')).body.reactions).toEqual([
      { emoji: '❤️', count: 2, me: true },
    ])
    await Bun.sleep(200)
    expect(eventsFor(message.id).map((event) => event.data.emoji)).toEqual(['❤️', '❤️'])
  })

  test('at most 20 different emoji per message (409); those present are still accepted', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const message = await send(alice, conversationId, 'popular')
    const emoji = [...'😀😁😂🤣😃😄😅😆😉😊😋😎😍😘🥰😗😙😚🙂🤗🤩'] as [string, ...string[]]
    for (const one of emoji.slice(0, 20))
      expect((await react('PUT', alice, conversationId, message.id, one)).status).toBe(200)
    const over = await react('PUT', bob, conversationId, message.id, emoji[20] ?? '')
    expect(over.status).toBe(409)
    expect(over.body.detail).toContain('20')
    const joined = await react('PUT', bob, conversationId, message.id, emoji[0] ?? '')
    expect(joined.status).toBe(200)
    expect(joined.body.reactions[0]).toEqual({ emoji: emoji[0], count: 2, me: true })
    expect(await reactions().countDocuments({ messageId: message.id, emoji: emoji[20] })).toBe(0)
  })

  test('non-participants and unknown messages 404; malformed ids 422; no token 401', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const message = await send(alice, conversationId, 'private')
    expect((await react('PUT', mallory, conversationId, message.id, '👀')).status).toBe(404)
    expect((await react('DELETE', mallory, conversationId, message.id, '👀')).status).toBe(404)
    expect((await react('PUT', bob, conversationId, Bun.randomUUIDv7(), '👀')).status).toBe(404)
    const bad = await react('PUT', bob, conversationId, 'nope', '👀')
    expect(bad.status).toBe(422)
    expect(bad.body.errors?.[0]?.field).toBe('params.messageId')
    expect(
      (
        await chat.call(
          undefined,
          'PUT',
          `/conversations/${conversationId}/messages/${message.id}/reactions/${encodeURIComponent('👀')}`,
        )
      ).status,
    ).toBe(401)
    expect(await reactions().countDocuments({ messageId: message.id })).toBe(0)
    expect(eventsFor(message.id)).toEqual([])
  })

  test('concurrent reactions of many users all count (one document each)', async () => {
    const crowd = await chat.newUsers(12)
    const conversationId = await conversationOf(alice, crowd)
    const message = await send(alice, conversationId, 'vote')
    const replies = await Promise.all(
      crowd.map((userId) => react('PUT', userId, conversationId, message.id, '✅')),
    )
    expect(replies.map((reply) => reply.status)).toEqual(crowd.map(() => 200))
    expect((await page(alice, conversationId))[0]?.reactions).toEqual([{ emoji: '✅', count: 12, me: false }])
  })

  test('pages read the reactions of each seq block they cover', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const sent: Message[] = []
    for (let index = 1; index <= 70; index++) sent.push(await send(alice, conversationId, `m${index}`))
    // Seq 1 is in block 0, seq 66 in block 1.
    await react('PUT', bob, conversationId, sent[0]?.id ?? '', '🔥')
    await react('PUT', bob, conversationId, sent[65]?.id ?? '', '🚀')
    const withReactions = (items: Message[]) =>
      items.filter((item) => item.reactions.length > 0).map((item) => [item.seq, item.reactions[0]?.emoji])
    expect(withReactions(await page(alice, conversationId, '?after=0&limit=100'))).toEqual([
      [1, '🔥'],
      [66, '🚀'],
    ])
    expect(withReactions(await page(alice, conversationId, '?limit=100'))).toEqual([
      [1, '🔥'],
      [66, '🚀'],
    ])
    expect(withReactions(await page(alice, conversationId, '?before=67&limit=3'))).toEqual([[66, '🚀']])
  })
})
