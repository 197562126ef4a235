import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { fileURLToPath } from 'node:url'
import { Problem } from '@parley/contracts'
import { createTestDatabase } from '@parley/testkit'
import postgres from 'postgres'
import { createHarness, type Harness } from './harness'

const SERVICE_DIR = fileURLToPath(new URL('..', import.meta.url))

let h: Harness
beforeAll(async () => {
  h = await createHarness()
})
afterAll(() => h.close())

/** Runs the service's entry point as its container would, with only the given environment. */
async function runEntryPoint(args: string[], env: Record<string, string>) {
  const child = Bun.spawn([process.execPath, 'src/index.ts', ...args], {
    cwd: SERVICE_DIR,
    env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'silent', ...env },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const [exitCode, stderr] = await Promise.all([child.exited, new Response(child.stderr).text()])
  return { exitCode, stderr }
}

describe('the process', () => {
  test('without JWT_PRIVATE_KEY in production it stops with one line naming the variable', async () => {
    const { exitCode, stderr } = await runEntryPoint([], { DATABASE_URL: h.database.url })
    expect(exitCode).toBe(78)
    expect(stderr).toBe(
      'invalid configuration: JWT_PRIVATE_KEY is required when PARLEY_ENV=production (an Ed25519 private key in PKCS8 PEM)\n',
    )
  })

  test('`migrate` applies the committed migrations and exits', async () => {
    const database = await createTestDatabase()
    try {
      const { exitCode } = await runEntryPoint(['migrate'], { DATABASE_URL: database.url })
      expect(exitCode).toBe(0)
      const sql = postgres(database.url, { max: 1 })
      const tables = await sql<{ table_name: string }[]>`
        select table_name from information_schema.tables where table_schema = 'public' order by table_name`
      // Built concurrently after the migrations, outside their transaction.
      const [index] = await sql<{ valid: boolean }[]>`
        select indisvalid as valid from pg_index where indexrelid = 'processed_events_processed_at_idx'::regclass`
      await sql.end()
      expect(index?.valid).toBe(true)
      expect(tables.map((row) => row.table_name)).toEqual([
        'credentials',
        'outbox',
        'outbox_dead',
        'processed_events',
        'sessions',
      ])
    } finally {
      await database.drop()
    }
  })
})

describe('infrastructure endpoints', () => {
  test('/ready checks PostgreSQL (critical), Redis and the broker', async () => {
    const reply = await h.ops.handle(new Request('http://localhost/ready'))
    expect(reply.status).toBe(200)
    expect(await reply.json()).toEqual({
      status: 'ready',
      checks: { postgres: 'ok', redis: 'ok', broker: 'ok' },
    })
    // Only on the ops port: the service port does not know the path.
    expect((await h.call('GET', '/ready')).status).toBe(404)
  })

  test('/metrics exposes the auth counters', async () => {
    await h.register()
    const text = await (await h.ops.handle(new Request('http://localhost/metrics'))).text()
    for (const name of [
      'auth_registrations_total',
      'auth_logins_total',
      'auth_refreshes_total',
      'auth_refresh_reuse_detected_total',
      'auth_verification_codes_total',
      'outbox_backlog',
      'http_request_duration_seconds',
    ])
      expect(text).toContain(`# TYPE ${name} `)
    expect(text).toContain('auth_registrations_total{outcome="created",service="auth"} 1')
  })

  test('/docs/json documents every route with its body and answers', async () => {
    type Operation = {
      tags?: string[]
      summary?: string
      security?: unknown[]
      requestBody?: { content: Record<string, { schema: { properties?: Record<string, unknown> } }> }
      responses: Record<string, { content?: Record<string, { schema?: { $id?: string } }> }>
    }
    const spec = (await h.call<{ paths: Record<string, Record<string, Operation>> }>('GET', '/docs/json'))
      .body
    const operations = Object.entries(spec.paths).flatMap(([path, methods]) =>
      Object.entries(methods).map(([method, operation]) => ({
        route: `${method.toUpperCase()} ${path}`,
        operation,
      })),
    )
    expect(operations.map((entry) => entry.route).sort()).toEqual([
      'GET /auth/.well-known/jwks.json',
      'GET /auth/me',
      'POST /auth/login',
      'POST /auth/logout',
      'POST /auth/refresh',
      'POST /auth/register',
      'POST /auth/revoke',
      'POST /auth/verify-email/confirm',
      'POST /auth/verify-email/request',
    ])
    const byRoute = Object.fromEntries(operations.map((entry) => [entry.route, entry.operation]))
    for (const { operation } of operations) {
      expect(operation.tags).toEqual(['auth'])
      expect(operation.summary).toBeString()
    }
    const bodyFields = (route: string) =>
      Object.keys(byRoute[route]?.requestBody?.content['application/json']?.schema.properties ?? {})
    expect(bodyFields('POST /auth/register')).toEqual(['email', 'displayName', 'password'])
    expect(bodyFields('POST /auth/refresh')).toEqual(['refreshToken'])
    expect(bodyFields('POST /auth/verify-email/confirm')).toEqual(['code'])
    expect(Object.keys(byRoute['POST /auth/register']?.responses ?? {})).toEqual(['201', '400', '409', '422'])
    expect(Object.keys(byRoute['POST /auth/verify-email/request']?.responses ?? {})).toEqual([
      '202',
      '401',
      '409',
      '429',
      '503',
    ])
    expect(byRoute['GET /auth/me']?.security).toEqual([{ bearer: [] }])
    const secured = operations.filter(({ operation }) => operation.security)
    expect(secured.map((entry) => entry.route).sort()).toEqual([
      'GET /auth/me',
      'POST /auth/logout',
      'POST /auth/revoke',
      'POST /auth/verify-email/confirm',
      'POST /auth/verify-email/request',
    ])
    for (const { operation } of secured)
      expect(operation.responses['401']?.content?.['application/json']?.schema?.$id).toBe(Problem.$id)
  })
})
