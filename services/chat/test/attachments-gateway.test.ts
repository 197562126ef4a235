import { afterAll, beforeAll, expect, test } from 'bun:test'
import { testS3Client, waitFor } from '@parley/testkit'
import { type Stack, startStack } from '../../../test/e2e/stack'

// Every service as its own process behind the gateway, chat on the shared S3 server.
let stack: Stack

beforeAll(async () => {
  stack = await startStack()
}, 120_000)

afterAll(async () => {
  await stack.stop()
}, 60_000)

type Json = Record<string, unknown>

async function api(method: string, path: string, token?: string, body?: unknown) {
  const response = await fetch(`${stack.gateway.url}/api/v1${path}`, {
    method,
    headers: {
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  const text = await response.text()
  return { status: response.status, body: (text ? JSON.parse(text) : undefined) as Json }
}

async function register(name: string): Promise<{ accessToken: string; user: { id: string } }> {
  const email = `${name}.${crypto.randomUUID().slice(0, 8)}@e2e.parley.test`
  const reply = await api('POST', '/auth/register', undefined, {
    email,
    displayName: name,
    password: `pw-${crypto.randomUUID()}`,
  })
  expect(reply.status).toBe(201)
  return reply.body as unknown as { accessToken: string; user: { id: string } }
}

test('through the gateway: declare, PUT, send, and the other participant downloads the bytes', async () => {
  const [alice, bob] = await Promise.all([register('Alice'), register('Bob')])
  const conversation = await waitFor(
    async () => {
      const created = await api('POST', '/conversations', alice.accessToken, {
        participantIds: [bob.user.id],
      })
      return created.status === 201 ? created.body : undefined
    },
    { timeoutMs: 20_000, what: 'conversation creation' },
  )
  const bytes = new TextEncoder().encode('minutes of the meeting\n')
  const declared = await api('POST', '/attachments', alice.accessToken, {
    filename: 'minutes.txt',
    contentType: 'text/plain',
    size: bytes.length,
  })
  expect(declared.status).toBe(201)
  const upload = declared.body.upload as { url: string; headers: Record<string, string> }
  expect((await fetch(upload.url, { method: 'PUT', body: bytes, headers: upload.headers })).status).toBe(200)

  const sent = await api('POST', `/conversations/${conversation.id}/messages`, alice.accessToken, {
    attachmentIds: [declared.body.id],
  })
  expect(sent.status).toBe(201)
  const single = await api('GET', `/attachments/${declared.body.id}`, bob.accessToken)
  expect(single.status).toBe(200)
  const download = await fetch((single.body.download as { url: string }).url)
  expect(new Uint8Array(await download.arrayBuffer())).toEqual(bytes)
  expect(download.headers.get('content-disposition')).toStartWith('attachment;')

  // The gateway's API document lists the attachment routes.
  const docs = await fetch(`${stack.gateway.url}/docs/json`).then((response) => response.json())
  expect(Object.keys((docs as { paths: Json }).paths)).toContain('/api/v1/attachments')
  // The bucket is shared: leave nothing behind.
  await testS3Client().delete(`attachments/${declared.body.id}`)
})
