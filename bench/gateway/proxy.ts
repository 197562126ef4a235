/**
 * Gateway proxy overhead: wrk at 32 connections against
 *   (a) a small upstream Bun server directly (the ceiling),
 *   (b) nginx proxy_pass with upstream keep-alive to the same upstream (the baseline),
 *   (c) the gateway (its own process, as deployed): an authenticated GET with the JWT verified
 *       and the per-user rate limit checked in Redis (policy high enough never to answer 429).
 *   (d) a bare Bun.serve + fetch proxy (no framework, no auth, no limits): the ceiling of any
 *       gateway written on this runtime (goal: the gateway at >= 0.9x of it),
 *   (e) the seed-style gateway (bench/gateway/seed-express.mjs: Express 5, http-proxy-middleware,
 *       jsonwebtoken, a Redis counter per request, on Node.js) as a second reference line.
 * Prints req/s, p50 and p99 for each and the ratios (goals: gateway >= 0.9x the bare Bun proxy
 * and >= 0.6x nginx, p99 <= 5 ms).
 *
 * Run: `bun bench/gateway/proxy.ts` (infra up: Redis, RabbitMQ; wrk and nginx installed).
 * Env: BENCH_DURATION_S (default 10 s per target), BENCH_CONNECTIONS (32), BENCH_THREADS (2),
 *      NGINX_WORKERS (1: one core, like the single-threaded gateway), GATEWAY_LOG_LEVEL (warn:
 *      nginx runs with access_log off, so the gateway's per-request access log is off too).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SignJWT } from 'jose'
import { createTestSigner, createTestVhost, testInfra } from '../../packages/testkit/src/index.ts'
import { freePort, waitForHttp } from '../lib.ts'

const durationS = Number(process.env.BENCH_DURATION_S ?? 10)
const connections = Number(process.env.BENCH_CONNECTIONS ?? 32)
const threads = Number(process.env.BENCH_THREADS ?? 2)
const nginxWorkers = process.env.NGINX_WORKERS ?? '1'
const gatewayLogLevel = process.env.GATEWAY_LOG_LEVEL ?? 'warn'
const root = new URL('../..', import.meta.url).pathname

type Figures = { name: string; rps: number; p50Ms: number; p99Ms: number; errors: number }

function toMs(value: string): number {
  const match = /^([\d.]+)(us|ms|s)$/.exec(value.trim())
  if (!match) throw new Error(`unparsable latency ${value}`)
  const amount = Number(match[1])
  return match[2] === 'us' ? amount / 1000 : match[2] === 's' ? amount * 1000 : amount
}

async function wrk(name: string, url: string, headers: string[] = [], seconds = durationS): Promise<Figures> {
  const args = ['wrk', `-t${threads}`, `-c${connections}`, `-d${seconds}s`, '--latency']
  for (const header of headers) args.push('-H', header)
  args.push(url)
  const run = Bun.spawn(args, { stdout: 'pipe', stderr: 'pipe' })
  const output = await new Response(run.stdout).text()
  if ((await run.exited) !== 0) throw new Error(`wrk failed: ${await new Response(run.stderr).text()}`)
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(output)?.[1])
  const p50 = /^\s+50%\s+(\S+)/m.exec(output)?.[1]
  const p99 = /^\s+99%\s+(\S+)/m.exec(output)?.[1]
  const errors = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(output)?.[1] ?? 0)
  if (!p50 || !p99 || Number.isNaN(rps)) throw new Error(`unexpected wrk output:\n${output}`)
  return { name, rps, p50Ms: toMs(p50), p99Ms: toMs(p99), errors }
}

// The upstream and the JWKS live in this process, which idles while wrk runs.
const upstreamBody = JSON.stringify({
  id: '0190a6e0-0000-7000-8000-000000000000',
  displayName: 'Ada',
  bio: null,
})
const upstream = Bun.serve({
  hostname: '127.0.0.1',
  port: 0,
  fetch: () => new Response(upstreamBody, { headers: { 'content-type': 'application/json' } }),
})
const signer = await createTestSigner()
const jwks = Bun.serve({ hostname: '127.0.0.1', port: 0, fetch: () => Response.json(signer.jwks) })
const token = await signer.sign({ sub: Bun.randomUUIDv7(), exp: Math.floor(Date.now() / 1000) + 3600 })
const vhost = await createTestVhost()

const nginxDir = mkdtempSync(join(tmpdir(), 'parley-bench-nginx-'))
const nginxPort = freePort()
writeFileSync(
  join(nginxDir, 'nginx.conf'),
  `daemon off;
worker_processes ${nginxWorkers};
pid ${nginxDir}/nginx.pid;
error_log ${nginxDir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${nginxDir}/body;
  proxy_temp_path ${nginxDir}/proxy;
  fastcgi_temp_path ${nginxDir}/fastcgi;
  uwsgi_temp_path ${nginxDir}/uwsgi;
  scgi_temp_path ${nginxDir}/scgi;
  upstream app { server 127.0.0.1:${upstream.port}; keepalive 64; }
  server {
    listen 127.0.0.1:${nginxPort};
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`,
)
const nginx = Bun.spawn(
  ['nginx', '-p', nginxDir, '-e', join(nginxDir, 'error.log'), '-c', join(nginxDir, 'nginx.conf')],
  {
    stdout: 'ignore',
    stderr: 'inherit',
  },
)

const gatewayPort = freePort()
// BENCH_GATEWAY_BUN_FLAGS, e.g. "--cpu-prof-md --cpu-prof-dir=/tmp/prof", profiles the gateway.
const gatewayFlags = (process.env.BENCH_GATEWAY_BUN_FLAGS ?? '').split(' ').filter(Boolean)
const gateway = Bun.spawn(['bun', ...gatewayFlags, join(root, 'services/gateway/src/index.ts')], {
  env: {
    ...process.env,
    HOST: '127.0.0.1',
    PORT: String(gatewayPort),
    // Not the roster's 9400: a dev stack on this machine may hold it.
    OPS_PORT: String(freePort()),
    LOG_LEVEL: gatewayLogLevel,
    REDIS_URL: testInfra.redisUrl,
    AMQP_URL: vhost.url,
    JWKS_URL: `http://127.0.0.1:${jwks.port}/auth/.well-known/jwks.json`,
    USER_URL: `http://127.0.0.1:${upstream.port}`,
    RATE_LIMIT_POLICIES: JSON.stringify({ authenticated: { limit: 1_000_000_000, windowSeconds: 60 } }),
  },
  stdout: 'ignore',
  stderr: 'inherit',
})

// The bare proxy runs in its own process, like the gateway.
const bareProxyPort = freePort()
const bareProxy = Bun.spawn(
  [
    'bun',
    '-e',
    `const target = process.env.TARGET
Bun.serve({ hostname: '127.0.0.1', port: Number(process.env.PORT), async fetch(request) {
  const url = new URL(request.url)
  const response = await fetch(target + url.pathname + url.search, { headers: request.headers, decompress: false })
  return new Response(response.body, { status: response.status, headers: response.headers })
} })`,
  ],
  {
    env: { ...process.env, PORT: String(bareProxyPort), TARGET: `http://127.0.0.1:${upstream.port}` },
    stdout: 'ignore',
    stderr: 'inherit',
  },
)

// The seed-style gateway on Node.js, with the HS256 shared secret its JWTs use.
const seedPort = freePort()
const seedSecret = crypto.randomUUID()
const seedToken = await new SignJWT({})
  .setProtectedHeader({ alg: 'HS256' })
  .setSubject(Bun.randomUUIDv7())
  .setExpirationTime('1h')
  .sign(new TextEncoder().encode(seedSecret))
const seed = Bun.spawn(['node', join(root, 'bench/gateway/seed-express.mjs')], {
  env: {
    ...process.env,
    PORT: String(seedPort),
    TARGET: `http://127.0.0.1:${upstream.port}`,
    JWT_SECRET: seedSecret,
    REDIS_URL: testInfra.redisUrl,
  },
  stdout: 'ignore',
  stderr: 'inherit',
})

const results: Figures[] = []
try {
  const direct = `http://127.0.0.1:${upstream.port}/users/me`
  const viaNginx = `http://127.0.0.1:${nginxPort}/users/me`
  const viaGateway = `http://127.0.0.1:${gatewayPort}/api/v1/users/me`
  const authorization = `Authorization: Bearer ${token}`
  const viaBareProxy = `http://127.0.0.1:${bareProxyPort}/users/me`
  const viaSeed = `http://127.0.0.1:${seedPort}/api/v1/users/me`
  await waitForHttp(viaNginx)
  await waitForHttp(viaBareProxy)
  await waitForHttp(viaSeed, { headers: { authorization: `Bearer ${seedToken}` } })
  await waitForHttp(viaGateway, { headers: { authorization: `Bearer ${token}` } })

  for (const [name, url, headers] of [
    ['upstream direct', direct, []],
    ['nginx proxy_pass', viaNginx, []],
    ['gateway (auth + rate limit)', viaGateway, [authorization]],
    ['bare Bun proxy', viaBareProxy, []],
    ['seed-style Express gateway', viaSeed, [`Authorization: Bearer ${seedToken}`]],
  ] as const) {
    await wrk(name, url, [...headers], 2) // warm-up: JIT, connection pools, JWKS cache
    results.push(await wrk(name, url, [...headers]))
  }
} finally {
  gateway.kill('SIGTERM')
  nginx.kill('SIGQUIT')
  bareProxy.kill('SIGTERM')
  seed.kill('SIGTERM')
  await Promise.all([gateway.exited, nginx.exited, bareProxy.exited, seed.exited])
  upstream.stop(true)
  jwks.stop(true)
  await vhost.drop()
  rmSync(nginxDir, { recursive: true, force: true })
}

const pad = (value: string, width: number) => value.padEnd(width)
console.log(
  `\nwrk -t${threads} -c${connections} -d${durationS}s --latency (nginx workers: ${nginxWorkers}, gateway LOG_LEVEL=${gatewayLogLevel})`,
)
console.log(`${pad('target', 30)}${pad('req/s', 12)}${pad('p50', 11)}${pad('p99', 11)}non-2xx`)
for (const figures of results)
  console.log(
    `${pad(figures.name, 30)}${pad(figures.rps.toFixed(0), 12)}${pad(`${figures.p50Ms.toFixed(2)} ms`, 11)}${pad(`${figures.p99Ms.toFixed(2)} ms`, 11)}${figures.errors}`,
  )
const [, nginxFigures, gatewayFigures, bareFigures, seedFigures] = results as [
  Figures,
  Figures,
  Figures,
  Figures,
  Figures,
]
const toBare = gatewayFigures.rps / bareFigures.rps
const toNginx = gatewayFigures.rps / nginxFigures.rps
const met = (ok: boolean) => (ok ? 'met' : 'NOT met')
console.log(
  `\ngateway/bare Bun proxy req/s: ${toBare.toFixed(2)}x (goal >= 0.90x: ${met(toBare >= 0.9)}); ` +
    `gateway/nginx: ${toNginx.toFixed(2)}x (goal >= 0.60x: ${met(toNginx >= 0.6)}); ` +
    `gateway p99 ${gatewayFigures.p99Ms.toFixed(2)} ms (goal <= 5 ms: ${met(gatewayFigures.p99Ms <= 5)})`,
)
console.log(
  `bare Bun proxy/nginx: ${(bareFigures.rps / nginxFigures.rps).toFixed(2)}x; ` +
    `gateway/seed-style Express gateway: ${(gatewayFigures.rps / seedFigures.rps).toFixed(1)}x`,
)
