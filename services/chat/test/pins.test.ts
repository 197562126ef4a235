import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { CloudEvent, Problem } from '@parley/contracts'
import { waitFor } from '@parley/testkit'
import type { ConversationDoc } from '../src/db'
import type { Conversation } from '../src/modules/conversations/model'
import type { Message } from '../src/modules/messages/model'
import { MAX_PINS_PER_CONVERSATION, type PinList } from '../src/modules/pins/model'
import { createEventSink, createHarness, type Harness } from './harness'

let chat: Harness
let sink: Awaited<ReturnType<typeof createEventSink>>

beforeAll(async () => {
  chat = await createHarness()
  sink = await createEventSink(chat.vhost.url, ['message.pinned', 'message.unpinned'])
})

afterAll(async () => {
  await sink.close()
  await chat.close()
})

const conversations = () => chat.deps.db.collection<ConversationDoc>('conversations')

function eventsOf<T extends 'message.pinned' | 'message.unpinned'>(
  type: T,
  conversationId: string,
): CloudEvent<T>[] {
  return sink.events.filter(
    (event): event is CloudEvent<T> =>
      event.type === type &&
      (event as CloudEvent<'message.pinned' | 'message.unpinned'>).data.conversationId === conversationId,
  )
}

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

const pin = (method: 'PUT' | 'DELETE', caller: string, conversationId: string, messageId: string) =>
  chat.call<PinList & Partial<Problem>>(caller, method, `/conversations/${conversationId}/pins/${messageId}`)

