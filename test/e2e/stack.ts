import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  createTestDatabase,
  createTestMongo,
  createTestVhost,
  freePort,
  portAnswers,
  type TestDatabase,
  type TestMongo,
  type TestVhost,
  waitFor,
} from '@parley/testkit'

const ROOT = join(import.meta.dir, '..', '..')

type ServiceName = 'auth' | 'user' | 'chat' | 'notification' | 'gateway'

export type RunningService = {
  name: string
  port: number
  url: string
  process: ReturnType<typeof Bun.spawn>
  stop: () => Promise<number>
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
 * All five services as real processes (from source, as `bun run dev` runs them) on free
 * loopback ports, against per-stack databases, vhost and Redis, plus a second gateway.
 */
export async function startStack(options: { gatewayEnv?: Record<string, string> } = {}) {
  const [authDb, userDb, notificationDb] = await Promise.all([
    createTestDatabase(join(ROOT, 'services/auth/drizzle')),
    createTestDatabase(join(ROOT, 'services/user/drizzle')),
    createTestDatabase(join(ROOT, 'services/notification/drizzle')),
  ])
  const databases: TestDatabase[] = [authDb, userDb, notificationDb]
  const vhost: TestVhost = await createTestVhost()
  const mongo: TestMongo = createTestMongo()
  const redis = await startPrivateRedis()
  const ports = {
    auth: await freePort(),
    user: await freePort(),
    chat: await freePort(),
    notification: await freePort(),
  }
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
  }
  const env: Record<ServiceName, Record<string, string>> = {
    auth: {
      DATABASE_URL: authDb.url,
      JWT_PRIVATE_KEY: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      JWT_KEY_ID: 'e2e-1',
      // The journey is about wiring, not password cost: a cheap argon2id keeps it quick.
      ARGON2_MEMORY_KIB: '1024',
      ARGON2_TIME_COST: '1',
    },
    user: { DATABASE_URL: userDb.url },
    chat: { MONGO_URL: mongo.url, MONGO_DB: mongo.dbName },
    notification: {
      DATABASE_URL: notificationDb.url,
      SMTP_URL: 'smtp://127.0.0.1:1025',
      NOTIFICATION_RETRY_DELAYS_MS: '500,1000',
    },
    gateway: {
      AUTH_URL: `http://127.0.0.1:${ports.auth}`,
      USER_URL: `http://127.0.0.1:${ports.user}`,
      CHAT_URL: `http://127.0.0.1:${ports.chat}`,
      NOTIFICATION_URL: `http://127.0.0.1:${ports.notification}`,
      BODY_LIMIT_BYTES: '65536',
      ...options.gatewayEnv,
    },
  }

  const running: RunningService[] = []
  async function start(name: ServiceName, port: number, label = name): Promise<RunningService> {
    const child = Bun.spawn(['bun', join(ROOT, `services/${name}/src/index.ts`)], {
      env: { ...common, ...env[name], PORT: String(port) },
      stdout: process.env.TEST_LOG_LEVEL ? 'inherit' : 'ignore',
      stderr: 'inherit',
    })
    const url = `http://127.0.0.1:${port}`
    await waitFor(async () => (await fetch(`${url}/ready`)).ok, {
      timeoutMs: 30_000,
      intervalMs: 100,
      what: `${label} ready`,
    })
    const service: RunningService = {
      name: label,
      port,
      url,
      process: child,
      stop: async () => {
        child.kill('SIGTERM')
        return child.exited
      },
    }
    running.push(service)
    return service
  }

  const auth = await start('auth', ports.auth)
  const [user, chat, notification] = await Promise.all([
    start('user', ports.user),
    start('chat', ports.chat),
    start('notification', ports.notification),
  ])
  const gateway = await start('gateway', await freePort(), 'gateway-1')
  const gateway2 = await start('gateway', await freePort(), 'gateway-2')

  return {
    auth,
    user,
    chat,
    notification,
    gateway,
    gateway2,
    redis,
    /** Stops every process (SIGTERM) and returns their exit codes by name, then drops the data. */
    async stop(): Promise<Record<string, number>> {
      const codes: Record<string, number> = {}
      await Promise.all(
        running.map(async (service) => {
          codes[service.name] = await service.stop()
        }),
      )
      await redis.destroy()
      await Promise.all([...databases.map((database) => database.drop()), vhost.drop(), mongo.drop()])
      return codes
    },
  }
}

export type Stack = Awaited<ReturnType<typeof startStack>>
