import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type ServiceName, UPSTREAMS, type UpstreamName } from '@parley/contracts'
import {
  createTestDatabase,
  createTestMongo,
  createTestVhost,
  freePort,
  portAnswers,
  type TestDatabase,
  type TestMongo,
  type TestVhost,
  testS3Env,
  waitFor,
} from '@parley/testkit'
import type { Subprocess } from 'bun'

const ROOT = join(import.meta.dir, '..', '..')

export type RunningService = {
  name: string
  port: number
  url: string
  /** The ops port's URL: /health, /ready, /metrics. */
  opsUrl: string
  process: ReturnType<typeof Bun.spawn>
  /** Its stdout lines so far (with `captureLogs`; empty otherwise). */
  logLines: () => readonly string[]
  /** From spawn to its first 200 from /ready (the stack starts auth, then the rest together). */
  readyMs: number
  stop: () => Promise<number>
}

async function collectLines(
  stream: ReadableStream<Uint8Array>,
  lines: string[],
  onLine?: (line: string) => void,
): Promise<void> {
  const decoder = new TextDecoder()
  let rest = ''
  for await (const chunk of stream) {
    const parts = (rest + decoder.decode(chunk, { stream: true })).split('\n')
    rest = parts.pop() ?? ''
    lines.push(...parts)
    if (onLine) for (const line of parts) onLine(line)
  }
}

/** Polls `/ready` until it answers 200 (undefined), the process exits or the deadline passes (why). */
async function untilReady(
  child: Subprocess,
  readyUrl: string,
  deadline: number,
): Promise<string | undefined> {
  while (Date.now() < deadline) {
    if (child.exitCode !== null) return `exited with ${child.exitCode}`
    try {
      // Bounded: a process that accepts but never answers must not stall the wait.
      if ((await fetch(readyUrl, { signal: AbortSignal.timeout(2_000) })).ok) return undefined
    } catch {
      // not listening yet
    }
    await Bun.sleep(100)
  }
  return child.exitCode === null ? 'still not ready at the deadline' : `exited with ${child.exitCode}`
}