describe('pins', () => {
  test('any participant pins and unpins; idempotent; listed newest first; events to every participant', async () => {
    const [amy, bo] = await Promise.all([chat.newUser('Amy'), chat.newUser('Bo')])
    const id = await conversationOf(amy, [bo])
    const first = await send(amy, id, 'first')
    const second = await send(bo, id, 'second')

    const pinned = await pin('PUT', amy, id, first.id)
    expect(pinned.status).toBe(200)
    expect(pinned.body.items.map((item) => [item.message.id, item.message.body, item.pinnedBy])).toEqual([
      [first.id, 'first', amy],
    ])
    expect((await pin('PUT', amy, id, first.id)).status).toBe(200)
    await Bun.sleep(10)
    expect((await pin('PUT', bo, id, second.id)).status).toBe(200)

    // Through the cache and straight from the store alike.
    const listed = await chat.call<PinList>(bo, 'GET', `/conversations/${id}/pins`)
    expect(listed.status).toBe(200)
    expect(listed.body.items.map((item) => item.message.id)).toEqual([second.id, first.id])
    expect(Object.keys((await conversations().findOne({ _id: id }))?.pins ?? {}).sort()).toEqual(
      [first.id, second.id].sort(),
    )

    const [event] = await waitFor(() => {
      const found = eventsOf('message.pinned', id)
      return found.length >= 2 ? found : undefined
    })
    expect(event?.data).toMatchObject({ messageId: first.id, seq: first.seq, userId: amy })
    expect(event?.data.participantIds.sort()).toEqual([amy, bo].sort())

    const unpinned = await pin('DELETE', bo, id, first.id)
    expect(unpinned.status).toBe(200)
    expect(unpinned.body.items.map((item) => item.message.id)).toEqual([second.id])
    expect((await pin('DELETE', bo, id, first.id)).status).toBe(200)
    const [gone] = await waitFor(() => {
      const found = eventsOf('message.unpinned', id)
      return found.length > 0 ? found : undefined
    })
    expect(gone?.data).toMatchObject({ messageId: first.id, seq: first.seq, userId: bo })
    await Bun.sleep(200)
    expect(eventsOf('message.pinned', id)).toHaveLength(2)
    expect(eventsOf('message.unpinned', id)).toHaveLength(1)
    expect(await chat.metricsText()).toMatch(/chat_pins_total\{action="pin"[^}]*\} [1-9]/)
    expect(await chat.metricsText()).toMatch(/chat_pins_total\{action="unpin"[^}]*\} [1-9]/)
  })

  test(`at most ${MAX_PINS_PER_CONVERSATION} per conversation: the next is 409, nothing written, no event`, async () => {
    const cy = await chat.newUser('Cy')
    const id = await conversationOf(cy, [await chat.newUser('Dee')])
    const messages: Message[] = []
    for (let index = 0; index <= MAX_PINS_PER_CONVERSATION; index++)
      messages.push(await send(cy, id, `m${index}`))
    for (const message of messages.slice(0, MAX_PINS_PER_CONVERSATION))
      expect((await pin('PUT', cy, id, message.id)).status).toBe(200)
    const last = messages[MAX_PINS_PER_CONVERSATION] as Message
    const over = await pin('PUT', cy, id, last.id)
    expect(over.status).toBe(409)
    expect(Object.keys((await conversations().findOne({ _id: id }))?.pins ?? {})).toHaveLength(
      MAX_PINS_PER_CONVERSATION,
    )
    expect((await chat.call<PinList>(cy, 'GET', `/conversations/${id}/pins`)).body.items).toHaveLength(
      MAX_PINS_PER_CONVERSATION,
    )
    // Unpinning one makes room.
    expect((await pin('DELETE', cy, id, (messages[0] as Message).id)).status).toBe(200)
    expect((await pin('PUT', cy, id, last.id)).status).toBe(200)
    await Bun.sleep(300)
    expect(eventsOf('message.pinned', id).filter((event) => event.data.messageId === last.id)).toHaveLength(1)
  }, 60_000)

  test('a deleted message cannot be pinned (409); a pinned one deleted later is listed as its tombstone', async () => {
    const [eli, fay] = await Promise.all([chat.newUser('Eli'), chat.newUser('Fay')])
    const id = await conversationOf(eli, [fay])
    const kept = await send(eli, id, 'kept')
    const doomed = await send(eli, id, 'doomed')
    expect((await pin('PUT', fay, id, doomed.id)).status).toBe(200)
    expect((await chat.call(eli, 'DELETE', `/conversations/${id}/messages/${doomed.id}`)).status).toBe(204)
    const [tombstone] = (await chat.call<PinList>(fay, 'GET', `/conversations/${id}/pins`)).body.items
    expect(tombstone?.message).toMatchObject({ id: doomed.id, body: '' })
    expect(tombstone?.message.deletedAt).toBeString()
    expect((await pin('DELETE', fay, id, doomed.id)).body.items).toEqual([])
    const other = await conversationOf(eli, [fay])
    const dead = await send(eli, other, 'dead')
    await chat.call(eli, 'DELETE', `/conversations/${other}/messages/${dead.id}`)
    expect((await pin('PUT', fay, other, dead.id)).status).toBe(409)
    expect((await conversations().findOne({ _id: other }))?.pins).toBeUndefined()
    expect((await pin('PUT', fay, id, kept.id)).status).toBe(200)
  })

  test('bad input 422 naming the field, non-participants and foreign messages 404; nothing written, no event', async () => {
    const [gus, hal, zed] = await Promise.all([chat.newUser('Gus'), chat.newUser('Hal'), chat.newUser('Zed')])
    const id = await conversationOf(gus, [hal])
    const message = await send(gus, id, 'mine')
    const elsewhere = await conversationOf(zed, [hal])
    const foreign = await send(zed, elsewhere, 'theirs')

    const badMessage = await pin('PUT', gus, id, 'not-an-id')
    expect(badMessage.status).toBe(422)
    expect(badMessage.body.errors?.[0]?.field).toBe('params.messageId')
    const badConversation = await pin('PUT', gus, 'nope', message.id)
    expect(badConversation.status).toBe(422)
    expect(badConversation.body.errors?.[0]?.field).toBe('params.id')
    expect((await chat.call<Problem>(gus, 'GET', '/conversations/nope/pins')).status).toBe(422)

    expect((await pin('PUT', zed, id, message.id)).status).toBe(404)
    expect((await pin('DELETE', zed, id, message.id)).status).toBe(404)
    expect((await chat.call(zed, 'GET', `/conversations/${id}/pins`)).status).toBe(404)
    expect((await pin('PUT', gus, id, foreign.id)).status).toBe(404)
    expect((await pin('PUT', gus, id, Bun.randomUUIDv7())).status).toBe(404)
    expect((await chat.call(undefined, 'GET', `/conversations/${id}/pins`)).status).toBe(401)

    expect((await conversations().findOne({ _id: id }))?.pins).toBeUndefined()
    await Bun.sleep(200)
    expect(eventsOf('message.pinned', id)).toEqual([])
  })
})
