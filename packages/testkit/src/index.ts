import { fileURLToPath } from 'node:url'
import { createLogger, type Logger } from '@parley/common'
import { runMigrations } from '@parley/common/postgres'
import { MongoClient } from 'mongodb'
import postgres from 'postgres'

/**
 * Where the real test servers are (scripts/infra.sh starts them). Every test file gets its
 * own database, vhost, Redis key prefix and MongoDB database, so files run in any order.
 */
export const testInfra = {
  postgresAdminUrl: process.env.TEST_DATABASE_ADMIN_URL ?? 'postgres://parley:parley@127.0.0.1:5432/parley',
  redisUrl: process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379',
  amqpHost: process.env.TEST_AMQP_HOST ?? '127.0.0.1:5672',
  rabbitManagementUrl: process.env.TEST_RABBITMQ_MANAGEMENT_URL ?? 'http://127.0.0.1:15672',
  rabbitUser: process.env.TEST_RABBITMQ_USER ?? 'guest',
  rabbitPassword: process.env.TEST_RABBITMQ_PASSWORD ?? 'guest',
  mongoUrl: process.env.TEST_MONGO_URL ?? 'mongodb://127.0.0.1:27017',
  smtpHost: process.env.TEST_SMTP_HOST ?? '127.0.0.1',
  smtpPort: Number(process.env.TEST_SMTP_PORT ?? 1025),
  mailApiUrl: process.env.TEST_MAIL_API_URL ?? 'http://127.0.0.1:8025',
}

/** A short unique name usable as a database, vhost, queue or key prefix. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${crypto.randomUUID().slice(0, 8)}`
    .toLowerCase()
    .replace(/[^a-z0-9_]/g, '_')
}

/** A logger that stays quiet in tests unless TEST_LOG_LEVEL is set. */
export function testLogger(service = 'test'): Logger {
  return createLogger(service, process.env.TEST_LOG_LEVEL ?? 'silent')
}

export type TestDatabase = { url: string; name: string; drop: () => Promise<void> }

/** Creates a fresh PostgreSQL database (with the service's migrations applied, if given). */
export async function createTestDatabase(migrationsFolder?: string | URL): Promise<TestDatabase> {
  const name = uniqueName('t')
  const admin = postgres(testInfra.postgresAdminUrl, { max: 1, onnotice: () => undefined })
  await admin.unsafe(`create database "${name}"`)
  await admin.end()
  const url = new URL(testInfra.postgresAdminUrl)
  url.pathname = `/${name}`
  if (migrationsFolder) {
    const folder = migrationsFolder instanceof URL ? fileURLToPath(migrationsFolder) : migrationsFolder
    await runMigrations(url.toString(), folder)
  }
  return {
    url: url.toString(),
    name,
    drop: async () => {
      const sql = postgres(testInfra.postgresAdminUrl, { max: 1, onnotice: () => undefined })
      await sql.unsafe(`drop database if exists "${name}" with (force)`)
      await sql.end()
    },
  }
}

