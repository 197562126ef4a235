import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import { type EventData, presenceKey } from '@parley/contracts'
import { mailsTo, type ReceivedMail, waitFor } from '@parley/testkit'
import { type Harness, newUserId, registered, startHarness, uniqueAddress } from './harness'

// Real servers on a shared 2-core machine: give the pipelines time under load (Bun's default is 5 s).
setDefaultTimeout(30_000)

const HOURLY_CAP = 3

let h: Harness

beforeAll(async () => {
  h = await startHarness({ MESSAGE_EMAIL_HOURLY_CAP: String(HOURLY_CAP) })
})

afterAll(async () => {
  await h?.close()
})

type Person = { id: string; email: string; name: string }

async function handle<T extends Parameters<Harness['publish']>[0]>(
  type: T,
  data: EventData<T>,
): Promise<string> {
  const id = await h.publish(type, data)
  await h.settled()
  return id
}

async function person(name: string): Promise<Person> {
  const user = { id: newUserId(), email: uniqueAddress(), name }
  await handle('user.registered', registered(user.id, user.email, name, true))
  return user
}

const mentionMailsTo = async (address: string): Promise<ReceivedMail[]> =>
  (await mailsTo(address)).filter((mail) => mail.subject.includes('mentioned you'))
const messageMailsTo = async (address: string): Promise<ReceivedMail[]> =>
  (await mailsTo(address)).filter((mail) => mail.subject.startsWith('New message'))

function messageSent(
  sender: Person,
  recipients: Person[],
  conversationId: string,
  extra: Partial<EventData<'message.sent'>> = {},
): EventData<'message.sent'> {
  return {
    messageId: Bun.randomUUIDv7(),
    conversationId,
    senderId: sender.id,
    recipientIds: recipients.map((recipient) => recipient.id),
    preview: 'Look at this',
    createdAt: new Date().toISOString(),
    ...extra,
  }
}

async function typesOf(userId: string): Promise<string[]> {
  const rows = await h.sql<{ type: string }[]>`
    select type from notifications where user_id = ${userId} order by id`
  return rows.map((row) => row.type)
}

const emails = (template: string, outcome: string) =>
  h.metric('notifications_emails_sent_total', { template, outcome })

describe('mentions', () => {
  test('a mention notifies in-app as `mention` and mails each time, outside the per-conversation window', async () => {
    const [sender, target, bystander] = await Promise.all([person('Sam'), person('Tess'), person('Bea')])
    const conversationId = Bun.randomUUIDv7()
    for (let index = 0; index < 2; index++)
      await handle(
        'message.sent',
        messageSent(sender, [target, bystander], conversationId, { mentionedUserIds: [target.id] }),
      )
    expect(await typesOf(target.id)).toEqual(['mention', 'mention'])
    expect(await typesOf(bystander.id)).toEqual(['message.received', 'message.received'])
    const mails = await mentionMailsTo(target.email)
    expect(mails).toHaveLength(2)
    expect(mails[0]?.subject).toBe('Sam mentioned you on Parley')
    expect(mails[0]?.text).toContain('> Look at this')
    expect(await messageMailsTo(target.email)).toEqual([])
    // The bystander's new-message emails are still throttled per conversation: one.
    expect(await messageMailsTo(bystander.email)).toHaveLength(1)
    expect(await h.metric('notifications_created_total', { type: 'mention' })).toBeGreaterThanOrEqual(2)
    expect(await emails('mention', 'sent')).toBeGreaterThanOrEqual(2)
  })

  test('a mention notifies even when the conversation is muted; the other muted recipient gets nothing', async () => {
    const [sender, mutedMentioned, mutedOther] = await Promise.all([
      person('Mia'),
      person('Max'),
      person('Mo'),
    ])
    await handle(
      'message.sent',
      messageSent(sender, [mutedMentioned, mutedOther], Bun.randomUUIDv7(), {
        mutedUserIds: [mutedMentioned.id, mutedOther.id],
        mentionedUserIds: [mutedMentioned.id],
      }),
    )
    expect(await typesOf(mutedMentioned.id)).toEqual(['mention'])
    expect(await mentionMailsTo(mutedMentioned.email)).toHaveLength(1)
    expect(await typesOf(mutedOther.id)).toEqual([])
    expect(
      await mailsTo(mutedOther.email).then((all) =>
        all.filter((mail) => !mail.subject.startsWith('Welcome')),
      ),
    ).toEqual([])
  })

  test('mention emails count against the per-recipient hourly cap, shared with message emails', async () => {
    const [sender, target] = await Promise.all([person('Cap Sender'), person('Capped')])
    const capped = await emails('mention', 'hourly_cap')
    const conversationId = Bun.randomUUIDv7()
    for (let index = 0; index <= HOURLY_CAP; index++)
      await handle(
        'message.sent',
        messageSent(sender, [target], conversationId, { mentionedUserIds: [target.id] }),
      )
    expect(await mentionMailsTo(target.email)).toHaveLength(HOURLY_CAP)
    expect(await emails('mention', 'hourly_cap')).toBe(capped + 1)
    // In-app notifications are not capped.
    expect(await typesOf(target.id)).toHaveLength(HOURLY_CAP + 1)
    // The cap is one budget: a plain message elsewhere is over it too.
    await handle('message.sent', messageSent(sender, [target], Bun.randomUUIDv7()))
    expect(await messageMailsTo(target.email)).toEqual([])
    const rows = await h.sql<{ template: string; reason: string | null }[]>`
      select template, reason from email_deliveries where recipient_id = ${target.id} and status = 'skipped'`
    expect(rows.map((row) => `${row.template}:${row.reason}`).sort()).toEqual([
      'mention:hourly_cap',
      'new_message:hourly_cap',
    ])
  })

  test('an online mentioned user gets the in-app mention, no email; a deleted message redacts it', async () => {
    const [sender, online] = await Promise.all([person('Oli'), person('Ona')])
    await h.redis.zadd(presenceKey(online.id), Date.now() + 60_000, 'connection-1')
    const conversationId = Bun.randomUUIDv7()
    const sent = messageSent(sender, [online], conversationId, { mentionedUserIds: [online.id], seq: 1 })
    await handle('message.sent', sent)
    expect(await typesOf(online.id)).toEqual(['mention'])
    expect(await mentionMailsTo(online.email)).toEqual([])
    await handle('message.deleted', {
      messageId: sent.messageId,
      conversationId,
      seq: 1,
      senderId: sender.id,
      deletedBy: sender.id,
      participantIds: [sender.id, online.id],
      deletedAt: new Date().toISOString(),
    })
    // The harness does not count message.deleted among the events it settles: wait for the row.
    const row = await waitFor(
      async () => {
        const [found] = await h.sql<{ payload: Record<string, unknown> }[]>`
          select payload from notifications where user_id = ${online.id}`
        return found?.payload.deleted === true ? found : undefined
      },
      { what: 'the redacted mention' },
    )
    expect(row?.payload).toMatchObject({ preview: '', deleted: true })
  })
})
