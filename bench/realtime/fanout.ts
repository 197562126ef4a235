/**
 * Real-time fan-out through the default stack: send→push latency and loss.
 *
 * Per scenario (sockets × sends per second), on this machine:
 *   - the stack: the chat service and two gateway replicas as their own processes (as deployed),
 *     on the local PostgreSQL/FerretDB, Redis and RabbitMQ. Every user holds one WebSocket,
 *     alternating between the replicas; conversations of 2–50 people cover every user. Messages
 *     are POSTed through the gateways (alternating) at a fixed rate; a push counts when a socket of
 *     a participant other than the sender receives the `message.sent` frame.
 *   - the baseline, in the same run: the same sockets, conversations and send schedule against a
 *     bare Bun WebSocket server (its own process) that publishes each message straight to the
 *     participants' sockets: no HTTP API, no database, no broker, no Redis.
 * Prints p50/p99/max send→push latency, loss, POST failures, the ratio of p99s, and gateway
 * RSS per 1,000 sockets. Goal on the default stack: 0 loss, p99 <= 100 ms at 200 msg/s with
 * 1,000 sockets. Latency is measured by this process (sender and receivers share its clock).
 *
 * Run: `bun bench/realtime/fanout.ts` (infra up). Not a test.
 * Env: BENCH_SCENARIOS (default "1000x200,1000x1000,5000x200,5000x1000": sockets x msg/s),
 *      BENCH_DURATION_S (15 per scenario), BENCH_DRAIN_S (10: wait for late pushes),
 *      BENCH_SKIP_BASELINE=1, BENCH_LOG_DIR (write the services' logs there: chat.log, gateway-<n>.log),
 *      BENCH_CPU_PROF_DIR (CPU profiles of chat and the gateways there, as markdown, written at exit).
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  createTestSigner,
  createTestVhost,
  testInfra,
  testS3Env,
  uniqueName,
} from '../../packages/testkit/src/index.ts'
import { MongoClient } from '../../services/chat/node_modules/mongodb'
import { freePort, percentile, waitForHttp } from '../lib.ts'

const root = new URL('../..', import.meta.url).pathname
const durationS = Number(process.env.BENCH_DURATION_S ?? 15)
const drainS = Number(process.env.BENCH_DRAIN_S ?? 10)
const scenarios = (process.env.BENCH_SCENARIOS ?? '1000x200,1000x1000,5000x200,5000x1000')
  .split(',')
  .map((spec) => {
    const [sockets, rate] = spec.split('x').map(Number)
    if (!sockets || !rate) throw new Error(`bad scenario ${spec}: expected <sockets>x<msg/s>`)
    return { sockets, rate }
  })

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024
}

type User = { id: string; token: string }
type Conversation = { id: string; members: string[] }

/** Conversations of 2–50 people (mostly small, as in real use) until every user is in one. */
function layout(users: readonly User[]): string[][] {
  const ids = users.map((user) => user.id)
  const groups: string[][] = []
  for (let next = 0; next < ids.length; ) {
    const size = Math.random() < 0.7 ? 2 + Math.floor(Math.random() * 4) : 6 + Math.floor(Math.random() * 45)
    groups.push(ids.slice(next, next + size))
    next += size
  }
  // A last group of one joins the one before it.
  const last = groups.at(-1) as string[]
  if (last.length < 2 && groups.length > 1) (groups.at(-2) as string[]).push(...(groups.pop() as string[]))
  return groups
}

type Measured = {
  latencies: number[]
  /** Time until the send's HTTP answer (the stack: chat's write path through the gateway). */
  sendLatencies: number[]
  expected: number
  received: number
  failures: number
  /** Answers other than 201 by status (0: no answer), e.g. "504×12". */
  failedStatuses: Map<number, number>
  sent: number
}

