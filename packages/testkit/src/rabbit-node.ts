import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { waitFor } from './index'

const RABBIT_BIN = process.env.TEST_RABBITMQ_BIN_DIR ?? '/usr/lib/rabbitmq/bin'

/** A free TCP port on loopback (bound, then released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      )
    })
  })
}

/** Whether something accepts TCP connections on a loopback port. */
export async function portAnswers(port: number): Promise<boolean> {
  try {
    const socket = await Bun.connect({ hostname: '127.0.0.1', port, socket: { data() {} } })
    socket.end()
    return true
  } catch {
    return false
  }
}

export type PrivateRabbit = {
  url: string
  /** Starts (or restarts) the node and waits until it accepts AMQP connections. */
  start: () => Promise<void>
  /** Stops the node (SIGTERM to its PID) and waits until the port is closed. Data survives. */
  stop: () => Promise<void>
  destroy: () => Promise<void>
}

/**
 * A RabbitMQ node of the test's own (own port, data dir, node name), so a test can stop and
 * restart a real broker without disturbing the shared one other tests use.
 */
export async function createPrivateRabbit(): Promise<PrivateRabbit> {
  const port = await freePort()
  const base = mkdtempSync(join(tmpdir(), 'parley-rabbit-'))
  mkdirSync(join(base, 'home'), { mode: 0o700 })
  writeFileSync(join(base, 'enabled_plugins'), '[].')
  writeFileSync(
    join(base, 'rabbitmq.conf'),
    `listeners.tcp.default = 127.0.0.1:${port}\nloopback_users = none\n`,
  )
  const nodeName = `parleytest${port}@localhost`
  const env = {
    ...process.env,
    HOME: join(base, 'home'),
    RABBITMQ_NODENAME: nodeName,
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(await freePort()),
    RABBITMQ_MNESIA_BASE: join(base, 'mnesia'),
    RABBITMQ_LOG_BASE: join(base, 'log'),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(base, 'enabled_plugins'),
    RABBITMQ_CONFIG_FILE: join(base, 'rabbitmq.conf'),
    RABBITMQ_CONF_ENV_FILE: join(base, 'rabbitmq-env.conf'),
    ERL_EPMD_ADDRESS: '127.0.0.1',
  }
  let child: ReturnType<typeof Bun.spawn> | undefined

  const stop = async () => {
    if (!child) return
    child.kill('SIGTERM')
    await child.exited
    child = undefined
    await waitFor(async () => !(await portAnswers(port)), {
      timeoutMs: 30_000,
      what: 'private RabbitMQ to stop',
    })
  }

  return {
    url: `amqp://guest:guest@127.0.0.1:${port}/%2F`,
    start: async () => {
      if (child) return
      child = Bun.spawn([join(RABBIT_BIN, 'rabbitmq-server')], { env, stdout: 'ignore', stderr: 'ignore' })
      await waitFor(() => portAnswers(port), {
        timeoutMs: 60_000,
        intervalMs: 200,
        what: 'private RabbitMQ to start',
      })
    },
    stop,
    destroy: async () => {
      await stop()
      rmSync(base, { recursive: true, force: true })
    },
  }
}
