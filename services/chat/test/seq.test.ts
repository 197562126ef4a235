import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { newId } from '@parley/common'
import { blockOf, type ConversationDoc, type MessageDoc, migrate } from '../src/db'
import type { Conversation } from '../src/modules/conversations/model'
import type { Message, MessagePage, ReadReceipt } from '../src/modules/messages/model'
import { createHarness, type Harness } from './harness'

let chat: Harness
let alice: string
let bob: string

beforeAll(async () => {
  chat = await createHarness({ relay: false })
  ;[alice, bob] = await Promise.all([chat.newUser('Alice'), chat.newUser('Bob')])
})

afterAll(() => chat.close())

const messages = () => chat.deps.db.collection<MessageDoc>('messages')
const conversations = () => chat.deps.db.collection<ConversationDoc>('conversations')

async function conversationOf(owner: string, others: string[]): Promise<string> {
  const reply = await chat.call<Conversation>(owner, 'POST', '/conversations', { participantIds: others })
  return reply.body.id
}

const send = (userId: string, conversationId: string, body: string) =>
  chat.call<Message>(userId, 'POST', `/conversations/${conversationId}/messages`, { body })

describe('sequence numbers', () => {
  test('50 concurrent sends into one conversation get seqs 1..50, no duplicates, no holes', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const replies = await Promise.all(
      Array.from({ length: 50 }, (_, i) => send(i % 2 ? alice : bob, conversationId, `concurrent ${i}`)),
    )
    expect(replies.every((reply) => reply.status === 201)).toBe(true)
    const seqs = replies.map((reply) => reply.body.seq).sort((a, b) => a - b)
    expect(seqs).toEqual(Array.from({ length: 50 }, (_, i) => i + 1))
    const stored = await messages().find({ conversationId }).toArray()
    expect(stored.map((doc) => doc.seq).sort((a, b) => a - b)).toEqual(seqs)
    const conversation = await chat.call<Conversation>(bob, 'GET', `/conversations/${conversationId}`)
    expect(conversation.body.lastMessage?.seq).toBe(50)
  }, 60_000)

  test('the unique (conversationId, seq) index rejects a second message with a taken seq, also concurrently', async () => {
    const conversationId = newId()
    const doc = (seq: number): MessageDoc => ({
      _id: newId(),
      conversationId,
      seq,
      seqBlock: blockOf(seq),
      senderId: alice,
      body: 'raw',
      createdAt: new Date(),
    })
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => messages().insertOne(doc(1))))
    expect(results.filter((result) => result.status === 'fulfilled')).toHaveLength(1)
    expect(await messages().countDocuments({ conversationId })).toBe(1)
    // Another conversation may use the same seq.
    await messages().insertOne({ ...doc(1), conversationId: newId() })
  })

  test('a reader paging with `after` while others send sees every message exactly once, in seq order', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const total = 60
    let sending = true
    const senders = (async () => {
      const replies = []
      for (let i = 0; i < total; i += 6)
        replies.push(
          ...(await Promise.all(
            Array.from({ length: 6 }, (_, j) => send(j % 2 ? alice : bob, conversationId, `m ${i + j}`)),
          )),
        )
      sending = false
      return replies.map((reply) => reply.body.id)
    })()
    const seen: Message[] = []
    let cursor = '0'
    for (;;) {
      const stillSending = sending
      const page = await chat.call<MessagePage>(
        bob,
        'GET',
        `/conversations/${conversationId}/messages?limit=7&after=${cursor}`,
      )
      expect(page.status).toBe(200)
      seen.push(...page.body.items)
      const last = page.body.items.at(-1)
      if (last) cursor = String(last.seq)
      if (!stillSending && page.body.nextCursor === null) break
    }
    const sent = await senders
    expect(seen.map((message) => message.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1))
    expect(new Set(seen.map((message) => message.id))).toEqual(new Set(sent))
  }, 60_000)

  test('read markers move by seq; the unread count is the seq range after them', async () => {
    const conversationId = await conversationOf(alice, [bob])
    const sent: Message[] = []
    for (let i = 0; i < 4; i++) sent.push((await send(alice, conversationId, `r ${i}`)).body)
    const read = (messageId: string) =>
      chat.call<ReadReceipt>(bob, 'POST', `/conversations/${conversationId}/read`, { messageId })
    expect((await read(sent[2]?.id ?? '')).body).toMatchObject({ lastReadSeq: 3, unreadCount: 1 })
    // Backwards by seq: ignored.
    expect((await read(sent[0]?.id ?? '')).body).toMatchObject({
      lastReadSeq: 3,
      lastReadMessageId: sent[2]?.id,
      unreadCount: 1,
    })
    const stored = await conversations().findOne({ _id: conversationId })
    expect(stored?.readMarkers[bob]).toEqual({ seq: 3, id: sent[2]?.id ?? '' })
  })
})

