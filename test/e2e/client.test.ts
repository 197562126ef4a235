/**
 * The typed client (@parley/client) against the end-to-end stack: the README's example, and the
 * event stream helper across a dropped connection (a TCP relay in front of the gateway cuts every
 * socket): it reconnects with backoff and resumes from its last cursor, missing and repeating
 * nothing.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { type Client, connectEvents, createClient, type EventsStatus, type StreamFrame } from '@parley/client'
import { waitFor } from '@parley/testkit'
import type { Socket, TCPSocketListener } from 'bun'
import { type Stack, startStack } from './stack'

let stack: Stack

beforeAll(async () => {
  stack = await startStack()
}, 120_000)

afterAll(async () => {
  await stack?.stop()
}, 60_000)

/** A loopback TCP relay to `port` whose connections can all be cut at once. */
function startRelay(port: number) {
  type Pair = { upstream?: Socket<Pair>; client?: Socket<Pair>; pending: Uint8Array[] }
  const pairs = new Set<Pair>()
  const listener: TCPSocketListener<Pair> = Bun.listen<Pair>({
    hostname: '127.0.0.1',
    port: 0,
    socket: {
      open(client) {
        const pair: Pair = { client, pending: [] }
        client.data = pair
        pairs.add(pair)
        void Bun.connect<Pair>({
          hostname: '127.0.0.1',
          port,
          socket: {
            open(upstream) {
              upstream.data = pair
              pair.upstream = upstream
              for (const chunk of pair.pending) upstream.write(chunk)
              pair.pending = []
            },
            data(_upstream, chunk) {
              pair.client?.write(chunk)
            },
            close() {
              pair.client?.end()
            },
          },
        })
      },
      data(client, chunk) {
        if (client.data.upstream) client.data.upstream.write(chunk)
        else client.data.pending.push(new Uint8Array(chunk))
      },
      close(client) {
        client.data.upstream?.end()
        pairs.delete(client.data)
      },
    },
  })
  return {
    url: `http://127.0.0.1:${listener.port}`,
    /** Cuts every relayed connection (both sides), as a network outage would. */
    dropAll() {
      for (const pair of pairs) {
        pair.client?.terminate()
        pair.upstream?.terminate()
      }
      pairs.clear()
    },
    stop: () => listener.stop(true),
  }
}

const uniqueEmail = (name: string) => `${name}.${crypto.randomUUID().slice(0, 8)}@client.parley.test`

async function registered(name: string): Promise<{ client: Client; id: string; token: string }> {
  let token: string | undefined
  const client = createClient({ baseUrl: stack.gateway.url, token: () => token })
  const { data, error } = await client.auth.register.post({
    email: uniqueEmail(name),
    displayName: name,
    password: `pw-${crypto.randomUUID()}`,
  })
  if (!data) throw new Error(`register ${name}: ${JSON.stringify(error)}`)
  token = data.accessToken
  return { client, id: data.user.id, token: data.accessToken }
}

describe('@parley/client through the gateway', () => {
  test('register, create a conversation, send a message and receive it on the event stream', async () => {
    const alice = await registered('Alice')
    const bob = await registered('Bob')
    const frames: StreamFrame[] = []
    const events = connectEvents({
      baseUrl: stack.gateway.url,
      token: () => bob.token,
      onEvent: (frame) => frames.push(frame),
    })
    await events.ready
    // Again until chat has learnt of Bob (user.registered travels through the broker).
    const conversation = await waitFor(
      async () => (await alice.client.conversations.post({ participantIds: [bob.id] })).data ?? undefined,
      { timeoutMs: 20_000, what: 'the conversation' },
    )
    const sent = await alice.client
      .conversations({ id: conversation.id })
      .messages.post({ body: 'Hello Bob' })
    expect(sent.status).toBe(201)
    const pushed = await waitFor(
      async () =>
        frames.find((frame) => frame.type === 'message.sent' && frame.data?.messageId === sent.data?.id),
      { timeoutMs: 20_000, what: 'the pushed message' },
    )
    expect(pushed.data?.preview).toBe('Hello Bob')
    expect(events.cursor()).toBe(frames.at(-1)?.cursor)
    events.close()

    // Errors come back typed as the documented problem, not thrown.
    const stranger = await bob.client.conversations({ id: crypto.randomUUID() }).get()
    expect(stranger.status).toBe(404)
    expect((stranger.error?.value as { type?: string } | undefined)?.type).toContain('not-found')
  }, 60_000)

  test('the event stream reconnects with backoff after a dropped connection and resumes without gaps', async () => {
    const alice = await registered('Ana')
    const bob = await registered('Bo')
    const relay = startRelay(stack.gateway.port)
    const frames: StreamFrame[] = []
    const statuses: EventsStatus[] = []
    const events = connectEvents({
      baseUrl: relay.url,
      token: () => bob.token,
      onEvent: (frame) => frames.push(frame),
      onStatus: (status) => statuses.push(status),
      initialDelayMs: 200,
      maxDelayMs: 1_000,
    })
    try {
      await events.ready
      const conversation = await waitFor(
        async () => (await alice.client.conversations.post({ participantIds: [bob.id] })).data ?? undefined,
        { timeoutMs: 20_000, what: 'the conversation' },
      )
      const messages = alice.client.conversations({ id: conversation.id }).messages
      const seen = () =>
        frames.filter((frame) => frame.type === 'message.sent').map((frame) => frame.data?.preview)
      await messages.post({ body: 'one' })
      await waitFor(async () => (seen().includes('one') ? true : undefined), { what: 'the first message' })

      // The outage: every socket cut; two messages sent meanwhile (straight to the gateway).
      relay.dropAll()
      await messages.post({ body: 'two' })
      await messages.post({ body: 'three' })
      await waitFor(async () => (seen().length === 3 ? true : undefined), {
        timeoutMs: 20_000,
        what: 'the messages sent while disconnected',
      })
      await messages.post({ body: 'four' })
      await waitFor(async () => (seen().length === 4 ? true : undefined), {
        what: 'the live message after it',
      })
      expect(seen()).toEqual(['one', 'two', 'three', 'four'])
      // Each stream event once: no event id twice across the reconnection (presence frames have none).
      const ids = frames.flatMap((frame) => (frame.cursor ? [frame.id] : []))
      expect(new Set(ids).size).toBe(ids.length)
      expect(statuses).toContain('reconnecting')
      expect(statuses.filter((status) => status === 'live').length).toBeGreaterThanOrEqual(2)
    } finally {
      events.close()
      relay.stop()
    }
  }, 60_000)
})