/**
 * Opens one socket per user, sends `rate` messages per second for `durationS` and counts the
 * pushes. `send` performs one send; `connect` opens a user's socket; `seqOf` reads the
 * sequence number a pushed frame carries (or undefined for other frames).
 */
async function drive(options: {
  users: readonly User[]
  conversations: readonly Conversation[]
  rate: number
  connect: (user: User, index: number, onFrame: (frame: string) => void) => Promise<WebSocket>
  /** Performs one send and returns its HTTP status (0 when there was no answer). */
  send: (conversation: Conversation, senderIndex: number, body: string, gateway: number) => Promise<number>
  seqOf: (frame: string) => number | undefined
  /** The frame after which a socket is set up (the stack: its presence snapshot); sends wait for all. */
  isSetUp?: (frame: string) => boolean
  afterConnect?: () => void
}): Promise<Measured> {
  const { users, conversations, rate } = options
  const sentAt = new Map<number, { at: number; sender: string }>()
  const seen = new Set<string>()
  const latencies: number[] = []
  const sockets: WebSocket[] = []
  const byUser = new Map(users.map((user, index) => [user.id, index]))
  let setUp = 0
  for (const [index, user] of users.entries()) {
    let mine = false
    sockets.push(
      await options.connect(user, index, (frame) => {
        if (!mine && options.isSetUp?.(frame)) {
          mine = true
          setUp++
        }
        const seq = options.seqOf(frame)
        if (seq === undefined) return
        const sent = sentAt.get(seq)
        const key = `${seq}:${user.id}`
        // The sender's own socket gets it too (their other devices): not counted.
        if (!sent || sent.sender === user.id || seen.has(key)) return
        seen.add(key)
        latencies.push(performance.now() - sent.at)
      }),
    )
  }
  options.afterConnect?.()
  // Set-up, not measured: every socket has its contacts (the gateways load them from chat).
  const setUpStarted = performance.now()
  while (options.isSetUp && setUp < sockets.length && performance.now() - setUpStarted < 180_000)
    await Bun.sleep(100)
  if (options.isSetUp)
    console.log(
      `${sockets.length} sockets open, ${setUp} set up ${((performance.now() - setUpStarted) / 1000).toFixed(1)} s after the last opened`,
    )
  let seq = 0
  let failures = 0
  const failedStatuses = new Map<number, number>()
  let expected = 0
  const inFlight: Promise<void>[] = []
  const sendLatencies: number[] = []
  const started = performance.now()
  const total = Math.round(rate * durationS)
  // A fixed schedule: message n is due at n / rate seconds, whatever the previous ones took.
  while (seq < total) {
    const due = started + (seq * 1000) / rate
    const wait = due - performance.now()
    if (wait > 1) await Bun.sleep(wait)
    const conversation = conversations[seq % conversations.length] as Conversation
    const sender = conversation.members[seq % conversation.members.length] as string
    const mySeq = ++seq
    const receivers = conversation.members.length - 1
    expected += receivers
    sentAt.set(mySeq, { at: performance.now(), sender })
    const sendStarted = performance.now()
    inFlight.push(
      options.send(conversation, byUser.get(sender) as number, `bench ${mySeq}`, mySeq % 2).then((status) => {
        sendLatencies.push(performance.now() - sendStarted)
        if (status !== 201) {
          failures++
          failedStatuses.set(status, (failedStatuses.get(status) ?? 0) + 1)
          expected -= receivers
        }
      }),
    )
  }
  await Promise.all(inFlight)
  const deadline = performance.now() + drainS * 1000
  while (seen.size < expected && performance.now() < deadline) await Bun.sleep(100)
  for (const socket of sockets) socket.close()
  latencies.sort((a, b) => a - b)
  sendLatencies.sort((a, b) => a - b)
  return { latencies, sendLatencies, expected, received: seen.size, failures, failedStatuses, sent: total }
}

