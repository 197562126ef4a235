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
