// Auth throughput and the argon2id cost behind it. Not a test: prints figures and ratios
// against baselines measured in the same run.
//   1. argon2id: ms per hash and hashes/s on one core, at the OWASP default (19456 KiB, t=2)
//      and at a low cost (1024 KiB, t=1) as the baseline; hashes/s with every core busy;
//      peak RSS growth with N hashes in flight (fresh child process per N).
//   2. POST /auth/login through the whole app (app.handle: routing, validation, PostgreSQL,
//      argon2id verify, session insert, EdDSA signing): req/s and latency at the default cost,
//      the same at the low cost (baseline), and failed logins (unknown email vs wrong password,
//      which must cost the same).
//   3. POST /auth/refresh (rotation: conditional UPDATE + INSERT + signing): req/s vs login.
//   bun bench/auth/login.ts                 BENCH_SCALE=5 BENCH_CONCURRENCY=16 bun bench/auth/login.ts
import { availableParallelism } from 'node:os'
import { createRuntime, parseConfig } from '../../packages/common/src/index.ts'
import {
  createTestDatabase,
  createTestVhost,
  jsonRequest,
  testInfra,
  testLogger,
  testRedisPrefix,
} from '../../packages/testkit/src/index.ts'
import { buildApp } from '../../services/auth/src/app.ts'
import { Env } from '../../services/auth/src/config.ts'
import { MIGRATIONS } from '../../services/auth/src/db/index.ts'
import { connect } from '../../services/auth/src/deps.ts'
import { PasswordHasher } from '../../services/auth/src/modules/accounts/password.ts'
import { percentile } from '../lib.ts'

const DEFAULT_COST = { memoryCost: 19_456, timeCost: 2 }
const LOW_COST = { memoryCost: 1_024, timeCost: 1 }

// Child mode: measure peak RSS while `inFlight` default-cost hashes run, print JSON, exit.
if (process.env.BENCH_ARGON2_MEMORY_CHILD) {
  const inFlight = Number(process.env.BENCH_ARGON2_MEMORY_CHILD)
  // Starts the hashing thread pool, so its stacks are not counted as hash memory.
  await Bun.password.hash('warm-up', { algorithm: 'argon2id', memoryCost: 64, timeCost: 1 })
  Bun.gc(true)
  const before = process.memoryUsage().rss
  let peak = before
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss)
  }, 1)
  await Promise.all(
    Array.from({ length: inFlight }, (_, index) =>
      Bun.password.hash(`password ${index}`, { algorithm: 'argon2id', ...DEFAULT_COST }),
    ),
  )
  clearInterval(sampler)
  console.log(JSON.stringify({ before, peak }))
  process.exit(0)
}

const scale = Number(process.env.BENCH_SCALE ?? 1)
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 8)
const cores = availableParallelism()
const mib = (bytes: number) => bytes / 1024 / 1024
const fixed = (value: number, digits = 1) => value.toFixed(digits)

type Run = { perSecond: number; p50: number; p95: number; p99: number }

/** Runs `total` calls with `workers` in parallel; each worker calls `next(worker)` in turn. */
async function load(total: number, workers: number, next: (worker: number) => Promise<void>): Promise<Run> {
  const latencies: number[] = []
  let issued = 0
  const started = performance.now()
  await Promise.all(
    Array.from({ length: workers }, async (_, worker) => {
      while (issued < total) {
        issued++
        const begin = performance.now()
        await next(worker)
        latencies.push(performance.now() - begin)
      }
    }),
  )
  const seconds = (performance.now() - started) / 1000
  latencies.sort((a, b) => a - b)
  return {
    perSecond: latencies.length / seconds,
    p50: percentile(latencies, 50),
    p95: percentile(latencies, 95),
    p99: percentile(latencies, 99),
  }
}

const describeRun = (run: Run) =>
  `${fixed(run.perSecond)} req/s   p50 ${fixed(run.p50)} ms   p95 ${fixed(run.p95)} ms   p99 ${fixed(run.p99)} ms`

async function hashesPerSecond(cost: typeof DEFAULT_COST, count: number, parallel: number) {
  const started = performance.now()
  let done = 0
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (done < count) {
        done++
        await Bun.password.hash('correct horse battery staple', { algorithm: 'argon2id', ...cost })
      }
    }),
  )
  const seconds = (performance.now() - started) / 1000
  return { perSecond: count / seconds, msEach: (seconds * 1000 * parallel) / count }
}

console.log(`auth benchmark: ${cores} cores, BENCH_SCALE=${scale}, BENCH_CONCURRENCY=${concurrency}`)
console.log(`command: BENCH_SCALE=${scale} BENCH_CONCURRENCY=${concurrency} bun bench/auth/login.ts\n`)