function openSocket(url: string, protocols: string[], onFrame: (frame: string) => void): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, protocols)
    socket.onmessage = (event) => onFrame(String(event.data))
    socket.onopen = () => resolve(socket)
    socket.onerror = () => reject(new Error(`WebSocket to ${url} failed`))
  })
}

const BODY_SEQ = /"preview":"bench (\d+)"/

// --- shared infrastructure of the run ---------------------------------------------------------
const signer = await createTestSigner()
const jwks = Bun.serve({ hostname: '127.0.0.1', port: 0, fetch: () => Response.json(signer.jwks) })
const jwksUrl = `http://127.0.0.1:${jwks.port}/auth/.well-known/jwks.json`
const vhost = await createTestVhost()
const mongoDb = uniqueName('bench_rt')
const mongo = new MongoClient(testInfra.mongoUrl)
await mongo.connect()

const limits = JSON.stringify({
  authenticated: { limit: 1_000_000_000, windowSeconds: 60 },
  conversations: { limit: 1_000_000_000, windowSeconds: 60 },
  invitations: { limit: 1_000_000_000, windowSeconds: 60 },
})
const baseEnv = {
  ...process.env,
  HOST: '127.0.0.1',
  LOG_LEVEL: 'warn',
  REDIS_URL: testInfra.redisUrl,
  AMQP_URL: vhost.url,
  JWKS_URL: jwksUrl,
}
const logDir = process.env.BENCH_LOG_DIR
const logTo = (name: string) => (logDir ? Bun.file(join(logDir, `${name}.log`)) : 'ignore')
const profDir = process.env.BENCH_CPU_PROF_DIR
const bunRun = (name: string) =>
  profDir ? ['bun', '--cpu-prof-md', `--cpu-prof-dir=${profDir}`, `--cpu-prof-name=${name}.md`] : ['bun']
const chatPort = freePort()
const chatOpsPort = freePort()
const chat = Bun.spawn([...bunRun('chat'), join(root, 'services/chat/src/index.ts')], {
  env: {
    ...baseEnv,
    PORT: String(chatPort),
    OPS_PORT: String(chatOpsPort),
    MONGO_URL: testInfra.mongoUrl,
    MONGO_DB: mongoDb,
    ...testS3Env(),
  },
  stdout: logTo('chat'),
  stderr: 'inherit',
})
const gateways = [0, 1].map((replica) => {
  const port = freePort()
  const opsPort = freePort()
  const process_ = Bun.spawn(
    [...bunRun(`gateway-${replica + 1}`), join(root, 'services/gateway/src/index.ts')],
    {
      env: {
        ...baseEnv,
        PORT: String(port),
        OPS_PORT: String(opsPort),
        CHAT_URL: `http://127.0.0.1:${chatPort}`,
        RATE_LIMIT_POLICIES: limits,
        WS_MAX_CONNECTIONS_PER_USER: '5',
      },
      stdout: logTo(`gateway-${replica + 1}`),
      stderr: 'inherit',
    },
  )
  return { port, opsPort, process: process_, url: `http://127.0.0.1:${port}` }
})

const bareScript = `
const server = Bun.serve({
  hostname: '127.0.0.1', port: Number(process.env.PORT),
  async fetch(request, server) {
    const url = new URL(request.url)
    if (url.pathname === '/ws') return server.upgrade(request, { data: { user: url.searchParams.get('user') } }) ? undefined : new Response('no', { status: 400 })
    if (url.pathname === '/send') {
      const { members, frame } = await request.json()
      const text = JSON.stringify(frame)
      for (const member of members) server.publish(member, text)
      return new Response(null, { status: 201 })
    }
    return new Response('ok')
  },
  websocket: { open(ws) { ws.subscribe(ws.data.user) }, message() {} },
})`
const barePort = freePort()
const bare = Bun.spawn(['bun', '-e', bareScript], {
  env: { ...process.env, PORT: String(barePort) },
  stdout: 'ignore',
  stderr: 'inherit',
})