/** A Redis server of the stack's own, so a test can stop it without disturbing other tests. */
export async function startPrivateRedis() {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'parley-redis-'))
  let child: ReturnType<typeof Bun.spawn> | undefined
  const start = async () => {
    child = Bun.spawn(
      [
        'redis-server',
        '--bind',
        '127.0.0.1',
        '--port',
        String(port),
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        dir,
      ],
      {
        stdout: 'ignore',
        stderr: 'ignore',
      },
    )
    await waitFor(() => portAnswers(port), { what: 'private Redis' })
  }
  const stop = async () => {
    child?.kill('SIGTERM')
    await child?.exited
    child = undefined
  }
  await start()
  return {
    url: `redis://127.0.0.1:${port}`,
    start,
    stop,
    destroy: async () => {
      await stop()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/**
 * Every service of the roster as a real process (from source, as `bun run dev` runs them) on free
 * loopback ports, against per-stack databases, vhost and Redis, plus a second gateway.
 */
export async function startStack(
  options: {
    gatewayEnv?: Record<string, string>
    /** Extra variables of the upstream services, e.g. a lower cap a test wants to reach. */
    serviceEnv?: Partial<Record<UpstreamName, Record<string, string>>>
    /** Extra variables of every process, e.g. the OTLP endpoint of a test's trace backend. */
    env?: Record<string, string>
    /** Keep each process's stdout (its log lines) in `logLines()` instead of dropping it. */
    captureLogs?: boolean
    /**
     * How long the whole stack may take to come up; below the 120 s of the test files' hooks, so
     * a slow start fails with the services it waited for rather than as a bare hook timeout.
     */
    readyTimeoutMs?: number
    /**
     * Compiled executables (`bun build --compile`, as the images run them) to start instead of the
     * sources, by service; each gets MIGRATIONS_DIR, as in its image.
     */
    binaries?: Partial<Record<ServiceName, string>>
  } = {},
) {
  const startedAt = Date.now()
  const readyBy = startedAt + (options.readyTimeoutMs ?? 100_000)
  /** When each step of the start-up finished, for the error of a stack that does not come up. */
  const timeline: string[] = []
  const mark = (step: string) => timeline.push(`${step} ${((Date.now() - startedAt) / 1000).toFixed(1)} s`)
  // Every service of the roster with its own store: a database each, one MongoDB database.
  const databases = new Map<string, TestDatabase>()
  await Promise.all(
    UPSTREAMS.map(async (service) => {
      if (service.store?.kind === 'postgres')
        databases.set(service.name, await createTestDatabase(join(ROOT, `services/${service.name}/drizzle`)))
    }),
  )
  mark('databases')
  const vhost: TestVhost = await createTestVhost()
  mark('vhost')
  const mongo: TestMongo = createTestMongo()
  const redis = await startPrivateRedis()
  mark('redis')
  const ports = Object.fromEntries(
    await Promise.all(UPSTREAMS.map(async (service) => [service.name, await freePort()] as const)),
  ) as Record<UpstreamName, number>
  const { privateKey } = generateKeyPairSync('ed25519')

  const common = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '/tmp',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    HOST: '127.0.0.1',
    REDIS_URL: redis.url,
    AMQP_URL: vhost.url,
    JWKS_URL: `http://127.0.0.1:${ports.auth}/auth/.well-known/jwks.json`,
    SHUTDOWN_GRACE_MS: '5000',
    ...options.env,
  }
  const storeEnv = (name: UpstreamName): Record<string, string> => {
    const service = UPSTREAMS.find((candidate) => candidate.name === name)
    if (service?.store?.kind === 'mongodb') return { MONGO_URL: mongo.url, MONGO_DB: mongo.dbName }
    const database = databases.get(name)
    return database ? { DATABASE_URL: database.url } : {}
  }
  // What the services need beyond their store and the common settings.
  const extraEnv: Partial<Record<ServiceName, Record<string, string>>> = {
    auth: {
      JWT_PRIVATE_KEY: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      JWT_KEY_ID: 'e2e-1',
      // The journey is about wiring, not password cost: a cheap argon2id keeps it quick.
      ARGON2_MEMORY_KIB: '1024',
      ARGON2_TIME_COST: '1',
      // The journey replays a just-rotated refresh token and expects reuse detection at once.
      REFRESH_REUSE_GRACE_SECONDS: '0',
    },
    // Attachments: the shared S3 server of scripts/infra.sh (keys are fresh ids).
    chat: testS3Env(),
    notification: {
      SMTP_URL: 'smtp://127.0.0.1:1025',
      NOTIFICATION_RETRY_DELAYS_MS: '500,1000',
    },
    gateway: {
      ...Object.fromEntries(
        UPSTREAMS.map((service) => [
          `${service.name.toUpperCase()}_URL`,
          `http://127.0.0.1:${ports[service.name]}`,
        ]),
      ),
      BODY_LIMIT_BYTES: '65536',
      ...options.gatewayEnv,
    },
  }
  const envOf = (name: ServiceName) => ({
    ...(name === 'gateway' ? {} : storeEnv(name)),
    ...extraEnv[name],
    ...(name === 'gateway' ? {} : options.serviceEnv?.[name]),
  })

  const running: RunningService[] = []
  /** Every process started, ready or not: a stack that fails to come up stops them all. */
  const spawned: Subprocess[] = []
  async function start(name: ServiceName, port: number, label: string = name): Promise<RunningService> {
    const opsPort = await freePort()
    const spawnedAt = performance.now()
    const binary = options.binaries?.[name]
    const command = binary ? [binary] : ['bun', join(ROOT, `services/${name}/src/index.ts`)]
    const compiled = binary ? { MIGRATIONS_DIR: join(ROOT, `services/${name}/drizzle`) } : {}
    const child = Bun.spawn(command, {
      env: { ...common, ...envOf(name), ...compiled, PORT: String(port), OPS_PORT: String(opsPort) },
      stdout: options.captureLogs ? 'pipe' : process.env.TEST_LOG_LEVEL ? 'inherit' : 'ignore',
      stderr: 'pipe',
    })
    spawned.push(child)
    const lines: string[] = []
    if (options.captureLogs && child.stdout instanceof ReadableStream) void collectLines(child.stdout, lines)
    // stderr still reaches the test output; its last lines also go into a start-up error.
    const errorLines: string[] = []
    void collectLines(child.stderr, errorLines, (line) => process.stderr.write(`[${label}] ${line}\n`))
    const url = `http://127.0.0.1:${port}`
    const opsUrl = `http://127.0.0.1:${opsPort}`
    const failure = await untilReady(child, `${opsUrl}/ready`, readyBy)
    if (failure)
      throw new Error(
        `${label} did not become ready (${failure}); stack so far: ${timeline.join(', ')}; ` +
          `its last stderr lines: ${errorLines.slice(-20).join(' | ') || '(none)'}`,
      )
    const readyMs = performance.now() - spawnedAt
    mark(label)
    const service: RunningService = {
      name: label,
      port,
      url,
      opsUrl,
      process: child,
      logLines: () => lines,
      readyMs,
      stop: async () => {
        child.kill('SIGTERM')
        return child.exited
      },
    }
    running.push(service)
    return service
  }

  async function dropData(): Promise<void> {
    await redis.destroy()
    await Promise.all([
      ...[...databases.values()].map((database) => database.drop()),
      vhost.drop(),
      mongo.drop(),
    ])
  }

  async function startAll() {
    // auth first: the others fetch its JWKS
    const auth = await start('auth', ports.auth)
    const upstreams = Object.fromEntries([
      ['auth', auth] as const,
      ...(await Promise.all(
        UPSTREAMS.filter((service) => service.name !== 'auth').map(
          async (service) => [service.name, await start(service.name, ports[service.name])] as const,
        ),
      )),
    ]) as Record<UpstreamName, RunningService>
    const [gateway, gateway2] = await Promise.all([
      start('gateway', await freePort(), 'gateway-1'),
      start('gateway', await freePort(), 'gateway-2'),
    ])
    return { upstreams, gateway, gateway2 }
  }

  let started: Awaited<ReturnType<typeof startAll>>
  try {
    started = await startAll()
  } catch (error) {
    // Nothing of a stack that did not come up outlives the test file.
    for (const child of spawned) child.kill('SIGKILL')
    await Promise.all(spawned.map((child) => child.exited))
    await dropData().catch(() => undefined)
    throw error
  }
  const { upstreams, gateway, gateway2 } = started

  return {
    ...upstreams,
    gateway,
    gateway2,
    redis,
    /** The stack's RabbitMQ vhost (its queues, e.g. for the broker's per-queue metrics). */
    vhost,
    /** Stops every process (SIGTERM) and returns their exit codes by name, then drops the data. */
    async stop(): Promise<Record<string, number>> {
      const codes: Record<string, number> = {}
      await Promise.all(
        running.map(async (service) => {
          codes[service.name] = await service.stop()
        }),
      )
      await dropData()
      return codes
    },
  }
}

export type Stack = Awaited<ReturnType<typeof startStack>>
