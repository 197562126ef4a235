import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import type { EventData } from '@parley/contracts'
import { mailsTo } from '@parley/testkit'
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

async function person(name: string, verified: boolean): Promise<Person> {
  const user = { id: newUserId(), email: uniqueAddress(), name }
  await handle('user.registered', registered(user.id, user.email, name, verified))
  return user
}

const messageMailsTo = async (address: string) =>
  (await mailsTo(address)).filter((mail) => mail.subject.startsWith('New message'))

function messageSent(
  senderId: string,
  recipientIds: string[],
  conversationId: string,
): EventData<'message.sent'> {
  return {
    messageId: Bun.randomUUIDv7(),
    conversationId,
    senderId,
    recipientIds,
    preview: 'Join my conversation',
    createdAt: new Date().toISOString(),
  }
}

async function deliveriesOf(
  recipientId: string,
): Promise<{ template: string; status: string; reason: string | null }[]> {
  return [
    ...(await h.sql<{ template: string; status: string; reason: string | null }[]>`
      select template, status, reason from email_deliveries where recipient_id = ${recipientId} order by created_at`),
  ]
}

const emails = (template: string, outcome: string) =>
  h.metric('notifications_emails_sent_total', { template, outcome })

describe('unverified addresses', () => {
  test('get their verification code, but no welcome and no new-message email until verified', async () => {
    const sender = await person('Spammer', true)
    const target = await person('Target', false)
    expect(await mailsTo(target.email)).toEqual([])

    await handle('user.email_verification_requested', {
      userId: target.id,
      email: target.email,
      displayName: target.name,
      code: '314159',
      expiresAt: new Date(Date.now() + 10 * 60_000).toISOString(),
    })
    const skippedBefore = await emails('new_message', 'unverified')
    await handle('message.sent', messageSent(sender.id, [target.id], Bun.randomUUIDv7()))

    const mails = await mailsTo(target.email)
    expect(mails.map((mail) => mail.subject)).toEqual(['Your Parley verification code'])
    expect(await deliveriesOf(target.id)).toEqual([
      { template: 'verification_code', status: 'sent', reason: null },
      { template: 'new_message', status: 'skipped', reason: 'unverified' },
    ])
    expect(await emails('new_message', 'unverified')).toBe(skippedBefore + 1)
  })

  test('once verified: the welcome email, then new-message email', async () => {
    const sender = await person('Friend', true)
    const user = await person('Newcomer', false)
    await handle('user.email_verified', {
      userId: user.id,
      email: user.email,
      verifiedAt: new Date().toISOString(),
    })
    const [welcome, ...others] = await mailsTo(user.email)
    expect(others).toEqual([])
    expect(welcome?.subject).toBe('Welcome to Parley, Newcomer')

    await handle('message.sent', messageSent(sender.id, [user.id], Bun.randomUUIDv7()))
    expect(await messageMailsTo(user.email)).toHaveLength(1)
  })
})

describe('per-recipient hourly cap', () => {
  test('caps new-message email across conversations; the rest are skipped and counted', async () => {
    const sender = await person('Adder', true)
    const [target, other] = await Promise.all([person('Popular', true), person('Bystander', true)])
    const cappedBefore = await emails('new_message', 'hourly_cap')
    // Five new conversations: the per-conversation throttle alone would send five emails.
    for (let conversation = 0; conversation < HOURLY_CAP + 2; conversation++)
      await handle('message.sent', messageSent(sender.id, [target.id], Bun.randomUUIDv7()))
    await handle('message.sent', messageSent(sender.id, [other.id], Bun.randomUUIDv7()))

    expect(await messageMailsTo(target.email)).toHaveLength(HOURLY_CAP)
    const rows = (await deliveriesOf(target.id)).filter((row) => row.template === 'new_message')
    expect(rows.filter((row) => row.status === 'sent')).toHaveLength(HOURLY_CAP)
    expect(rows.filter((row) => row.status === 'skipped')).toEqual([
      { template: 'new_message', status: 'skipped', reason: 'hourly_cap' },
      { template: 'new_message', status: 'skipped', reason: 'hourly_cap' },
    ])
    expect(await emails('new_message', 'hourly_cap')).toBe(cappedBefore + 2)
    // The cap is per recipient.
    expect(await messageMailsTo(other.email)).toHaveLength(1)
  })

  test('a capped conversation keeps no throttle window: it mails again once the cap frees up', async () => {
    const sender = await person('Adder Two', true)
    const target = await person('Capped', true)
    const conversations = Array.from({ length: HOURLY_CAP + 1 }, () => Bun.randomUUIDv7())
    for (const conversationId of conversations)
      await handle('message.sent', messageSent(sender.id, [target.id], conversationId))
    expect(await messageMailsTo(target.email)).toHaveLength(HOURLY_CAP)
    const capped = conversations.at(-1) ?? ''
    // What the sliding hour passing does: the oldest counted emails leave the window.
    await h.redis.del(`notification:email-cap:${target.id}`)
    await handle('message.sent', messageSent(sender.id, [target.id], capped))
    expect(await messageMailsTo(target.email)).toHaveLength(HOURLY_CAP + 1)
  })
})