type Row = { scenario: string; target: string; measured: Measured; rssPer1000?: number }
const rows: Row[] = []

const fmt = (ms: number) => (Number.isNaN(ms) ? '–' : `${ms.toFixed(1)} ms`)
const HEADER = `${'scenario'.padEnd(26)}${'target'.padEnd(36)}${'p50'.padEnd(11)}${'p99'.padEnd(11)}${'max'.padEnd(11)}${'loss'.padEnd(16)}${'send p50/p99'.padEnd(20)}${'POST failed'.padEnd(13)}RSS/1k sockets`

function formatRow({ scenario, target, measured, rssPer1000 }: Row): string {
  const { latencies, sendLatencies, expected, received, failures, sent } = measured
  const sendFigures = `${fmt(percentile(sendLatencies, 50))} / ${fmt(percentile(sendLatencies, 99))}`
  // A send that timed out at the client may still have been delivered: loss never goes below 0.
  const lost = Math.max(0, expected - received)
  return `${scenario.padEnd(26)}${target.padEnd(36)}${fmt(percentile(latencies, 50)).padEnd(11)}${fmt(percentile(latencies, 99)).padEnd(11)}${fmt(latencies.at(-1) ?? Number.NaN).padEnd(11)}${`${lost} of ${expected}`.padEnd(16)}${sendFigures.padEnd(20)}${`${failures} of ${sent}`.padEnd(13)}${rssPer1000 === undefined ? '' : `${rssPer1000.toFixed(1)} MiB`}`
}

/** Records a measured row and prints it at once (a long run that is cut short keeps what it measured). */
function record(row: Row): void {
  rows.push(row)
  console.log(`measured: ${formatRow(row)}`)
}

