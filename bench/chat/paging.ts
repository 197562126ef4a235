// Chat message paging and sending: does the cost of a page depend on how deep its cursor is?
// Seeds one conversation with BENCH_CHAT_DEPTH messages (default 100000) plus a small baseline
// conversation (100 messages, same collection), then times GET /conversations/:id/messages through
// the whole app (routing, token verification, validation, Redis, MongoDB) for the latest page and for
// `before`/`after` pages at depth 0 and at full depth; then POST .../messages throughput, one at a
// time and BENCH_CHAT_CONCURRENCY at once. Figures are medians of BENCH_CHAT_REPS runs.
//   bun bench/chat/paging.ts          BENCH_CHAT_DEPTH=1000000 BENCH_CHAT_REPS=20 bun bench/chat/paging.ts

import { newId } from '../../packages/common/src/index.ts'
import { createTestSigner, jsonRequest } from '../../packages/testkit/src/index.ts'
import { blockOf, type MessageDoc } from '../../services/chat/src/db/index.ts'
import { inProcessChat } from './app.ts'

const depth = Number(process.env.BENCH_CHAT_DEPTH ?? 100_000)
const reps = Number(process.env.BENCH_CHAT_REPS ?? 3)
const sends = Number(process.env.BENCH_CHAT_SENDS ?? 200)
const concurrency = Number(process.env.BENCH_CHAT_CONCURRENCY ?? 16)
const LIMIT = 50

const signer = await createTestSigner()
const { app, deps, close } = await inProcessChat(signer)

