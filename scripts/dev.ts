// Runs the five services from source with `bun --watch`, against the servers scripts/infra.sh
// started, with one prefixed log stream. Ctrl-C (or SIGTERM) stops every child by its PID.

import { generateKeyPairSync } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'

import { ROSTER, type ServiceEntry, serviceOf, UPSTREAMS } from '@parley/contracts'

// The services behind the gateway first, so its upstreams are there when it starts.
const services: readonly ServiceEntry[] = [...UPSTREAMS, serviceOf('gateway')]
const mongoDatabase = ROSTER.flatMap((service) =>
  service.store?.kind === 'mongodb' ? [service.store.database] : [],
)

const colours = ['\x1b[36m', '\x1b[33m', '\x1b[35m', '\x1b[32m', '\x1b[34m']
const reset = '\x1b[0m'

/** A signing key that survives restarts, so watch reloads do not log everyone out. */
function devSigningKey(): string {
  const file = '.data/dev-jwt-ed25519.pem'
  if (!existsSync(file)) {
    mkdirSync('.data', { recursive: true })
    const { privateKey } = generateKeyPairSync('ed25519')
    writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
  }
  return readFileSync(file, 'utf8')
}

const shared = {
  PARLEY_ENV: 'development',
  LOG_LEVEL: process.env.LOG_LEVEL ?? 'info',
  REDIS_URL: 'redis://127.0.0.1:6379',
  AMQP_URL: 'amqp://guest:guest@127.0.0.1:5672/%2F',
  MONGO_URL: 'mongodb://127.0.0.1:27017',
  MONGO_DB: mongoDatabase[0],
  JWKS_URL: `http://127.0.0.1:${serviceOf('auth').port}/auth/.well-known/jwks.json`,
  JWT_PRIVATE_KEY: devSigningKey(),
  JWT_KEY_ID: 'dev-1',
  SMTP_URL: 'smtp://127.0.0.1:1025',
  MAIL_FROM: 'Parley <no-reply@parley.localhost>',
  ...Object.fromEntries(
    UPSTREAMS.map((upstream) => [`${upstream.name.toUpperCase()}_URL`, `http://127.0.0.1:${upstream.port}`]),
  ),
  CORS_ORIGINS: 'http://localhost:3000,http://localhost:5173',
  // Production allows 5 registrations per IP per hour; locally everything comes from 127.0.0.1.
  RATE_LIMIT_POLICIES: JSON.stringify({ register: { limit: 100, windowSeconds: 3600 } }),
}

function envFor(service: ServiceEntry): Record<string, string | undefined> {
  const database =
    service.store?.kind === 'postgres'
      ? `postgres://parley:parley@127.0.0.1:5432/${service.store.database}`
      : undefined
  return {
    ...process.env,
    ...shared,
    DATABASE_URL: database,
    PORT: String(service.port),
    OPS_PORT: String(service.opsPort),
  }
}

async function pipeWithPrefix(stream: ReadableStream<Uint8Array>, prefix: string, out: NodeJS.WriteStream) {
  const decoder = new TextDecoder()
  let pending = ''
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true })
    const lines = pending.split('\n')
    pending = lines.pop() ?? ''
    for (const line of lines) out.write(`${prefix} ${line}\n`)
  }
  if (pending) out.write(`${prefix} ${pending}\n`)
}

for (const service of services.filter((candidate) => candidate.store !== null)) {
  const migration = Bun.spawn(['bun', `services/${service.name}/src/index.ts`, 'migrate'], {
    env: envFor(service),
    stdout: 'inherit',
    stderr: 'inherit',
  })
  if ((await migration.exited) !== 0) {
    console.error(`migrations of ${service.name} failed`)
    process.exit(1)
  }
}

const width = Math.max(...services.map((service) => service.name.length))
const children = services.map((service, index) => {
  const child = Bun.spawn(['bun', '--watch', `services/${service.name}/src/index.ts`], {
    env: envFor(service),
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const prefix = `${colours[index % colours.length]}${service.name.padEnd(width)} |${reset}`
  void pipeWithPrefix(child.stdout, prefix, process.stdout)
  void pipeWithPrefix(child.stderr, prefix, process.stderr)
  return { service, child }
})

let stopping = false
function stopAll(signal: NodeJS.Signals) {
  if (stopping) return
  stopping = true
  console.log(`\nstopping (${signal})…`)
  for (const { child } of children) child.kill('SIGTERM')
}
process.on('SIGINT', () => stopAll('SIGINT'))
process.on('SIGTERM', () => stopAll('SIGTERM'))

// Report the URLs once every service answers /health.
void (async () => {
  const deadline = Date.now() + 60_000
  for (const { service } of children) {
    while (Date.now() < deadline && !stopping) {
      const healthy = await fetch(`http://127.0.0.1:${service.port}/health`).then(
        (response) => response.ok,
        () => false,
      )
      if (healthy) break
      await Bun.sleep(250)
    }
  }
  if (stopping) return
  console.log(`
Parley is up:
  API        http://127.0.0.1:${serviceOf('gateway').port}/api/v1
  Swagger    http://127.0.0.1:${serviceOf('gateway').port}/docs
  WebSocket  ws://127.0.0.1:${serviceOf('gateway').port}/api/v1/ws
  services   ${services.map((service) => `${service.name} :${service.port}`).join(', ')}
  ops        ${services.map((service) => `${service.name} :${service.opsPort}`).join(', ')}   (/ready, /metrics)
  mail       http://127.0.0.1:8025/api/v1/messages   RabbitMQ http://127.0.0.1:15672 (guest/guest)
Ctrl-C stops everything.`)
})()

const codes = await Promise.all(children.map(({ child }) => child.exited))
process.exit(stopping ? 0 : Math.max(...codes, 1))