try {
  await waitForHttp(`http://127.0.0.1:${barePort}/`)
  await waitForHttp(`http://127.0.0.1:${chatOpsPort}/ready`)
  for (const gateway of gateways) await waitForHttp(`http://127.0.0.1:${gateway.opsPort}/ready`)

  for (const { sockets, rate } of scenarios) {
    const scenario = `${sockets} sockets, ${rate} msg/s`
    const exp = Math.floor(Date.now() / 1000) + 3 * 3600
    const users: User[] = await Promise.all(
      Array.from({ length: sockets }, async () => {
        const id = Bun.randomUUIDv7()
        return { id, token: await signer.sign({ sub: id, exp }) }
      }),
    )
    // chat knows users from its projection of user.registered; seeded directly here.
    await mongo
      .db(mongoDb)
      .collection<{ _id: string; displayName: string; updatedAt: Date }>('users')
      .insertMany(
        users.map((user, index) => ({ _id: user.id, displayName: `User ${index}`, updatedAt: new Date() })),
      )
    const conversations: Conversation[] = []
    for (const members of layout(users)) {
      const [creator, ...others] = members
      const owner = users.find((user) => user.id === creator) as User
      // Set-up, not measured: a creation that timed out under FerretDB's load is tried again.
      let response: Response
      for (let attempt = 1; ; attempt++) {
        response = await fetch(`${gateways[0]?.url}/api/v1/conversations`, {
          method: 'POST',
          headers: { authorization: `Bearer ${owner.token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ participantIds: others }),
        })
        if (response.status !== 504 || attempt === 3) break
        await response.arrayBuffer()
      }
      if (response.status !== 201)
        throw new Error(`creating a conversation: ${response.status} ${await response.text()}`)
      const { id } = (await response.json()) as { id: string }
      conversations.push({ id, members })
    }
    const rssBefore = gateways.map((gateway) => rssMiB(gateway.process.pid))
    let rssPer1000: number | undefined
    const stack = await drive({
      users,
      conversations,
      rate,
      connect: (user, index, onFrame) =>
        openSocket(
          `ws://127.0.0.1:${gateways[index % 2]?.port}/api/v1/ws`,
          ['parley.v1', `parley.bearer.${user.token}`],
          onFrame,
        ),
      send: async (conversation, senderIndex, body, gateway) => {
        try {
          const response = await fetch(
            `${gateways[gateway]?.url}/api/v1/conversations/${conversation.id}/messages`,
            {
              method: 'POST',
              headers: {
                authorization: `Bearer ${(users[senderIndex] as User).token}`,
                'content-type': 'application/json',
              },
              body: JSON.stringify({ body }),
            },
          )
          await response.arrayBuffer()
          return response.status
        } catch {
          return 0
        }
      },
      isSetUp: (frame) => frame.includes('"presence.snapshot"'),
      seqOf: (frame) => {
        if (!frame.includes('"message.sent"')) return undefined
        const match = BODY_SEQ.exec(frame)
        return match ? Number(match[1]) : undefined
      },
      afterConnect: () => {
        const grown = gateways.reduce(
          (sum, gateway, index) => sum + rssMiB(gateway.process.pid) - (rssBefore[index] ?? 0),
          0,
        )
        rssPer1000 = (grown / sockets) * 1000
      },
    })
    record({
      scenario,
      target: 'gateway ×2 (chat, broker, Redis)',
      measured: stack,
      ...(rssPer1000 === undefined ? {} : { rssPer1000 }),
    })

    if (process.env.BENCH_SKIP_BASELINE !== '1') {
      const baseline = await drive({
        users,
        conversations,
        rate,
        connect: (user, _index, onFrame) =>
          openSocket(`ws://127.0.0.1:${barePort}/ws?user=${user.id}`, [], onFrame),
        send: async (conversation, senderIndex, body) => {
          const senderId = (users[senderIndex] as User).id
          const response = await fetch(`http://127.0.0.1:${barePort}/send`, {
            method: 'POST',
            body: JSON.stringify({
              members: conversation.members.filter((member) => member !== senderId),
              frame: {
                type: 'message.sent',
                data: { conversationId: conversation.id, senderId, preview: body },
              },
            }),
          })
          await response.arrayBuffer()
          return response.status
        },
        seqOf: (frame) => {
          const match = BODY_SEQ.exec(frame)
          return match ? Number(match[1]) : undefined
        },
      })
      record({ scenario, target: 'bare Bun WebSocket publish', measured: baseline })
    }
  }
} finally {
  for (const gateway of gateways) gateway.process.kill('SIGTERM')
  chat.kill('SIGTERM')
  bare.kill('SIGTERM')
  await Promise.all([...gateways.map((gateway) => gateway.process.exited), chat.exited, bare.exited])
  jwks.stop(true)
  await mongo
    .db(mongoDb)
    .dropDatabase()
    .catch(() => undefined)
  await mongo.close()
  await vhost.drop()
}

console.log(
  `\n${durationS} s per scenario, drain ${drainS} s, 2 gateway replicas (this machine: ${navigator.hardwareConcurrency} cores)`,
)
console.log(HEADER)
for (const row of rows) console.log(formatRow(row))
for (const { scenario, target, measured } of rows)
  if (measured.failedStatuses.size > 0)
    console.log(
      `${scenario}, ${target}: failed POSTs by status ${[...measured.failedStatuses].map(([status, count]) => `${status || 'no answer'}×${count}`).join(', ')}`,
    )
for (const { scenario } of scenarios.map((s) => ({ scenario: `${s.sockets} sockets, ${s.rate} msg/s` }))) {
  const [stack, baseline] = [
    rows.find((row) => row.scenario === scenario && row.target.startsWith('gateway')),
    rows.find((row) => row.scenario === scenario && row.target.startsWith('bare')),
  ]
  if (stack && baseline)
    console.log(
      `${scenario}: p99 gateway/bare = ${(percentile(stack.measured.latencies, 99) / percentile(baseline.measured.latencies, 99)).toFixed(1)}×`,
    )
}
console.log('command: bun bench/realtime/fanout.ts')
