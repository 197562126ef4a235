import { afterAll, beforeAll, expect, test } from 'bun:test'
import { newId } from '@parley/common'
import { blockOf, type MessageDoc } from '../src/db'
import type { Conversation } from '../src/modules/conversations/model'
import type { Message, MessagePage } from '../src/modules/messages/model'
import { createHarness, type Harness } from './harness'

const MESSAGES = 10_000
const LIMIT = 100

let chat: Harness
let reader: string
let conversationId: string
let expected: string[]

beforeAll(async () => {
  // No relay: nothing here publishes, and its polling would compete with the page queries.
  chat = await createHarness({ relay: false })
  const [writer, member] = await Promise.all([chat.newUser('Writer'), chat.newUser('Reader')])
  reader = member
  const created = await chat.call<Conversation>(writer, 'POST', '/conversations', {
    participantIds: [reader],
  })
  conversationId = created.body.id

  // Seeded in bulk with ids made the way the service makes them; the last one goes through the API.
  const start = Date.now() - MESSAGES
  const seeded: MessageDoc[] = Array.from({ length: MESSAGES - 1 }, (_, i) => ({
    _id: newId(),
    conversationId,
    seq: i + 1,
    seqBlock: blockOf(i + 1),
    senderId: writer,
    body: `#${i}`,
    createdAt: new Date(start + i),
  }))
  const messages = chat.deps.db.collection<MessageDoc>('messages')
  for (let i = 0; i < seeded.length; i += 2500) await messages.insertMany(seeded.slice(i, i + 2500))
  const last = await chat.call<Message>(writer, 'POST', `/conversations/${conversationId}/messages`, {
    body: 'the last one',
  })
  expected = [...seeded.map((message) => message._id), last.body.id]
})

afterAll(() => chat.close())

async function pageOf(query: string): Promise<MessagePage> {
  const reply = await chat.call<MessagePage>(
    reader,
    'GET',
    `/conversations/${conversationId}/messages${query}`,
  )
  expect(reply.status).toBe(200)
  return reply.body
}

async function pageBackward(): Promise<string[]> {
  const pages: string[][] = []
  let page = await pageOf(`?limit=${LIMIT}`)
  pages.unshift(page.items.map((message) => message.id))
  while (page.nextCursor) {
    page = await pageOf(`?limit=${LIMIT}&before=${page.nextCursor}`)
    pages.unshift(page.items.map((message) => message.id))
  }
  return pages.flat()
}

async function pageForward(): Promise<string[]> {
  const ids: string[] = []
  let cursor: string | null = '0'
  while (cursor) {
    const page: MessagePage = await pageOf(`?limit=${LIMIT}&after=${cursor}`)
    ids.push(...page.items.map((message) => message.id))
    cursor = page.nextCursor
  }
  return ids
}

test(
  `paging through ${MESSAGES} messages in both directions returns each exactly once, in order`,
  async () => {
    const [backward, forward] = await Promise.all([pageBackward(), pageForward()])
    expect(backward).toHaveLength(MESSAGES)
    expect(forward).toHaveLength(MESSAGES)
    expect(backward).toEqual(expected)
    expect(forward).toEqual(expected)
    expect(new Set(forward).size).toBe(MESSAGES)
  },
  { timeout: 540_000 },
)
