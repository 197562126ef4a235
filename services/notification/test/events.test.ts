import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import { buildEvent } from '@parley/common/events'
import type { CloudEvent } from '@parley/contracts'
import { waitFor } from '@parley/testkit'
import { type Harness, newUserId, startHarness } from './harness'

setDefaultTimeout(30_000)

let h: Harness
const announced: CloudEvent<'notification.created'>[] = []

beforeAll(async () => {
  h = await startHarness()
  // What the gateway's stream writer would receive.
  await h.publisher.subscribe({
    queue: 'test.notification-created',
    handlers: {
      'notification.created': async (event) => {
        announced.push(event)
      },
    },
  })
})

afterAll(async () => {
  await h?.close()
})

const announcedTo = (userId: string) => announced.filter((event) => event.data.userId === userId)

describe('notification.created', () => {
  test('every stored notification is announced once, through the outbox, with its id and payload', async () => {
    const sender = newUserId()
    const recipients = [newUserId(), newUserId()]
    const conversationId = Bun.randomUUIDv7()
    const sent = buildEvent('parley/chat', 'message.sent', {
      messageId: Bun.randomUUIDv7(),
      conversationId,
      senderId: sender,
      recipientIds: recipients,
      preview: 'See you at noon',
      createdAt: new Date().toISOString(),
    })
    await h.publishEvent(sent)
    // A redelivery stores nothing again, so it announces nothing again.
    await h.publishEvent(sent)
    await h.settled()
    for (const userId of recipients) {
      const [event, ...more] = await waitFor(
        () => (announcedTo(userId).length > 0 ? announcedTo(userId) : undefined),
        {
          what: `notification.created for ${userId}`,
        },
      )
      expect(more).toEqual([])
      const [row] = await h.sql<{ id: string }[]>`select id from notifications where user_id = ${userId}`
      expect(event?.data).toMatchObject({
        notificationId: row?.id,
        userId,
        type: 'message.received',
        payload: { conversationId, senderId: sender, preview: 'See you at noon' },
      })
      // Traceable to the message that caused it.
      expect(event?.correlationid).toBe(sent.id)
    }
    expect(announcedTo(sender)).toEqual([])
    await waitFor(async () => (await h.sql`select count(*)::int as n from outbox`)[0]?.n === 0, {
      what: 'the outbox to drain',
    })
  })

  test('conversation.added notifications are announced to the added participants, not the creator', async () => {
    const creator = newUserId()
    const added = newUserId()
    await h.publish('conversation.created', {
      conversationId: Bun.randomUUIDv7(),
      title: 'Plans',
      createdBy: creator,
      participantIds: [creator, added],
      createdAt: new Date().toISOString(),
    })
    await h.settled()
    const [event] = await waitFor(() => (announcedTo(added).length > 0 ? announcedTo(added) : undefined), {
      what: 'notification.created for the added participant',
    })
    expect(event?.data.type).toBe('conversation.added')
    expect(announcedTo(creator)).toEqual([])
  })
})

describe('message.deleted', () => {
  test('every notification quoting the message stops showing its text; others keep theirs; once per event', async () => {
    const sender = newUserId()
    const recipients = [newUserId(), newUserId()]
    const conversationId = Bun.randomUUIDv7()
    const sentEvent = (messageId: string, preview: string) =>
      buildEvent('parley/chat', 'message.sent', {
        messageId,
        conversationId,
        seq: 1,
        senderId: sender,
        recipientIds: recipients,
        preview,
        createdAt: new Date().toISOString(),
      })
    const deletedId = Bun.randomUUIDv7()
    const keptId = Bun.randomUUIDv7()
    await h.publishEvent(sentEvent(deletedId, 'a secret'))
    await h.publishEvent(sentEvent(keptId, 'still here'))
    await h.settled()
    const deleted = buildEvent('parley/chat', 'message.deleted', {
      messageId: deletedId,
      conversationId,
      seq: 1,
      senderId: sender,
      deletedBy: sender,
      // Who is in the conversation now: a recipient who left keeps no copy of the text either.
      participantIds: [sender, recipients[0] as string],
      deletedAt: new Date().toISOString(),
    })
    await h.publishEvent(deleted)
    await h.publishEvent(deleted)
    await h.settled()
    type Row = { user_id: string; payload: { messageId: string; preview: string; deleted?: boolean } }
    const rows = await waitFor(
      async () => {
        const found = await h.sql<Row[]>`
          select user_id, payload from notifications where user_id in ${h.sql(recipients)}`
        const redacted = found.filter((row) => row.payload.deleted === true)
        return redacted.length === recipients.length ? found : undefined
      },
      { what: 'the redacted notifications' },
    )
    expect(rows).toHaveLength(4)
    for (const row of rows) {
      if (row.payload.messageId === deletedId)
        expect(row.payload).toMatchObject({ preview: '', deleted: true })
      else expect(row.payload).toMatchObject({ messageId: keptId, preview: 'still here' })
    }
    expect(
      (await h.sql`select count(*)::int as n from processed_events where event_id = ${deleted.id}`)[0]?.n,
    ).toBe(1)
  })
})
