/**
 * Messaging: send, edit and reaction throughput through the gateway, and what reactions and
 * thread summaries add to a page.
 *
 * 1. Throughput: chat and one gateway as their own processes (as deployed) on the local
 *    PostgreSQL/FerretDB, Redis and RabbitMQ, rate limits raised. BENCH_MSG_OPS requests of each
 *    kind, BENCH_MSG_CONCURRENCY at a time, by 8 participants of one conversation: the baseline is
 *    a read through the same path (GET /conversations/:id: token, limits, proxy, chat, its store);
 *    then sends, edits of those messages by their authors, and reactions to them. Prints req/s,
 *    p50/p99 and the ratios against sends and against the read.
 * 2. Page cost: the chat app in this process (app.handle, no network) over two conversations of
 *    BENCH_MSG_PAGE_MESSAGES messages in the same collections: one plain, one where every message
 *    has 3 reactions and every 4th starts a thread of 2 replies. Times the `before=<newest>` page
 *    and the latest page (its Redis copy dropped) and counts the MongoDB commands each sends
 *    (driver command monitoring): the count must not grow with the page size, i.e. no query per
 *    message. Prints decorated/plain ratios.
 *
 *   bun bench/chat/messaging.ts     BENCH_MSG_OPS=1000 BENCH_MSG_CONCURRENCY=16 bun bench/chat/messaging.ts
 */

import { join } from 'node:path'
import {
  createTestSigner,
  createTestVhost,
  jsonRequest,
  testInfra,
  testS3Env,
  uniqueName,
} from '../../packages/testkit/src/index.ts'
import { MongoClient } from '../../services/chat/node_modules/mongodb'
import { freePort, percentile, waitForHttp } from '../lib.ts'
import { inProcessChat } from './app.ts'

const ops = Number(process.env.BENCH_MSG_OPS ?? 300)
const concurrency = Number(process.env.BENCH_MSG_CONCURRENCY ?? 8)
const pageMessages = Number(process.env.BENCH_MSG_PAGE_MESSAGES ?? 120)
const reps = Number(process.env.BENCH_MSG_REPS ?? 7)
const root = new URL('../..', import.meta.url).pathname
const EMOJIS = ['👍', '❤️', '😂', '🎉', '👀', '🚀', '🙏', '🔥']
const PARTICIPANTS = 8

const signer = await createTestSigner()
const exp = Math.floor(Date.now() / 1000) + 3600
const users = await Promise.all(
  Array.from({ length: PARTICIPANTS }, async (_, index) => {
    const id = Bun.randomUUIDv7()
    return { id, displayName: `User ${index}`, token: await signer.sign({ sub: id, exp }) }
  }),
)
type User = (typeof users)[number]
const user = (index: number) => users[index % users.length] as User
const ratio = (name: string, value: number) => console.log(`  ${name.padEnd(58)} ${value.toFixed(2)}x`)

// --- 1. throughput through the gateway ------------------------------------------------------
type Run = { name: string; perSecond: number; p50: number; p99: number; failed: number }