try {
  const [writer, reader] = [Bun.randomUUIDv7(), Bun.randomUUIDv7()]
  for (const [userId, displayName] of [
    [writer, 'Writer'],
    [reader, 'Reader'],
  ] as const)
    await deps.users.apply({ userId, displayName, at: new Date() })
  const tokens = {
    [writer]: await signer.sign({ sub: writer }),
    [reader]: await signer.sign({ sub: reader }),
  }

  async function call(userId: string, method: string, path: string, body?: unknown) {
    const response = await app.handle(
      jsonRequest(method, path, body, { authorization: `Bearer ${tokens[userId]}` }),
    )
    if (response.status >= 300)
      throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`)
    return (await response.json()) as { id: string; items?: { id: string }[] }
  }

  /** A conversation of `count` messages, bulk-inserted with the service's id scheme, the last one sent. */
  async function seedConversation(count: number): Promise<{ id: string; ids: string[] }> {
    const { id } = await call(writer, 'POST', '/conversations', { participantIds: [reader] })
    const messages = deps.db.collection<MessageDoc>('messages')
    const ids: string[] = []
    const start = Date.now() - count
    for (let offset = 0; offset < count - 1; offset += 10_000) {
      const batch = Array.from({ length: Math.min(10_000, count - 1 - offset) }, (_, i) => ({
        _id: newId(),
        conversationId: id,
        seq: offset + i + 1,
        seqBlock: blockOf(offset + i + 1),
        senderId: writer,
        body: `message ${offset + i} ${'lorem ipsum '.repeat(4)}`,
        createdAt: new Date(start + offset + i),
      }))
      await messages.insertMany(batch)
      ids.push(...batch.map((message) => message._id))
    }
    ids.push((await call(writer, 'POST', `/conversations/${id}/messages`, { body: 'the newest' })).id)
    return { id, ids }
  }

  const seedStarted = performance.now()
  const deep = await seedConversation(depth)
  const small = await seedConversation(100)
  const seedSeconds = (performance.now() - seedStarted) / 1000

  async function time(name: string, request: () => Promise<unknown>, before?: () => Promise<unknown>) {
    const samples: number[] = []
    for (let i = 0; i < reps; i++) {
      await before?.()
      const started = performance.now()
      await request()
      samples.push(performance.now() - started)
    }
    samples.sort((a, b) => a - b)
    const median = samples[Math.floor(samples.length / 2)] ?? 0
    console.log(
      `  ${name.padEnd(52)} median ${median.toFixed(1).padStart(9)} ms   min ${(samples[0] ?? 0).toFixed(1).padStart(9)} ms`,
    )
    return median
  }

  const page = (conversationId: string, query: string) =>
    call(reader, 'GET', `/conversations/${conversationId}/messages?limit=${LIMIT}${query}`)
  const dropLatestPage = (conversationId: string) => () => deps.redis.del(`chat:latest:${conversationId}`)
  const at = (ids: string[], fromNewest: number) => ids[ids.length - 1 - fromNewest] ?? ''

  const build = (await deps.db.admin().command({ buildInfo: 1 })) as {
    version?: string
    ferretdbVersion?: string
  }
  const plan = (await deps.db.command({
    explain: {
      find: 'messages',
      filter: { conversationId: deep.id, _id: { $lt: at(deep.ids, 0) } },
      sort: { _id: -1 },
      limit: LIMIT + 1,
    },
  })) as { filterPushdown?: boolean; sortPushdown?: boolean; queryPlanner?: unknown }
  console.log(
    `chat paging: ${depth} messages (+100 baseline) seeded in ${seedSeconds.toFixed(1)} s; limit ${LIMIT}; ${reps} runs each`,
  )
  console.log(
    `server: ${build.ferretdbVersion ? `FerretDB ${build.ferretdbVersion}` : `MongoDB ${build.version}`}; page query plan: ${JSON.stringify(plan.queryPlanner).slice(0, 120)}${plan.filterPushdown === undefined ? '' : ` (filterPushdown ${plan.filterPushdown}, sortPushdown ${plan.sortPushdown})`}`,
  )

  console.log(`conversation with ${depth} messages:`)
  await page(deep.id, '')
  const latestHit = await time('latest page, Redis hit', () => page(deep.id, ''))
  const latestMiss = await time(
    'latest page, Redis miss (MongoDB)',
    () => page(deep.id, ''),
    dropLatestPage(deep.id),
  )
  const beforeShallow = await time('before=<newest> (depth 0)', () =>
    page(deep.id, `&before=${at(deep.ids, 0)}`),
  )
  const beforeDeep = await time(`before=<depth ${depth - LIMIT}> (oldest page)`, () =>
    page(deep.id, `&before=${at(deep.ids, depth - LIMIT - 1)}`),
  )
  const afterShallow = await time(`after=<depth ${LIMIT}> (newest page)`, () =>
    page(deep.id, `&after=${at(deep.ids, LIMIT)}`),
  )
  const afterDeep = await time(`after=<depth ${depth - 1}> (oldest page)`, () =>
    page(deep.id, `&after=${at(deep.ids, depth - 1)}`),
  )
  console.log('baseline conversation with 100 messages, same collection:')
  const smallMiss = await time(
    'latest page, Redis miss (MongoDB)',
    () => page(small.id, ''),
    dropLatestPage(small.id),
  )
  const smallBefore = await time('before=<newest> (depth 0)', () =>
    page(small.id, `&before=${at(small.ids, 0)}`),
  )

  console.log('ratios (goal: deep / shallow <= 1.3):')
  const ratio = (name: string, value: number) => console.log(`  ${name.padEnd(52)} ${value.toFixed(2)}x`)
  ratio('before: deep / shallow', beforeDeep / beforeShallow)
  ratio('after: deep / shallow', afterDeep / afterShallow)
  ratio(`latest page miss: ${depth}-message / 100-message conversation`, latestMiss / smallMiss)
  ratio(`before depth 0: ${depth}-message / 100-message conversation`, beforeShallow / smallBefore)
  ratio('latest page: Redis miss / hit', latestMiss / latestHit)

  async function throughput(label: string, workers: number) {
    let next = 0
    const started = performance.now()
    await Promise.all(
      Array.from({ length: workers }, async () => {
        while (next < sends) {
          const n = next++
          await call(writer, 'POST', `/conversations/${small.id}/messages`, {
            body: `throughput ${label} ${n}`,
            clientMessageId: `${label}-${n}`,
          })
        }
      }),
    )
    const seconds = (performance.now() - started) / 1000
    console.log(
      `  ${`${sends} sends, ${workers} at a time`.padEnd(52)} ${(sends / seconds).toFixed(0).padStart(6)} msg/s`,
    )
    return sends / seconds
  }
  console.log(`send throughput (collection of ${depth + 100} messages, with clientMessageId):`)
  const sequential = await throughput('seq', 1)
  const parallel = await throughput('par', concurrency)
  ratio(`concurrent (${concurrency}) / sequential`, parallel / sequential)
  console.log(`command: BENCH_CHAT_DEPTH=${depth} BENCH_CHAT_REPS=${reps} bun bench/chat/paging.ts`)
} finally {
  await close()
}