// 1. argon2id
console.log('argon2id (Bun.password)')
const memoryRuns: { inFlight: number; growth: number }[] = []
for (const inFlight of [1, 2, 4, 8]) {
  const child = Bun.spawn([process.execPath, import.meta.path], {
    env: { ...process.env, BENCH_ARGON2_MEMORY_CHILD: String(inFlight) },
    stdout: 'pipe',
  })
  const result = JSON.parse(await new Response(child.stdout).text()) as { before: number; peak: number }
  memoryRuns.push({ inFlight, growth: result.peak - result.before })
}
await Bun.password.hash('warm-up', { algorithm: 'argon2id', ...DEFAULT_COST })
const sequentialDefault = await hashesPerSecond(DEFAULT_COST, Math.round(20 * scale), 1)
const sequentialLow = await hashesPerSecond(LOW_COST, Math.round(100 * scale), 1)
const parallelDefault = await hashesPerSecond(DEFAULT_COST, Math.round(40 * scale), cores)
console.log(
  `  default m=19456 KiB t=2  one core: ${fixed(sequentialDefault.msEach)} ms/hash = ${fixed(sequentialDefault.perSecond)} hashes/s`,
)
console.log(
  `  low     m=1024 KiB t=1   one core: ${fixed(sequentialLow.msEach, 2)} ms/hash = ${fixed(sequentialLow.perSecond)} hashes/s  (default costs ${fixed(sequentialDefault.msEach / sequentialLow.msEach)}x the baseline)`,
)
console.log(
  `  default, ${cores} hashes at a time: ${fixed(parallelDefault.perSecond)} hashes/s = ${fixed(parallelDefault.perSecond / cores)} per core (${fixed(parallelDefault.perSecond / sequentialDefault.perSecond, 2)}x one core)`,
)
// The unknown-email path verifies against a dummy hash: it must cost what a real verify costs.
const hasher = new PasswordHasher(DEFAULT_COST)
const realHash = await hasher.hash('the real password')
const verifies = { dummy: [] as number[], real: [] as number[] }
for (let round = 0; round < Math.round(20 * scale); round++) {
  const kinds = round % 2 === 0 ? (['dummy', 'real'] as const) : (['real', 'dummy'] as const)
  for (const kind of kinds) {
    const begin = performance.now()
    if (kind === 'dummy') await hasher.verifyNothing('a wrong password')
    else await hasher.verify('a wrong password', realHash)
    verifies[kind].push(performance.now() - begin)
  }
}
const medianOf = (values: number[]) =>
  percentile(
    [...values].sort((a, b) => a - b),
    50,
  )
console.log(
  `  verify, default cost: dummy hash (unknown email) p50 ${fixed(medianOf(verifies.dummy))} ms, real hash (wrong password) p50 ${fixed(medianOf(verifies.real))} ms, ratio ${fixed(medianOf(verifies.dummy) / medianOf(verifies.real), 3)}`,
)
// Bun hashes on a pool of one thread per core: more hashes in flight wait rather than allocate.
for (const run of memoryRuns) {
  const running = Math.min(run.inFlight, cores)
  console.log(
    `  ${run.inFlight} default-cost hashes in flight: peak RSS +${fixed(mib(run.growth))} MiB = ${fixed(mib(run.growth) / running)} MiB per running hash (${running} at once; memoryCost = 19 MiB)`,
  )
}

// 2 and 3. Through the app.
const database = await createTestDatabase(MIGRATIONS)
const vhost = await createTestVhost()
const baseEnv = {
  DATABASE_URL: database.url,
  DATABASE_POOL_MAX: '10',
  REDIS_URL: testInfra.redisUrl,
  REDIS_KEY_PREFIX: testRedisPrefix(),
  AMQP_URL: vhost.url,
  PARLEY_ENV: 'development',
}

async function startApp(cost: typeof DEFAULT_COST) {
  const runtime = createRuntime('auth', 'silent', testLogger('auth'))
  const config = parseConfig(Env, {
    ...baseEnv,
    ARGON2_MEMORY_KIB: String(cost.memoryCost),
    ARGON2_TIME_COST: String(cost.timeCost),
  })
  const deps = await connect(config, runtime)
  return { app: buildApp(deps), close: () => runtime.lifecycle.shutdown() }
}

type App = Awaited<ReturnType<typeof startApp>>['app']
type Pair = { accessToken: string; refreshToken: string }