async function throughputThroughGateway(): Promise<void> {
  const jwks = Bun.serve({ hostname: '127.0.0.1', port: 0, fetch: () => Response.json(signer.jwks) })
  const vhost = await createTestVhost()
  const mongoDb = uniqueName('bench_msg')
  const mongo = new MongoClient(testInfra.mongoUrl)
  await mongo.connect()
  const unlimited = { limit: 1_000_000_000, windowSeconds: 60 }
  const env = {
    ...process.env,
    HOST: '127.0.0.1',
    LOG_LEVEL: 'warn',
    REDIS_URL: testInfra.redisUrl,
    AMQP_URL: vhost.url,
    JWKS_URL: `http://127.0.0.1:${jwks.port}/auth/.well-known/jwks.json`,
  }
  const [chatPort, chatOpsPort, gatewayPort, gatewayOpsPort] = [
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]
  const chat = Bun.spawn(['bun', join(root, 'services/chat/src/index.ts')], {
    env: {
      ...env,
      PORT: String(chatPort),
      OPS_PORT: String(chatOpsPort),
      MONGO_URL: testInfra.mongoUrl,
      MONGO_DB: mongoDb,
      ...testS3Env(),
    },
    stdout: 'ignore',
    stderr: 'inherit',
  })
  const gateway = Bun.spawn(['bun', join(root, 'services/gateway/src/index.ts')], {
    env: {
      ...env,
      PORT: String(gatewayPort),
      OPS_PORT: String(gatewayOpsPort),
      CHAT_URL: `http://127.0.0.1:${chatPort}`,
      RATE_LIMIT_POLICIES: JSON.stringify({
        authenticated: unlimited,
        conversations: unlimited,
        reactions: unlimited,
      }),
    },
    stdout: 'ignore',
    stderr: 'inherit',
  })
  const api = `http://127.0.0.1:${gatewayPort}/api/v1`
  async function call(by: User, method: string, path: string, body?: unknown): Promise<Response> {
    return fetch(`${api}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${by.token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    })
  }

  /** `ops` calls of `request(n)`, `concurrency` at a time; a call counts as failed unless 2xx. */
  async function load(name: string, request: (n: number) => Promise<Response>): Promise<Run> {
    const latencies: number[] = []
    let next = 0
    let failed = 0
    const started = performance.now()
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < ops) {
          const n = next++
          const callStarted = performance.now()
          const response = await request(n)
          await response.arrayBuffer()
          latencies.push(performance.now() - callStarted)
          if (!response.ok) failed++
        }
      }),
    )
    const seconds = (performance.now() - started) / 1000
    latencies.sort((a, b) => a - b)
    const run = {
      name,
      perSecond: ops / seconds,
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      failed,
    }
    console.log(
      `  ${name.padEnd(40)} ${run.perSecond.toFixed(0).padStart(6)} req/s   p50 ${run.p50.toFixed(1).padStart(7)} ms   p99 ${run.p99.toFixed(1).padStart(7)} ms   failed ${failed}`,
    )
    return run
  }

  try {
    await waitForHttp(`http://127.0.0.1:${chatOpsPort}/ready`)
    await waitForHttp(`http://127.0.0.1:${gatewayOpsPort}/ready`)
    // chat knows users from its projection of user.registered; seeded directly here.
    await mongo
      .db(mongoDb)
      .collection<{ _id: string; displayName: string; updatedAt: Date }>('users')
      .insertMany(users.map(({ id, displayName }) => ({ _id: id, displayName, updatedAt: new Date() })))
    const created = await call(user(0), 'POST', '/conversations', {
      participantIds: users.slice(1).map(({ id }) => id),
    })
    if (created.status !== 201)
      throw new Error(`creating the conversation: ${created.status} ${await created.text()}`)
    const path = `/conversations/${((await created.json()) as { id: string }).id}`
    // Warm-up, not measured: connections, JIT, caches.
    for (let n = 0; n < 20; n++) await (await call(user(n), 'GET', path)).arrayBuffer()

    console.log(
      `messaging through the gateway: ${ops} requests of each kind, ${concurrency} at a time, ${PARTICIPANTS} participants of one conversation`,
    )
    const read = await load('read: GET /conversations/:id', (n) => call(user(n), 'GET', path))
    const sent: { id: string; author: User }[] = []
    const send = await load('send: POST …/messages', async (n) => {
      const author = user(n)
      const response = await call(author, 'POST', `${path}/messages`, { body: `bench message ${n}` })
      if (response.status === 201) {
        const { id } = (await response.clone().json()) as { id: string }
        sent.push({ id, author })
      }
      return response
    })
    if (sent.length === 0) throw new Error('no message was sent')
    const target = (n: number) => sent[n % sent.length] as (typeof sent)[number]
    const edit = await load('edit: PATCH …/messages/:id (its author)', (n) =>
      call(target(n).author, 'PATCH', `${path}/messages/${target(n).id}`, {
        body: `bench message edited ${n}`,
      }),
    )
    // Distinct (message, emoji, user) each time: every call adds a reaction.
    const react = await load('react: PUT …/reactions/:emoji', (n) => {
      const message = target(n)
      const round = Math.floor(n / sent.length)
      const emoji = encodeURIComponent(EMOJIS[round % EMOJIS.length] as string)
      return call(
        user(n + Math.floor(round / EMOJIS.length)),
        'PUT',
        `${path}/messages/${message.id}/reactions/${emoji}`,
      )
    })
    console.log('ratios (req/s):')
    ratio('send / read', send.perSecond / read.perSecond)
    ratio('edit / send', edit.perSecond / send.perSecond)
    ratio('react / send', react.perSecond / send.perSecond)
  } finally {
    gateway.kill('SIGTERM')
    chat.kill('SIGTERM')
    await Promise.all([gateway.exited, chat.exited])
    jwks.stop(true)
    await mongo.db(mongoDb).dropDatabase()
    await mongo.close()
    await vhost.drop()
  }
}

// --- 2. page cost with reactions and thread summaries ---------------------------------------
async function pageCost(): Promise<void> {
  // Command monitoring counts what each page asks the database.
  const { app, deps, client, close } = await inProcessChat(signer, { monitorCommands: true })
  let commands = 0
  client.on('commandStarted', () => {
    commands++
  })
  const redis = deps.redis
  async function call(by: User, method: string, path: string, body?: unknown) {
    const response = await app.handle(
      jsonRequest(method, path, body, { authorization: `Bearer ${by.token}` }),
    )
    if (response.status >= 300)
      throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`)
    return (await response.json()) as { id: string; items?: unknown[] }
  }

  try {
    for (const { id, displayName } of users)
      await deps.users.apply({ userId: id, displayName, at: new Date() })
    const seedStarted = performance.now()
    async function seed(decorated: boolean): Promise<{ path: string; newest: string }> {
      const { id } = await call(user(0), 'POST', '/conversations', {
        participantIds: users.slice(1).map(({ id: other }) => other),
      })
      const path = `/conversations/${id}`
      let newest = ''
      let parent = ''
      for (let n = 0; n < pageMessages; n++) {
        // Decorated: every 4th message starts a thread, the next two reply to it.
        const replyTo = decorated && n % 4 !== 0 && n % 4 !== 3 ? { replyTo: parent } : {}
        const message = await call(user(n), 'POST', `${path}/messages`, {
          body: `page message ${n}`,
          ...replyTo,
        })
        if (n % 4 === 0) parent = message.id
        newest = message.id
        if (!decorated) continue
        for (let r = 0; r < 3; r++) {
          const emoji = encodeURIComponent(EMOJIS[(n + r) % 2] as string)
          await call(user(n + r + 1), 'PUT', `${path}/messages/${message.id}/reactions/${emoji}`)
        }
      }
      return { path, newest }
    }
    const plain = await seed(false)
    const decorated = await seed(true)
    console.log(
      `\npage cost: 2 conversations of ${pageMessages} messages (one plain; one with 3 reactions on every message and a thread of 2 replies on every 4th), seeded in ${((performance.now() - seedStarted) / 1000).toFixed(1)} s; chat app in process; ${reps} runs each`,
    )
    async function measure(name: string, request: () => Promise<unknown>, before?: () => Promise<unknown>) {
      const samples: number[] = []
      let perRequest = 0
      for (let run = 0; run < reps; run++) {
        await before?.()
        const counted = commands
        const started = performance.now()
        await request()
        samples.push(performance.now() - started)
        perRequest = commands - counted
      }
      samples.sort((a, b) => a - b)
      const median = percentile(samples, 50)
      console.log(
        `  ${name.padEnd(58)} median ${median.toFixed(1).padStart(7)} ms   ${String(perRequest).padStart(3)} MongoDB commands`,
      )
      return { median, commands: perRequest }
    }
    const page = (conversation: { path: string; newest: string }, limit: number) => () =>
      call(user(1), 'GET', `${conversation.path}/messages?limit=${limit}&before=${conversation.newest}`)
    const latest = (conversation: { path: string }) => () =>
      call(user(1), 'GET', `${conversation.path}/messages`)
    const dropLatest = (conversation: { path: string }) => () =>
      redis.del(`chat:latest:${conversation.path.split('/').at(-1)}`)
    const plain50 = await measure('plain: before=<newest>, limit 50', page(plain, 50))
    const decorated10 = await measure('reactions + threads: before=<newest>, limit 10', page(decorated, 10))
    const decorated50 = await measure('reactions + threads: before=<newest>, limit 50', page(decorated, 50))
    const plainLatest = await measure('plain: latest page, Redis miss', latest(plain), dropLatest(plain))
    const decoratedLatest = await measure(
      'reactions + threads: latest page, Redis miss',
      latest(decorated),
      dropLatest(decorated),
    )
    const decoratedHit = await measure('reactions + threads: latest page, Redis hit', latest(decorated))
    console.log('ratios:')
    ratio('before page, limit 50: reactions + threads / plain', decorated50.median / plain50.median)
    ratio('latest page miss: reactions + threads / plain', decoratedLatest.median / plainLatest.median)
    ratio('latest page: Redis miss / hit (reactions + threads)', decoratedLatest.median / decoratedHit.median)
    console.log(
      `  MongoDB commands per page (plain, limit 10 and 50 with reactions + threads): ${plain50.commands}, ${decorated10.commands}, ${decorated50.commands}`,
    )
  } finally {
    await close()
  }
}

await throughputThroughGateway()
await pageCost()
console.log(
  `command: BENCH_MSG_OPS=${ops} BENCH_MSG_CONCURRENCY=${concurrency} BENCH_MSG_PAGE_MESSAGES=${pageMessages} BENCH_MSG_REPS=${reps} bun bench/chat/messaging.ts`,
)
