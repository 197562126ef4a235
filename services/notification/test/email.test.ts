import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import { buildEvent } from '@parley/common/events'
import { type EventData, presenceKey } from '@parley/contracts'
import { mailsTo, type ReceivedMail } from '@parley/testkit'
import { EMAIL_QUEUE } from '../src/modules/mail/service'
import { type Harness, newUserId, registered, startHarness, uniqueAddress } from './harness'

// Real servers on a shared 2-core machine: give the pipelines time under load (Bun's default is 5 s).
setDefaultTimeout(30_000)

let h: Harness

beforeAll(async () => {
  h = await startHarness()
})

afterAll(async () => {
  await h?.close()
})

type Person = { id: string; email: string; name: string }

/** Registers a user (verified: only verified addresses get mail) through the event the auth service publishes, and waits until it is handled. */
async function person(name = 'Someone'): Promise<Person> {
  const user = { id: newUserId(), email: uniqueAddress(), name }
  await h.publish('user.registered', registered(user.id, user.email, name, true))
  await h.settled()
  return user
}

/** Publishes and waits until every consumer has handled it. */
async function handle<T extends Parameters<Harness['publish']>[0]>(
  type: T,
  data: EventData<T>,
): Promise<string> {
  const id = await h.publish(type, data)
  await h.settled()
  return id
}

/** Mail to `address` about new messages, oldest first. */
async function messageMailsTo(address: string): Promise<ReceivedMail[]> {
  return (await mailsTo(address)).filter((mail) => mail.subject.startsWith('New message')).reverse()
}

function messageSent(
  senderId: string,
  recipientIds: string[],
  conversationId: string,
  preview = 'Hello there',
): EventData<'message.sent'> {
  return {
    messageId: Bun.randomUUIDv7(),
    conversationId,
    senderId,
    recipientIds,
    preview,
    createdAt: new Date().toISOString(),
  }
}

async function notificationsOf(
  userId: string,
): Promise<{ type: string; payload: Record<string, unknown> }[]> {
  return [
    ...(await h.sql<{ type: string; payload: Record<string, unknown> }[]>`
      select type, payload from notifications where user_id = ${userId} order by id`),
  ]
}

const emails = (template: string, outcome: string) =>
  h.metric('notifications_emails_sent_total', { template, outcome })

