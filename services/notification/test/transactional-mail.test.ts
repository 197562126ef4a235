import { afterAll, beforeAll, expect, setDefaultTimeout, test } from 'bun:test'
import { mailsTo, testInfra, waitFor } from '@parley/testkit'
import type { Socket, TCPSocketListener } from 'bun'
import { type Harness, newUserId, startHarness, uniqueAddress } from './harness'

// Real servers on a shared 2-core machine: give the pipelines time under load (Bun's default is 5 s).
setDefaultTimeout(60_000)

type Connection = { upstream: Socket | undefined; pending: Buffer[]; held: boolean; tail: string }

/**
 * An SMTP relay in front of the shared sink that stalls bulk mail: a connection stops forwarding,
 * mid-DATA, once it carries a message whose X-Parley-Template is anything but the verification
 * code, until `release()`. That is a relay slow on bulk mail, with nothing else changed: if codes
 * shared the bulk queue or SMTP pool, they would wait behind the stalled mail.
 */
class StallingRelay {
  private listener: TCPSocketListener<Connection> | undefined
  private readonly connections = new Set<Connection>()
  private stalling = true

  get port(): number {
    if (!this.listener) throw new Error('not started')
    return this.listener.port
  }

  get stalledConnections(): number {
    return [...this.connections].filter((connection) => connection.held).length
  }

  start(): void {
    const relay = this
    this.listener = Bun.listen<Connection>({
      hostname: '127.0.0.1',
      port: 0,
      socket: {
        open(client) {
          const connection: Connection = { upstream: undefined, pending: [], held: false, tail: '' }
          client.data = connection
          relay.connections.add(connection)
          void Bun.connect({
            hostname: testInfra.smtpHost,
            port: testInfra.smtpPort,
            socket: {
              open(upstream) {
                connection.upstream = upstream
                relay.forward(connection)
              },
              data(_upstream, chunk) {
                client.write(chunk)
              },
              close() {
                client.end()
              },
            },
          })
        },
        data(client, chunk) {
          const connection = client.data
          const text = connection.tail + chunk.toString('latin1')
          connection.tail = text.slice(-64)
          if (relay.stalling && /X-Parley-Template: (?!verification_code)/.test(text)) connection.held = true
          connection.pending.push(Buffer.from(chunk))
          relay.forward(connection)
        },
        close(client) {
          client.data.upstream?.end()
          relay.connections.delete(client.data)
        },
      },
    })
  }

  release(): void {
    this.stalling = false
    for (const connection of this.connections) {
      connection.held = false
      this.forward(connection)
    }
  }

  stop(): void {
    this.listener?.stop(true)
  }

  private forward(connection: Connection): void {
    if (!connection.upstream || connection.held) return
    for (const chunk of connection.pending.splice(0)) connection.upstream.write(chunk)
  }
}

const relay = new StallingRelay()
let h: Harness

beforeAll(async () => {
  relay.start()
  h = await startHarness({ SMTP_URL: `smtp://127.0.0.1:${relay.port}` })
})

afterAll(async () => {
  relay.release()
  await h?.close()
  relay.stop()
})

test('a verification code is mailed while bulk mail is stalled behind a deep queue', async () => {
  const sender = newUserId()
  const conversations = 30
  const perConversation = 4
  const recipients = Array.from({ length: conversations * perConversation }, () => {
    const email = uniqueAddress()
    return { id: newUserId(), email, verified_email: email, display_name: 'Reader', updated_at: new Date() }
  })
  // Straight into the projection: registering them would mail welcomes, which is not the point here.
  await h.sql`insert into users ${h.sql([
    {
      id: sender,
      email: uniqueAddress(),
      verified_email: null,
      display_name: 'Flooder',
      updated_at: new Date(),
    },
    ...recipients,
  ])}`
  // More events than the consumer's prefetch (20): some wait in the bulk queue itself.
  for (let index = 0; index < conversations; index++)
    await h.publish('message.sent', {
      messageId: Bun.randomUUIDv7(),
      conversationId: Bun.randomUUIDv7(),
      senderId: sender,
      recipientIds: recipients.slice(index * perConversation, (index + 1) * perConversation).map((r) => r.id),
      preview: 'flood',
      createdAt: new Date().toISOString(),
    })
  await waitFor(() => relay.stalledConnections >= 1, { what: 'bulk mail stalled at the relay' })

  const codeAddress = uniqueAddress()
  await h.publish('user.email_verification_requested', {
    userId: newUserId(),
    email: codeAddress,
    displayName: 'Waiting',
    code: '271828',
    expiresAt: new Date(Date.now() + 10 * 60_000).toISOString(),
  })
  const [code] = await waitFor(
    async () => {
      const mails = await mailsTo(codeAddress)
      return mails.length > 0 && mails
    },
    { timeoutMs: 20_000, what: 'the verification code at the sink' },
  )
  expect(code?.text).toContain('271828')
  // Arrived while every bulk email was still held: it overtook the whole backlog.
  expect(
    await h.metric('notifications_emails_sent_total', { template: 'new_message', outcome: 'sent' }),
  ).toBe(0)
  expect(relay.stalledConnections).toBeGreaterThanOrEqual(1)

  // The stall ends: the bulk backlog is delivered too, nothing lost.
  relay.release()
  await h.settled()
  expect(
    await h.metric('notifications_emails_sent_total', { template: 'new_message', outcome: 'sent' }),
  ).toBe(recipients.length)
  expect((await mailsTo(recipients[0]?.email ?? '')).map((mail) => mail.subject)).toEqual([
    'New message from Flooder on Parley',
  ])
})
