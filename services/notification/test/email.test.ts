import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { buildEvent } from '@parley/common/events'
import { presenceKey } from '@parley/contracts'
import { mailsTo, type ReceivedMail, waitFor } from '@parley/testkit'
import { EMAIL_QUEUE } from '../src/modules/mail/service'
import { INBOX_QUEUE } from '../src/modules/notifications/service'
import { type Harness, newUserId, registered, startHarness, uniqueAddress } from './support'

let h: Harness

beforeAll(async () => {
  h = await startHarness()
})

afterAll(async () => {
  await h?.close()
})

type Person = { id: string; email: string; name: string }

/** Registers a user through the event the auth service publishes, and waits for its welcome mail. */
async function person(name = 'Someone'): Promise<Person> {
  const user = { id: newUserId(), email: uniqueAddress(), name }
  await h.publish('user.registered', registered(user.id, user.email, name))
  await waitFor(async () => (await mailsTo(user.email)).length > 0 || undefined, { what: 'welcome mail' })
  await waitFor(
    async () => (await h.sql`select 1 from users where id = ${user.id}`).length > 0 || undefined,
    { what: 'users projection' },
  )
  return user
}

async function oneMailTo(address: string): Promise<ReceivedMail> {
  const mails = await waitFor(
    async () => {
      const received = await mailsTo(address)
      return received.length > 0 ? received : undefined
    },
    { what: `mail to ${address}` },
  )
  return mails[0]!
}

/** Waits until the queue has acknowledged `count` more events than at `baseline`. */
async function handled(queue: string, baseline: number, count = 1): Promise<void> {
  await waitFor(
    async () =>
      (await h.metric('events_consumed_total', { queue, outcome: 'ok' })) >= baseline + count || undefined,
    { what: `${count} event(s) handled on ${queue}` },
  )
}

const consumedOk = (queue: string) => h.metric('events_consumed_total', { queue, outcome: 'ok' })

