import { expect, test } from 'bun:test'
import { freePort, waitFor } from '@parley/testkit'

const FIXTURE = `${import.meta.dir}/fixtures/slow-service.ts`

/** Exit code of `<binary> healthcheck` run with this environment. */
async function healthcheck(env: Record<string, string>): Promise<number> {
  const run = Bun.spawn(['bun', FIXTURE, 'healthcheck'], {
    env: { ...process.env, LOG_LEVEL: 'silent', ...env },
    stdout: 'ignore',
    stderr: 'ignore',
  })
  return run.exited
}

test('`healthcheck` asks the ops port: 1 before start-up and while draining, 0 when ready', async () => {
  const [port, opsPort] = [await freePort(), await freePort()]
  const env = { PORT: String(port), OPS_PORT: String(opsPort) }
  expect(await healthcheck(env)).toBe(1)

  const child = Bun.spawn(['bun', FIXTURE], {
    env: {
      ...process.env,
      ...env,
      LOG_LEVEL: 'silent',
      SHUTDOWN_DELAY_MS: '1500',
      SHUTDOWN_GRACE_MS: '5000',
    },
    stdout: 'ignore',
    stderr: 'inherit',
  })
  const ops = `http://127.0.0.1:${opsPort}`
  try {
    await waitFor(async () => (await fetch(`${ops}/ready`)).ok, { timeoutMs: 10_000, what: 'the ops port' })
    expect(await (await fetch(`${ops}/ready`)).json()).toEqual({
      status: 'ready',
      checks: { 'fake-client': 'ok' },
    })
    expect(await healthcheck(env)).toBe(0)
    // The service port has no /ready: a healthcheck pointed at it fails.
    expect((await fetch(`http://127.0.0.1:${port}/ready`)).status).toBe(404)
    expect(await healthcheck({ ...env, OPS_PORT: String(port) })).toBe(1)

    child.kill('SIGTERM')
    // Within SHUTDOWN_DELAY_MS: both listeners are open, readiness is false.
    await waitFor(async () => (await fetch(`${ops}/ready`)).status === 503, { what: '/ready 503' })
    expect(await healthcheck(env)).toBe(1)
    expect(await child.exited).toBe(0)
  } finally {
    child.kill('SIGKILL')
  }
})