describe('user.registered', () => {
  test('sends a welcome email to a new user whose address is verified', async () => {
    const email = uniqueAddress()
    await handle('user.registered', registered(newUserId(), email, 'Ada Lovelace', true))
    const [mail, ...more] = await mailsTo(email)
    expect(more).toEqual([])
    expect(mail?.to).toEqual([email])
    expect(mail?.from).toBe('no-reply@parley.test')
    expect(mail?.subject).toBe('Welcome to Parley, Ada Lovelace')
    expect(mail?.text).toContain('Hi Ada Lovelace,')
    expect(mail?.html).toContain('Welcome to Parley, Ada Lovelace')
    expect(await emails('welcome', 'sent')).toBeGreaterThan(0)
  })

  test('escapes markup in the display name and keeps the subject on one line', async () => {
    const email = uniqueAddress()
    // Display names are at most 64 characters: keep the injected address short.
    const injected = `bcc-${crypto.randomUUID().slice(0, 8)}@p.test`
    await handle(
      'user.registered',
      registered(newUserId(), email, `<script>alert(1)</script>\r\nBcc: ${injected}`, true),
    )
    const [mail] = await mailsTo(email)
    expect(mail?.html).not.toContain('<script>')
    expect(mail?.html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;')
    expect(mail?.subject).toBe(`Welcome to Parley, <script>alert(1)</script> Bcc: ${injected}`)
    expect(mail?.to).toEqual([email])
    expect(await mailsTo(injected)).toEqual([])
  })

  test('the same event delivered twice sends one email', async () => {
    const email = uniqueAddress()
    const event = buildEvent('parley/auth', 'user.registered', registered(newUserId(), email, 'Twice', true))
    await Promise.all([h.publishEvent(event), h.publishEvent(event)])
    await h.settled()
    expect(await mailsTo(email)).toHaveLength(1)
  })
})

describe('user.email_verification_requested', () => {
  test('mails the code to the address being verified', async () => {
    const email = uniqueAddress()
    await handle('user.email_verification_requested', {
      userId: newUserId(),
      email,
      displayName: 'Grace',
      code: '042917',
      expiresAt: new Date(Date.now() + 15 * 60_000 + 30_000).toISOString(),
    })
    const [mail] = await mailsTo(email)
    expect(mail?.to).toEqual([email])
    expect(mail?.subject).toBe('Your Parley verification code')
    expect(mail?.text).toContain('Your code to confirm this email address is: 042917')
    expect(mail?.text).toContain('It expires in 15 minutes')
    expect(mail?.html).toContain('042917')
  })

  test('does not mail a code that expired before the event was handled', async () => {
    const email = uniqueAddress()
    await handle('user.email_verification_requested', {
      userId: newUserId(),
      email,
      displayName: 'Late',
      code: '111111',
      expiresAt: new Date(Date.now() - 1000).toISOString(),
    })
    expect(await mailsTo(email)).toEqual([])
    expect(await emails('verification_code', 'expired')).toBe(1)
  })
})

describe('message.sent', () => {
  test('three recipients get one notification and one email each; the sender gets neither', async () => {
    const [sender, a, b, c] = await Promise.all([
      person('Sam Sender'),
      person('Ann'),
      person('Bob'),
      person('Cy'),
    ])
    const conversationId = Bun.randomUUIDv7()
    // The sender also listed as a recipient: still never notified.
    await handle(
      'message.sent',
      messageSent(sender.id, [a.id, b.id, c.id, sender.id], conversationId, 'Lunch?'),
    )
    for (const recipient of [a, b, c]) {
      const [mail, ...more] = await messageMailsTo(recipient.email)
      expect(more).toEqual([])
      expect(mail?.subject).toBe('New message from Sam Sender on Parley')
      expect(mail?.text).toContain(`Hi ${recipient.name},`)
      expect(mail?.text).toContain('> Lunch?')
      const [notification, ...others] = await notificationsOf(recipient.id)
      expect(others).toEqual([])
      expect(notification?.type).toBe('message.received')
      expect(notification?.payload).toMatchObject({
        conversationId,
        senderId: sender.id,
        senderName: 'Sam Sender',
        preview: 'Lunch?',
      })
    }
    expect(await notificationsOf(sender.id)).toEqual([])
    expect(await messageMailsTo(sender.email)).toEqual([])
  })

  test('escapes markup in the message preview and in names', async () => {
    const [sender, recipient] = await Promise.all([person('<b>Mallory</b>'), person('Rita')])
    await handle(
      'message.sent',
      messageSent(sender.id, [recipient.id], Bun.randomUUIDv7(), '<script>steal()</script> & <img src=x>'),
    )
    const [mail] = await messageMailsTo(recipient.email)
    expect(mail?.html).not.toContain('<script>')
    expect(mail?.html).not.toContain('<img')
    expect(mail?.html).not.toContain('<b>Mallory')
    expect(mail?.html).toContain('&lt;script&gt;steal()&lt;/script&gt; &amp; &lt;img src=x&gt;')
    expect(mail?.html).toContain('&lt;b&gt;Mallory&lt;/b&gt;')
    expect(mail?.text).toContain('> <script>steal()</script> & <img src=x>')
  })

  test('the same event twice creates no duplicate notification or email', async () => {
    const [sender, recipient] = await Promise.all([person('Dup Sender'), person('Dup Recipient')])
    const event = buildEvent(
      'parley/chat',
      'message.sent',
      messageSent(sender.id, [recipient.id], Bun.randomUUIDv7()),
    )
    await Promise.all([h.publishEvent(event), h.publishEvent(event)])
    await h.settled()
    expect(await messageMailsTo(recipient.email)).toHaveLength(1)
    expect(await notificationsOf(recipient.id)).toHaveLength(1)
  })

  test('at most one email per recipient and conversation in 10 minutes; another conversation mails again', async () => {
    const [sender, recipient] = await Promise.all([person('Chatty'), person('Quiet')])
    const first = Bun.randomUUIDv7()
    const second = Bun.randomUUIDv7()

    await handle('message.sent', messageSent(sender.id, [recipient.id], first, 'one'))
    expect(await messageMailsTo(recipient.email)).toHaveLength(1)
    await handle('message.sent', messageSent(sender.id, [recipient.id], first, 'two'))
    expect(await messageMailsTo(recipient.email)).toHaveLength(1)
    await handle('message.sent', messageSent(sender.id, [recipient.id], second, 'three'))
    const mails = await messageMailsTo(recipient.email)
    expect(mails.map((mail) => mail.text.includes('> one') || mail.text.includes('> three'))).toEqual([
      true,
      true,
    ])
    expect(mails[1]?.text).toContain('> three')
    expect(await emails('new_message', 'throttled')).toBeGreaterThanOrEqual(1)
    // Every message still reaches the in-app inbox.
    expect(await notificationsOf(recipient.id)).toHaveLength(3)
  })

  test('an online recipient gets the in-app notification but no email', async () => {
    const [sender, online, offline] = await Promise.all([
      person('Pat'),
      person('Olive Online'),
      person('Otto Offline'),
    ])
    await h.redis.zadd(presenceKey(online.id), Date.now() + 60_000, 'connection-1')
    // A connection whose heartbeat lapsed does not count.
    await h.redis.zadd(presenceKey(offline.id), Date.now() - 1_000, 'connection-stale')
    await handle('message.sent', messageSent(sender.id, [online.id, offline.id], Bun.randomUUIDv7()))
    expect(await messageMailsTo(online.email)).toEqual([])
    expect(await messageMailsTo(offline.email)).toHaveLength(1)
    expect(await notificationsOf(online.id)).toHaveLength(1)
    expect(await emails('new_message', 'recipient_online')).toBeGreaterThanOrEqual(1)
  })

  test('a recipient who muted the conversation gets neither an in-app notification nor an email', async () => {
    const [sender, muted, other] = await Promise.all([person('Mo'), person('Mute Muriel'), person('Una')])
    await handle('message.sent', {
      ...messageSent(sender.id, [muted.id, other.id], Bun.randomUUIDv7(), 'Quiet please'),
      mutedUserIds: [muted.id],
    })
    expect(await notificationsOf(muted.id)).toEqual([])
    expect(await messageMailsTo(muted.email)).toEqual([])
    expect(await notificationsOf(other.id)).toHaveLength(1)
    expect(await messageMailsTo(other.email)).toHaveLength(1)
    expect(await emails('new_message', 'muted')).toBeGreaterThanOrEqual(1)
  })

  test('greets recipients with the name from their latest profile update', async () => {
    const [sender, recipient] = await Promise.all([person('Nia'), person('Old Name')])
    await handle('user.profile_updated', {
      userId: recipient.id,
      displayName: 'New Name',
      bio: null,
      avatarUrl: null,
      updatedAt: new Date().toISOString(),
    })
    await handle('message.sent', messageSent(sender.id, [recipient.id], Bun.randomUUIDv7()))
    const [mail] = await messageMailsTo(recipient.email)
    expect(mail?.text).toContain('Hi New Name,')
  })

  test('an unknown recipient is retried, then dead-lettered; the others are mailed once', async () => {
    const [sender, known] = await Promise.all([person('Vic'), person('Known')])
    const retries = await h.metric('events_consumed_total', { queue: EMAIL_QUEUE, outcome: 'retry' })
    const eventId = await handle(
      'message.sent',
      messageSent(sender.id, [known.id, newUserId()], Bun.randomUUIDv7()),
    )
    const dead = (await h.vhost.getMessages(`${EMAIL_QUEUE}.dead`, 50)).find((message) =>
      message.payload.includes(eventId),
    )
    // The header names the failure's kind, never its text (see EventBus deadLetterHeaders).
    expect(dead?.properties.headers?.['x-parley-reason']).toBe('failed')
    expect(dead?.properties.headers?.['x-parley-error']).toBe('DeliveryIncompleteError')
    // Three retries (NOTIFICATION_RETRY_DELAYS_MS has three delays), then the dead-letter queue.
    expect(await h.metric('events_consumed_total', { queue: EMAIL_QUEUE, outcome: 'retry' })).toBe(
      retries + 3,
    )
    expect(await messageMailsTo(known.email)).toHaveLength(1)
  })
})

describe('conversation.created', () => {
  test('notifies every participant but the creator', async () => {
    const [creator, a, b] = await Promise.all([person('Cleo'), person('Ari'), person('Ben')])
    const conversationId = Bun.randomUUIDv7()
    await handle('conversation.created', {
      conversationId,
      title: '<i>Plans</i>',
      createdBy: creator.id,
      participantIds: [creator.id, a.id, b.id],
      createdAt: new Date().toISOString(),
    })
    for (const participant of [a, b]) {
      const [notification, ...more] = await notificationsOf(participant.id)
      expect(more).toEqual([])
      expect(notification?.type).toBe('conversation.added')
      expect(notification?.payload).toEqual({
        conversationId,
        title: '<i>Plans</i>',
        createdBy: creator.id,
        createdByName: 'Cleo',
        participantCount: 3,
      })
    }
    expect(await notificationsOf(creator.id)).toEqual([])
  })
})