function messageSent(
  senderId: string,
  recipientIds: string[],
  conversationId: string,
  preview = 'Hello there',
) {
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

describe('user.registered', () => {
  test('sends a welcome email to the new user', async () => {
    const email = uniqueAddress()
    await h.publish('user.registered', registered(newUserId(), email, 'Ada Lovelace'))
    const mail = await oneMailTo(email)
    expect(mail.to).toEqual([email])
    expect(mail.from).toBe('no-reply@parley.test')
    expect(mail.subject).toBe('Welcome to Parley, Ada Lovelace')
    expect(mail.text).toContain('Hi Ada Lovelace,')
    expect(mail.html).toContain('Welcome to Parley, Ada Lovelace')
    expect(
      await h.metric('notifications_emails_sent_total', { template: 'welcome', outcome: 'sent' }),
    ).toBeGreaterThan(0)
  })

  test('escapes markup in the display name and keeps the subject on one line', async () => {
    const email = uniqueAddress()
    // Display names are at most 64 characters: keep the injected address short.
    const injected = `bcc-${crypto.randomUUID().slice(0, 8)}@p.test`
    await h.publish(
      'user.registered',
      registered(newUserId(), email, `<script>alert(1)</script>\r\nBcc: ${injected}`),
    )
    const mail = await oneMailTo(email)
    expect(mail.html).not.toContain('<script>')
    expect(mail.html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;')
    expect(mail.subject).toBe(`Welcome to Parley, <script>alert(1)</script> Bcc: ${injected}`)
    expect(mail.to).toEqual([email])
    expect(await mailsTo(injected)).toEqual([])
  })

  test('the same event delivered twice sends one email', async () => {
    const email = uniqueAddress()
    const event = buildEvent('parley/auth', 'user.registered', registered(newUserId(), email, 'Twice'))
    const baseline = await consumedOk(EMAIL_QUEUE)
    await Promise.all([h.publisher.publishEvent(event), h.publisher.publishEvent(event)])
    await handled(EMAIL_QUEUE, baseline, 2)
    expect(await mailsTo(email)).toHaveLength(1)
  })
})

describe('user.email_verification_requested', () => {
  test('mails the code to the address being verified', async () => {
    const email = uniqueAddress()
    await h.publish('user.email_verification_requested', {
      userId: newUserId(),
      email,
      displayName: 'Grace',
      code: '042917',
      expiresAt: new Date(Date.now() + 15 * 60_000 + 30_000).toISOString(),
    })
    const mail = await oneMailTo(email)
    expect(mail.to).toEqual([email])
    expect(mail.subject).toBe('Your Parley verification code')
    expect(mail.subject).not.toContain('042917')
    expect(mail.text).toContain('Your code to confirm this email address is: 042917')
    expect(mail.text).toContain('It expires in 15 minutes')
    expect(mail.html).toContain('042917')
  })

  test('does not mail a code that expired before the event was handled', async () => {
    const email = uniqueAddress()
    const baseline = await consumedOk(EMAIL_QUEUE)
    await h.publish('user.email_verification_requested', {
      userId: newUserId(),
      email,
      displayName: 'Late',
      code: '111111',
      expiresAt: new Date(Date.now() - 1000).toISOString(),
    })
    await handled(EMAIL_QUEUE, baseline)
    expect(await mailsTo(email)).toEqual([])
    expect(
      await h.metric('notifications_emails_sent_total', {
        template: 'verification_code',
        outcome: 'expired',
      }),
    ).toBe(1)
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
    await h.publish(
      'message.sent',
      messageSent(sender.id, [a.id, b.id, c.id, sender.id], conversationId, 'Lunch?'),
    )
    for (const recipient of [a, b, c]) {
      const mail = await waitFor(
        async () => {
          const received = await mailsTo(recipient.email)
          return received.find((m) => m.subject.startsWith('New message')) ?? undefined
        },
        { what: `message mail to ${recipient.name}` },
      )
      expect(mail.subject).toBe('New message from Sam Sender on Parley')
      expect(mail.text).toContain(`Hi ${recipient.name},`)
      expect(mail.text).toContain('> Lunch?')
    }
    await waitFor(async () => (await notificationsOf(c.id)).length === 1 || undefined, {
      what: 'notifications',
    })
    for (const recipient of [a, b, c]) {
      const [notification, ...more] = await notificationsOf(recipient.id)
      expect(more).toEqual([])
      expect(notification?.type).toBe('message.received')
      expect(notification?.payload).toMatchObject({
        conversationId,
        senderId: sender.id,
        senderName: 'Sam Sender',
        preview: 'Lunch?',
      })
    }
    expect(await notificationsOf(sender.id)).toEqual([])
    expect((await mailsTo(sender.email)).filter((m) => m.subject.startsWith('New message'))).toEqual([])
  })

  test('escapes markup in the message preview and in names', async () => {
    const [sender, recipient] = await Promise.all([person('<b>Mallory</b>'), person('Rita')])
    await h.publish(
      'message.sent',
      messageSent(sender.id, [recipient.id], Bun.randomUUIDv7(), '<script>steal()</script> & <img src=x>'),
    )
    const mail = await waitFor(
      async () => {
        const received = await mailsTo(recipient.email)
        return received.find((m) => m.subject.startsWith('New message')) ?? undefined
      },
      { what: 'message mail' },
    )
    expect(mail.html).not.toContain('<script>')
    expect(mail.html).not.toContain('<img')
    expect(mail.html).not.toContain('<b>Mallory')
    expect(mail.html).toContain('&lt;script&gt;steal()&lt;/script&gt; &amp; &lt;img src=x&gt;')
    expect(mail.html).toContain('&lt;b&gt;Mallory&lt;/b&gt;')
    expect(mail.text).toContain('> <script>steal()</script> & <img src=x>')
  })

  test('the same event twice creates no duplicate notification or email', async () => {
    const [sender, recipient] = await Promise.all([person('Dup Sender'), person('Dup Recipient')])
    const event = buildEvent(
      'parley/chat',
      'message.sent',
      messageSent(sender.id, [recipient.id], Bun.randomUUIDv7()),
    )
    const [emailBaseline, inboxBaseline] = await Promise.all([
      consumedOk(EMAIL_QUEUE),
      consumedOk(INBOX_QUEUE),
    ])
    await Promise.all([h.publisher.publishEvent(event), h.publisher.publishEvent(event)])
    await Promise.all([handled(EMAIL_QUEUE, emailBaseline, 2), handled(INBOX_QUEUE, inboxBaseline, 2)])
    const messageMails = (await mailsTo(recipient.email)).filter((m) => m.subject.startsWith('New message'))
    expect(messageMails).toHaveLength(1)
    expect(await notificationsOf(recipient.id)).toHaveLength(1)
  })

  test('at most one email per recipient and conversation in 10 minutes; another conversation mails again', async () => {
    const [sender, recipient] = await Promise.all([person('Chatty'), person('Quiet')])
    const first = Bun.randomUUIDv7()
    const second = Bun.randomUUIDv7()
    const messageMails = async () =>
      (await mailsTo(recipient.email)).filter((m) => m.subject.startsWith('New message'))

    let baseline = await consumedOk(EMAIL_QUEUE)
    await h.publish('message.sent', messageSent(sender.id, [recipient.id], first, 'one'))
    await handled(EMAIL_QUEUE, baseline)
    expect(await messageMails()).toHaveLength(1)

    baseline = await consumedOk(EMAIL_QUEUE)
    await h.publish('message.sent', messageSent(sender.id, [recipient.id], first, 'two'))
    await handled(EMAIL_QUEUE, baseline)
    expect(await messageMails()).toHaveLength(1)

    baseline = await consumedOk(EMAIL_QUEUE)
    await h.publish('message.sent', messageSent(sender.id, [recipient.id], second, 'three'))
    await handled(EMAIL_QUEUE, baseline)
    const mails = await messageMails()
    expect(mails).toHaveLength(2)
    expect(mails[0]?.text).toContain('> three')
    // Every message still reaches the in-app inbox.
    await waitFor(async () => (await notificationsOf(recipient.id)).length === 3 || undefined, {
      what: 'three notifications',
    })
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
    const baseline = await consumedOk(EMAIL_QUEUE)
    await h.publish('message.sent', messageSent(sender.id, [online.id, offline.id], Bun.randomUUIDv7()))
    await handled(EMAIL_QUEUE, baseline)
    const mailsOf = async (p: Person) =>
      (await mailsTo(p.email)).filter((m) => m.subject.startsWith('New message'))
    expect(await mailsOf(online)).toEqual([])
    expect(await mailsOf(offline)).toHaveLength(1)
    await waitFor(async () => (await notificationsOf(online.id)).length === 1 || undefined, {
      what: 'in-app notification for the online recipient',
    })
  })

  test('greets recipients with the name from their latest profile update', async () => {
    const [sender, recipient] = await Promise.all([person('Nia'), person('Old Name')])
    const usersBaseline = await consumedOk('notification.users')
    await h.publish('user.profile_updated', {
      userId: recipient.id,
      displayName: 'New Name',
      bio: null,
      avatarUrl: null,
      updatedAt: new Date().toISOString(),
    })
    await handled('notification.users', usersBaseline)
    await h.publish('message.sent', messageSent(sender.id, [recipient.id], Bun.randomUUIDv7()))
    const mail = await waitFor(
      async () => {
        const received = await mailsTo(recipient.email)
        return received.find((m) => m.subject.startsWith('New message')) ?? undefined
      },
      { what: 'message mail' },
    )
    expect(mail.text).toContain('Hi New Name,')
  })

  test('an unknown recipient is retried, then dead-lettered; the others are mailed once', async () => {
    const [sender, known] = await Promise.all([person('Vic'), person('Known')])
    const unknown = newUserId()
    const eventId = await h.publish(
      'message.sent',
      messageSent(sender.id, [known.id, unknown], Bun.randomUUIDv7()),
    )
    const dead = await waitFor(
      async () => {
        const messages = await h.vhost.getMessages(`${EMAIL_QUEUE}.dead`, 50)
        return messages.find((message) => message.payload.includes(eventId)) ?? undefined
      },
      { what: 'dead-lettered event' },
    )
    expect(String(dead.properties.headers?.['x-parley-reason'])).toContain('not known yet')
    expect(
      await h.metric('events_consumed_total', { queue: EMAIL_QUEUE, outcome: 'retry' }),
    ).toBeGreaterThanOrEqual(3)
    const mails = (await mailsTo(known.email)).filter((m) => m.subject.startsWith('New message'))
    expect(mails).toHaveLength(1)
  })
})

describe('conversation.created', () => {
  test('notifies every participant but the creator', async () => {
    const [creator, a, b] = await Promise.all([person('Cleo'), person('Ari'), person('Ben')])
    const conversationId = Bun.randomUUIDv7()
    await h.publish('conversation.created', {
      conversationId,
      title: '<i>Plans</i>',
      createdBy: creator.id,
      participantIds: [creator.id, a.id, b.id],
      createdAt: new Date().toISOString(),
    })
    await waitFor(async () => (await notificationsOf(b.id)).length === 1 || undefined, {
      what: 'notifications',
    })
    for (const participant of [a, b]) {
      const [notification] = await notificationsOf(participant.id)
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