async function post<T>(app: App, path: string, body: unknown, expected: number): Promise<T> {
  const response = await app.handle(jsonRequest('POST', path, body))
  if (response.status !== expected)
    throw new Error(`${path} answered ${response.status}: ${await response.text()}`)
  return (await response.json()) as T
}

async function registerUsers(app: App, count: number, tag: string) {
  return Promise.all(
    Array.from({ length: count }, async (_, index) => {
      const user = {
        email: `${tag}${index}.${crypto.randomUUID().slice(0, 6)}@bench.example`,
        password: `bench password ${index}`,
      }
      await post(app, '/auth/register', { ...user, displayName: `Bench ${index}` }, 201)
      return user
    }),
  )
}

const strong = await startApp(DEFAULT_COST)
const weak = await startApp(LOW_COST)
try {
  const userCount = 20
  const strongUsers = await registerUsers(strong.app, userCount, 'strong')
  const weakUsers = await registerUsers(weak.app, userCount, 'weak')
  const loginRun = async (app: App, users: typeof strongUsers, total: number) => {
    let turn = 0
    return load(total, concurrency, async () => {
      const user = users[turn++ % users.length]
      await post(app, '/auth/login', user, 200)
    })
  }
  await loginRun(strong.app, strongUsers, 10)
  const loginDefault = await loginRun(strong.app, strongUsers, Math.round(100 * scale))
  const loginLow = await loginRun(weak.app, weakUsers, Math.round(500 * scale))

  // Failed logins one at a time, the two kinds alternating (and swapping who goes first) so
  // both see the same machine load.
  const failed = { unknownEmail: [] as number[], wrongPassword: [] as number[] }
  for (let round = 0; round < Math.round(20 * scale); round++) {
    const attempts = [
      ['unknownEmail', `nobody.${crypto.randomUUID()}@bench.example`],
      ['wrongPassword', strongUsers[round % strongUsers.length]?.email],
    ] as const
    for (const [kind, email] of round % 2 === 0 ? attempts : [...attempts].reverse()) {
      const begin = performance.now()
      await post(strong.app, '/auth/login', { email, password: 'not the password' }, 401)
      failed[kind].push(performance.now() - begin)
    }
  }
  const mean = (values: number[]) => values.reduce((sum, value) => sum + value, 0) / values.length

  // Refresh: every worker rotates its own session (a refresh token works once).
  const chains = await Promise.all(
    Array.from({ length: concurrency }, (_, worker) =>
      post<Pair>(weak.app, '/auth/login', weakUsers[worker % weakUsers.length], 200),
    ),
  )
  const refreshTokens = chains.map((pair) => pair.refreshToken)
  const refreshRun = await load(Math.round(1000 * scale), concurrency, async (worker) => {
    const pair = await post<Pair>(weak.app, '/auth/refresh', { refreshToken: refreshTokens[worker] }, 200)
    refreshTokens[worker] = pair.refreshToken
  })

  console.log(`\nPOST /auth/login (${concurrency} concurrent, through app.handle)`)
  console.log(`  default argon2id:  ${describeRun(loginDefault)}`)
  console.log(`  low-cost baseline: ${describeRun(loginLow)}`)
  console.log(
    `  default / baseline throughput: ${fixed(loginDefault.perSecond / loginLow.perSecond, 3)}; default logins/s per core: ${fixed(loginDefault.perSecond / cores)} (argon2id alone allows ${fixed(parallelDefault.perSecond / cores)})`,
  )
  console.log(`\nfailed logins at the default cost, one at a time, alternating (should cost the same)`)
  for (const [label, values] of [
    ['unknown email: ', failed.unknownEmail],
    ['wrong password:', failed.wrongPassword],
  ] as const)
    console.log(`  ${label} mean ${fixed(mean(values))} ms   p50 ${fixed(medianOf(values))} ms`)
  console.log(
    `  unknown / wrong: mean ${fixed(mean(failed.unknownEmail) / mean(failed.wrongPassword), 3)}, p50 ${fixed(medianOf(failed.unknownEmail) / medianOf(failed.wrongPassword), 3)}`,
  )
  console.log(`\nPOST /auth/refresh (${concurrency} concurrent sessions rotating)`)
  console.log(`  ${describeRun(refreshRun)}`)
  console.log(
    `  refresh / login throughput: ${fixed(refreshRun.perSecond / loginDefault.perSecond)}x the default-cost login, ${fixed(refreshRun.perSecond / loginLow.perSecond, 2)}x the low-cost login`,
  )
} finally {
  await Promise.all([strong.close(), weak.close()])
  await database.drop()
  await vhost.drop()
}
