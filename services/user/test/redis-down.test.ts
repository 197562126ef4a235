import { afterAll, beforeAll, expect, test } from 'bun:test'
import { newId } from '@parley/common'
import { waitFor } from '@parley/testkit'
import { type Harness, registration, startUserService } from './harness'

let user: Harness

beforeAll(async () => {
  // Nothing listens on port 1: every cache call fails at once, as when Redis is down.
  user = await startUserService({ redisUrl: 'redis://127.0.0.1:1' })
})

afterAll(async () => {
  await user.stop()
})

test('with Redis down the cache is bypassed and every route still works', async () => {
  const id = newId()
  await user.publish('user.registered', registration(id, { displayName: 'No Cache' }))
  const token = await user.token(id)
  expect((await user.request('GET', '/users/me', { token })).status).toBe(200)
  const patched = await user.request('PATCH', '/users/me', { token, body: { bio: 'still works' } })
  expect(patched.status).toBe(200)
  await user.publish('user.email_verified', {
    userId: id,
    email: `${id.slice(-12)}@example.com`,
    verifiedAt: new Date().toISOString(),
  })
  await waitFor(async () => (await user.request('GET', '/users/me', { token })).body.emailVerified === true, {
    what: 'verification applied',
  })
  const profile = await user.request('GET', `/users/${id}`, { token })
  expect(profile.body).toMatchObject({ displayName: 'No Cache', bio: 'still works' })
  expect((await user.request('GET', `/users?ids=${id}`, { token })).body.items).toHaveLength(1)
  expect((await user.request('GET', '/users?q=no%20cache', { token })).body.items[0].id).toBe(id)

  const metrics = await (await user.ops.handle(new Request('http://localhost/metrics'))).text()
  expect(metrics).toMatch(/cache_requests_total\{[^}]*cache="profile"[^}]*result="error"[^}]*\} [1-9]/)
  const ready = await user.ops.handle(new Request('http://localhost/ready'))
  expect(ready.status).toBe(200)
  expect(((await ready.json()) as { checks: Record<string, string> }).checks.redis).not.toBe('ok')
})