async function rabbitApi(method: string, path: string, body?: unknown): Promise<Response> {
  const response = await fetch(`${testInfra.rabbitManagementUrl}/api${path}`, {
    method,
    headers: {
      authorization: `Basic ${btoa(`${testInfra.rabbitUser}:${testInfra.rabbitPassword}`)}`,
      'content-type': 'application/json',
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  if (!response.ok && response.status !== 404)
    throw new Error(`RabbitMQ ${method} ${path}: ${response.status}`)
  return response
}

export type TestVhost = {
  name: string
  url: string
  /** Messages currently in a queue of this vhost (management API; refreshed every few seconds by the broker). */
  queueMessages: (queue: string) => Promise<number | undefined>
  /** Takes up to `count` messages from a queue (management API), e.g. to inspect a dead-letter queue. */
  getMessages: (
    queue: string,
    count?: number,
  ) => Promise<{ payload: string; properties: { headers?: Record<string, unknown> } }[]>
  drop: () => Promise<void>
}

/** Creates a RabbitMQ vhost for one test file. */
export async function createTestVhost(): Promise<TestVhost> {
  const name = uniqueName('t')
  await rabbitApi('PUT', `/vhosts/${name}`, {})
  await rabbitApi('PUT', `/permissions/${name}/${testInfra.rabbitUser}`, {
    configure: '.*',
    write: '.*',
    read: '.*',
  })
  return {
    name,
    url: `amqp://${testInfra.rabbitUser}:${testInfra.rabbitPassword}@${testInfra.amqpHost}/${name}`,
    queueMessages: async (queue) => {
      const response = await rabbitApi('GET', `/queues/${name}/${encodeURIComponent(queue)}`)
      if (response.status === 404) return undefined
      const body = (await response.json()) as { messages?: number }
      return body.messages
    },
    getMessages: async (queue, count = 10) => {
      const response = await rabbitApi('POST', `/queues/${name}/${encodeURIComponent(queue)}/get`, {
        count,
        ackmode: 'ack_requeue_true',
        encoding: 'auto',
      })
      return (await response.json()) as {
        payload: string
        properties: { headers?: Record<string, unknown> }
      }[]
    },
    drop: async () => {
      await rabbitApi('DELETE', `/vhosts/${name}`)
    },
  }
}

export type TestMongo = { url: string; dbName: string; drop: () => Promise<void> }

export function createTestMongo(): TestMongo {
  const dbName = uniqueName('t')
  return {
    url: testInfra.mongoUrl,
    dbName,
    drop: async () => {
      const client = new MongoClient(testInfra.mongoUrl, { serverSelectionTimeoutMS: 3000 })
      try {
        await client.db(dbName).dropDatabase()
      } finally {
        await client.close()
      }
    },
  }
}

/** A Redis key prefix owning this test's keys. */
export function testRedisPrefix(): string {
  return `${uniqueName('t')}:`
}

export type ReceivedMail = {
  id: string
  from: string
  to: string[]
  subject: string
  text: string
  html: string
  date: string
}

/** Mail the SMTP sink received for `to`, newest first. */
export async function mailsTo(to: string): Promise<ReceivedMail[]> {
  const response = await fetch(
    `${testInfra.mailApiUrl}/api/v1/messages?to=${encodeURIComponent(to)}&limit=100`,
  )
  if (!response.ok) throw new Error(`mail sink: ${response.status}`)
  return ((await response.json()) as { messages: ReceivedMail[] }).messages
}

/** Polls until `probe` returns a value other than undefined/false, or fails after `timeoutMs`. */
export async function waitFor<T>(
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  { timeoutMs = 10_000, intervalMs = 50, what = 'condition' } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let lastError: unknown
  while (Date.now() < deadline) {
    try {
      const value = await probe()
      if (value !== undefined && value !== false) return value
    } catch (error) {
      lastError = error
    }
    await Bun.sleep(intervalMs)
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}`,
  )
}

/** Builds a JSON request for `app.handle`, with the Content-Length a real client would send. */
export function jsonRequest(
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Request {
  if (body === undefined) return new Request(`http://localhost${path}`, { method, headers })
  const text = typeof body === 'string' ? body : JSON.stringify(body)
  return new Request(`http://localhost${path}`, {
    method,
    headers: {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(text)),
      ...headers,
    },
    body: text,
  })
}

export type RawResponse = { status: number; headers: Headers; body: string }

/**
 * Sends one HTTP/1.1 request with `target` written on the wire exactly as given (fetch and
 * `new Request` normalise `..`, `%2e` and backslashes before anything is sent).
 */
export async function rawHttp(
  url: string,
  method: string,
  target: string,
  headers: Record<string, string> = {},
  body = '',
): Promise<RawResponse> {
  const { hostname, port } = new URL(url)
  const lines = [
    `${method} ${target} HTTP/1.1`,
    `host: ${hostname}:${port}`,
    'connection: close',
    ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
    ...(body ? [`content-length: ${Buffer.byteLength(body)}`] : []),
  ]
  const chunks: Buffer[] = []
  const { promise, resolve, reject } = Promise.withResolvers<void>()
  // Complete once the declared length (or the last chunk) arrived: a streamed response may
  // keep the connection open despite `connection: close`.
  const complete = (received: Buffer) => {
    const split = received.indexOf('\r\n\r\n')
    if (split < 0) return false
    const head = received.subarray(0, split).toString('latin1').toLowerCase()
    const length = /\r\ncontent-length: *(\d+)/.exec(head)?.[1]
    if (length !== undefined) return received.length - split - 4 >= Number(length)
    if (head.includes('transfer-encoding: chunked')) return received.subarray(-5).toString() === '0\r\n\r\n'
    return false
  }
  const socket = await Bun.connect({
    hostname,
    port: Number(port),
    socket: {
      data: (open, data) => {
        chunks.push(Buffer.from(data))
        if (complete(Buffer.concat(chunks))) {
          open.end()
          resolve()
        }
      },
      close: () => resolve(),
      error: (_socket, error) => reject(error),
    },
  })
  socket.write(`${lines.join('\r\n')}\r\n\r\n${body}`)
  await promise
  const text = Buffer.concat(chunks).toString('utf8')
  const split = text.indexOf('\r\n\r\n')
  const [statusLine = '', ...headerLines] = text.slice(0, split).split('\r\n')
  const parsed = new Headers()
  for (const line of headerLines) {
    const colon = line.indexOf(':')
    parsed.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim())
  }
  let rest = text.slice(split + 4)
  if (parsed.get('transfer-encoding')?.includes('chunked')) {
    let decoded = ''
    while (rest.length > 0) {
      const end = rest.indexOf('\r\n')
      const size = Number.parseInt(rest.slice(0, end), 16)
      if (!size) break
      decoded += rest.slice(end + 2, end + 2 + size)
      rest = rest.slice(end + 2 + size + 2)
    }
    rest = decoded
  }
  return { status: Number(statusLine.split(' ')[1]), headers: parsed, body: rest }
}

export * from './rabbit-node'
export * from './s3'
export * from './tokens'