describe('migration of the previous version', () => {
  test('numbers old messages per conversation in _id order, converts markers, idempotently', async () => {
    const [first, second] = [newId(), newId()]
    const base = Date.now() - 10_000
    const old = (conversationId: string, i: number) => ({
      _id: newId(),
      conversationId,
      senderId: alice,
      body: `old ${i}`,
      createdAt: new Date(base + i),
    })
    const firstMessages = Array.from({ length: 1203 }, (_, i) => old(first, i))
    const secondMessages = Array.from({ length: 3 }, (_, i) => old(second, i))
    // As the previous version left the database: no (conversationId, seq) index (MongoDB would
    // refuse two messages without seq in one conversation under it), no seq, markers and
    // lastMessage by message id.
    await messages().dropIndex('conversationId_1_seq_1')
    await chat.deps.db
      .collection<{ _id: string }>('messages')
      .insertMany([...firstMessages, ...secondMessages])
    const oldConversation = (id: string, last: (typeof firstMessages)[number], read: string) => ({
      _id: id,
      title: null,
      createdBy: alice,
      participantIds: [alice, bob],
      readMarkers: { [alice]: last._id, [bob]: read },
      lastMessage: { id: last._id, senderId: alice, preview: last.body, createdAt: last.createdAt },
      createdAt: new Date(base),
      updatedAt: last.createdAt,
      version: 3,
      messagesVersion: 3,
    })
    await chat.deps.db
      .collection<{ _id: string }>('conversations')
      .insertMany([
        oldConversation(first, firstMessages.at(-1) ?? old(first, 0), firstMessages[9]?._id ?? ''),
        oldConversation(second, secondMessages.at(-1) ?? old(second, 0), secondMessages[0]?._id ?? ''),
      ])

    // The second one is numbered on first use (a replica reached it before `migrate`).
    const page = await chat.call<MessagePage>(bob, 'GET', `/conversations/${second}/messages`)
    expect(page.body.items.map((message) => [message.id, message.seq])).toEqual(
      secondMessages.map((message, i) => [message._id, i + 1]),
    )

    await migrate(chat.deps.config)
    await migrate(chat.deps.config)
    const numbered = await messages().find({ conversationId: first }).sort({ _id: 1 }).toArray()
    expect(numbered.map((doc) => doc.seq)).toEqual(firstMessages.map((_, i) => i + 1))
    expect(numbered.every((doc) => doc.seqBlock === blockOf(doc.seq))).toBe(true)
    const conversation = await chat.call<Conversation>(bob, 'GET', `/conversations/${first}`)
    expect(conversation.body.lastMessage?.seq).toBe(1203)
    expect(conversation.body.unreadCount).toBe(100)
    expect(conversation.body.participants.find((p) => p.userId === bob)).toMatchObject({
      lastReadMessageId: firstMessages[9]?._id,
      lastReadSeq: 10,
    })
    // New messages continue the numbering.
    expect((await send(bob, first, 'after the upgrade')).body.seq).toBe(1204)
  }, 60_000)

  test('gives messages numbered without blocks their seqBlock, once, and pages them', async () => {
    const conversationId = newId()
    const base = Date.now() - 10_000
    // As the version before blocks wrote them: seq, no seqBlock.
    const unblocked = Array.from({ length: 150 }, (_, i) => ({
      _id: newId(),
      conversationId,
      seq: i + 1,
      senderId: alice,
      body: `numbered ${i}`,
      createdAt: new Date(base + i),
    }))
    await chat.deps.db.collection<{ _id: string }>('messages').insertMany(unblocked)
    const last = unblocked.at(-1) ?? unblocked[0]
    await conversations().insertOne({
      _id: conversationId,
      title: null,
      createdBy: alice,
      participantIds: [alice, bob],
      readMarkers: {},
      lastMessage: last
        ? { seq: last.seq, id: last._id, senderId: alice, preview: last.body, createdAt: last.createdAt }
        : null,
      lastSeq: 150,
      createdAt: new Date(base),
      updatedAt: new Date(base),
      version: 1,
      messagesVersion: 150,
    })
    // That version's databases have no record of the migration.
    const migrations = chat.deps.db.collection<{ _id: string }>('migrations')
    await migrations.deleteOne({ _id: 'messages.seqBlock' })
    await migrate(chat.deps.config)
    const stored = await messages().find({ conversationId }).toArray()
    expect(stored.filter((doc) => doc.seqBlock !== blockOf(doc.seq))).toEqual([])
    expect(await migrations.countDocuments({ _id: 'messages.seqBlock' })).toBe(1)
    const seen: number[] = []
    for (let cursor = '0'; ; ) {
      const page = await chat.call<MessagePage>(
        bob,
        'GET',
        `/conversations/${conversationId}/messages?limit=40&after=${cursor}`,
      )
      seen.push(...page.body.items.map((message) => message.seq))
      if (page.body.nextCursor === null) break
      cursor = page.body.nextCursor
    }
    expect(seen).toEqual(unblocked.map((message) => message.seq))
  }, 60_000)
})
