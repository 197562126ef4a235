import { afterAll, beforeAll, expect, setDefaultTimeout, test } from 'bun:test'
import { createServer } from 'node:net'
import { waitFor } from '@parley/testkit'
import { type ParsedMail, simpleParser } from 'mailparser'
import { SMTPServer } from 'smtp-server'
import { EMAIL_QUEUE } from '../src/modules/mail/service'
import { type Harness, newUserId, registered, startHarness, uniqueAddress } from './harness'

// Real servers on a shared 2-core machine: give the pipelines time under load (Bun's default is 5 s).
setDefaultTimeout(30_000)

/** An SMTP server of this test's own, so taking it down does not disturb the shared sink. */
class TestSmtpServer {
  readonly received: ParsedMail[] = []
  private server: SMTPServer | undefined

  constructor(
    readonly port: number,
    private readonly rejected: Set<string>,
  ) {}

  async start(): Promise<void> {
    const server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS', 'AUTH'],
      disableReverseLookup: true,
      logger: false,
      onRcptTo: (address, _session, callback) => {
        if (this.rejected.has(address.address)) {
          const error = Object.assign(new Error('5.1.1 No such mailbox'), { responseCode: 550 })
          return callback(error)
        }
        callback()
      },
      onData: (stream, _session, callback) => {
        simpleParser(stream).then(
          (mail) => {
            this.received.push(mail)
            callback()
          },
          (error: Error) => callback(error),
        )
      },
    })
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve))
    this.server = server
  }

  mailsTo(address: string): ParsedMail[] {
    return this.received.filter(
      (mail) => mail.to && !Array.isArray(mail.to) && mail.to.value[0]?.address === address,
    )
  }

  async stop(): Promise<void> {
    const server = this.server
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

/** A loopback port nothing listens on (the OS picked it free, and we closed it again). */
async function freePort(): Promise<number> {
  const probe = createServer()
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
  const address = probe.address()
  await new Promise<void>((resolve) => probe.close(() => resolve()))
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

const rejected = new Set<string>()
let smtp: TestSmtpServer
let h: Harness

beforeAll(async () => {
  smtp = new TestSmtpServer(await freePort(), rejected)
  h = await startHarness({
    SMTP_URL: `smtp://127.0.0.1:${smtp.port}`,
    // Enough retries to outlast the outage below, short enough for a test.
    NOTIFICATION_RETRY_DELAYS_MS: '200,400,800,1600,3200,6400',
  })
})

afterAll(async () => {
  await h?.close()
  await smtp?.stop()
})

const emails = (outcome: string) =>
  h.metric('notifications_emails_sent_total', { template: 'welcome', outcome })

test('SMTP down: the email is retried and delivered once the server is back', async () => {
  const email = uniqueAddress()
  const userId = newUserId()
  const eventId = await h.publish('user.registered', registered(userId, email, 'Patience', true))
  // Nothing listens yet: the send fails and the event goes to a retry queue.
  await waitFor(
    async () =>
      (await h.metric('events_consumed_total', { queue: EMAIL_QUEUE, outcome: 'retry' })) >= 1 || undefined,
    { what: 'the event sent to a retry queue' },
  )
  expect(await emails('failed')).toBeGreaterThanOrEqual(1)
  expect(smtp.received).toEqual([])

  await smtp.start()
  await h.settled()
  // Delivered exactly once, and nothing dead-lettered.
  const [mail, ...more] = smtp.mailsTo(email)
  expect(more).toEqual([])
  expect(mail?.subject).toBe('Welcome to Parley, Patience')
  expect(mail?.replyTo?.text).toBe('support@parley.test')
  expect(mail?.headers.get('auto-submitted')).toBe('auto-generated')
  expect(mail?.messageId).toBe(`<${eventId}.${userId}@parley.test>`)
  expect(await emails('sent')).toBe(1)
  expect(await h.vhost.getMessages(`${EMAIL_QUEUE}.dead`)).toEqual([])
})

test('a recipient the relay rejects for good is not retried; the rejection is counted', async () => {
  await h.settled()
  const email = uniqueAddress()
  rejected.add(email)
  const retries = await h.metric('events_consumed_total', { queue: EMAIL_QUEUE, outcome: 'retry' })
  const userId = newUserId()
  await h.publish('user.registered', registered(userId, email, 'Nobody', true))
  await h.settled()
  expect(await emails('rejected')).toBe(1)
  expect(await h.metric('events_consumed_total', { queue: EMAIL_QUEUE, outcome: 'retry' })).toBe(retries)
  const [row] = await h.sql<
    { status: string }[]
  >`select status from email_deliveries where recipient_id = ${userId}`
  expect(row?.status).toBe('rejected')
  expect(smtp.mailsTo(email)).toEqual([])
})
