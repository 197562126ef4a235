import { expect, test } from 'bun:test'
import { freePort, waitFor } from '@parley/testkit'

test('SIGTERM: in-flight requests finish, new ones are refused, clients close, exit 0', async () => {
  const port = await freePort()
  const child = Bun.spawn(['bun', `${import.meta.dir}/fixtures/slow-service.ts`], {
    env: {
      ...process.env,
      PORT: String(port),
      LOG_LEVEL: 'silent',
      SLOW_MS: '800',
      SHUTDOWN_GRACE_MS: '5000',
    },
    stdout: 'pipe',
    stderr: 'inherit',
  })
  const base = `http://127.0.0.1:${port}`
  await waitFor(async () => (await fetch(`${base}/health`)).ok, {
    timeoutMs: 10_000,
    what: 'fixture to listen',
  })

  const inFlight = fetch(`${base}/slow`)
  await Bun.sleep(150)
  child.kill('SIGTERM')
  await Bun.sleep(150)

  const refused = await fetch(`${base}/health`).then(
    (response) => `answered ${response.status}`,
    () => 'refused',
  )
  expect(refused).toBe('refused')
  const response = await inFlight
  expect(response.status).toBe(200)
  expect(await response.json()).toEqual({ done: true })

  expect(await child.exited).toBe(0)
  expect(await new Response(child.stdout).text()).toContain('client closed')
})
