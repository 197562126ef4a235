import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { Metrics, newId } from '@parley/common'
import { Problem } from '@parley/contracts'
import { testLogger, waitFor } from '@parley/testkit'
import { eq, sql } from 'drizzle-orm'
import { outbox, profiles } from '../src/db/schema'
import { ProfileCache } from '../src/modules/profiles/cache'
import { type Harness, registration, startUserService } from './harness'

let user: Harness

beforeAll(async () => {
  user = await startUserService()
})

afterAll(async () => {
  await user.stop()
})

/** Registers a user through the event, waits until it is projected, returns its id and token. */
async function registered(overrides: Parameters<typeof registration>[1] = {}) {
  const id = newId()
  await user.publish('user.registered', registration(id, overrides))
  const token = await user.token(id)
  await waitFor(async () => (await user.request('GET', `/users/${id}`, { token })).status === 200, {
    what: 'profile projected',
  })
  return { id, token }
}

/** Outbox rows about one user (other tests' rows come and drain meanwhile). */
async function outboxCount(userId: string): Promise<number> {
  const [row] = await user.db
    .select({ count: sql<number>`count(*)::int` })
    .from(outbox)
    .where(sql`${outbox.event}->'data'->>'userId' = ${userId}`)
  return row?.count ?? 0
}

describe('GET /users/me', () => {
  test('returns the caller’s own profile with the private fields', async () => {
    const { id, token } = await registered({ email: 'Mixed.Case@Example.com', displayName: 'Ada Lovelace' })
    const response = await user.request('GET', '/users/me', { token })
    expect(response.status).toBe(200)
    expect(response.body).toMatchObject({
      id,
      email: 'mixed.case@example.com',
      emailVerified: false,
      displayName: 'Ada Lovelace',
      bio: null,
      avatarUrl: null,
    })
    expect(Date.parse(response.body.createdAt)).not.toBeNaN()
    expect(Date.parse(response.body.updatedAt)).not.toBeNaN()
  })

  test('never answers 404 between registration and the projection: 100 register-then-read', async () => {
    const ids = Array.from({ length: 100 }, () => newId())
    const statuses: number[] = []
    // Ten at a time: the read starts the moment the broker confirmed the event.
    for (let start = 0; start < ids.length; start += 10) {
      await Promise.all(
        ids.slice(start, start + 10).map(async (id) => {
          await user.publish('user.registered', registration(id))
          const response = await user.request('GET', '/users/me', { token: await user.token(id) })
          statuses.push(response.status)
          expect(response.body.id).toBe(id)
        }),
      )
    }
    expect(statuses).toEqual(ids.map(() => 200))
  }, 30_000)

  test('answers 503 with Retry-After, not 404, when the profile never arrives', async () => {
    const response = await user.request('GET', '/users/me', { token: await user.token(newId()) })
    expect(response.status).toBe(503)
    expect(response.headers.get('retry-after')).toBe('1')
    expect(response.headers.get('content-type')).toBe('application/problem+json')
    expect(response.body.type).toContain('profile-pending')
  }, 10_000)

  test('401 problem without a valid token', async () => {
    const missing = await user.request('GET', '/users/me')
    expect(missing.status).toBe(401)
    expect(missing.headers.get('www-authenticate')).toBe('Bearer')
    expect((await user.request('GET', '/users/me', { token: 'not.a.jwt' })).status).toBe(401)
  })
})

describe('PATCH /users/me', () => {
  test('updates the fields given, trims the name, publishes user.profile_updated once', async () => {
    const events = await user.capture(['user.profile_updated'])
    const { id, token } = await registered({ displayName: 'Before' })
    const response = await user.request('PATCH', '/users/me', {
      token,
      body: { displayName: '  Grace Hopper  ', bio: 'Compilers', avatarUrl: 'https://cdn.example.com/g.png' },
    })
    expect(response.status).toBe(200)
    expect(response.body).toMatchObject({
      id,
      displayName: 'Grace Hopper',
      bio: 'Compilers',
      avatarUrl: 'https://cdn.example.com/g.png',
    })
    const [event] = await waitFor(() => events.filter((e) => e.data.userId === id).length > 0 && events, {
      what: 'user.profile_updated',
    })
    expect(event?.source).toBe('parley/user')
    expect(event?.data).toEqual({
      userId: id,
      displayName: 'Grace Hopper',
      bio: 'Compilers',
      avatarUrl: 'https://cdn.example.com/g.png',
      updatedAt: response.body.updatedAt,
    })

    // Partial update: only bio cleared; the rest unchanged. Then a no-op publishes nothing.
    const cleared = await user.request('PATCH', '/users/me', { token, body: { bio: null } })
    expect(cleared.body).toMatchObject({ displayName: 'Grace Hopper', bio: null })
    expect(Date.parse(cleared.body.updatedAt)).toBeGreaterThan(Date.parse(response.body.updatedAt))
    const same = await user.request('PATCH', '/users/me', { token, body: { displayName: 'Grace Hopper' } })
    expect(same.status).toBe(200)
    expect(same.body.updatedAt).toBe(cleared.body.updatedAt)
    await waitFor(() => events.filter((e) => e.data.userId === id).length === 2, { what: 'second event' })
    await waitFor(async () => (await outboxCount(id)) === 0, { what: 'outbox drained' })
    expect(events.filter((e) => e.data.userId === id).map((e) => e.data.bio)).toEqual(['Compilers', null])
  })

  test('concurrent updates each get a distinct, increasing updatedAt', async () => {
    const { token } = await registered()
    const results = await Promise.all(
      ['One', 'Two', 'Three', 'Four', 'Five'].map((displayName) =>
        user.request('PATCH', '/users/me', { token, body: { displayName } }),
      ),
    )
    const stamps = results.map((result) => result.body.updatedAt as string)
    expect(new Set(stamps).size).toBe(5)
  })

  test.each([
    [{ displayName: '' }, 'body.displayName'],
    [{ displayName: '    ' }, 'body.displayName'],
    [{ displayName: 'x'.repeat(65) }, 'body.displayName'],
    [{ displayName: 'Tab\there' }, 'body.displayName'],
    [{ displayName: 42 }, 'body.displayName'],
    [{ bio: 'b'.repeat(281) }, 'body.bio'],
    [{ avatarUrl: 'http://cdn.example.com/a.png' }, 'body.avatarUrl'],
    [{ avatarUrl: 'https://' }, 'body.avatarUrl'],
    [{ avatarUrl: 'https://user:secret@cdn.example.com/a.png' }, 'body.avatarUrl'],
    [{ avatarUrl: `https://cdn.example.com/${'a'.repeat(2030)}` }, 'body.avatarUrl'],
    [{ displayName: 'Fine', email: 'new@example.com' }, 'body.email'],
    [{}, 'body'],
  ])('422 naming the field and nothing written: %j', async (body, field) => {
    const { id, token } = await registered({ displayName: 'Unchanged' })
    const response = await user.request('PATCH', '/users/me', { token, body })
    expect(response.status).toBe(422)
    expect(response.headers.get('content-type')).toBe('application/problem+json')
    expect(response.body.errors.map((error: { field: string }) => error.field)).toContain(field)
    const [row] = await user.db.select().from(profiles).where(eq(profiles.id, id))
    expect(row).toMatchObject({ displayName: 'Unchanged', bio: null, avatarUrl: null, version: 1 })
    // The same transaction writes the profile and its event: version 1 and no row about this user.
    expect(await outboxCount(id)).toBe(0)
  })

  test('malformed JSON is a 400 problem', async () => {
    const { token } = await registered()
    const response = await user.request('PATCH', '/users/me', { token, body: '{"displayName":' })
    expect(response.status).toBe(400)
  })

  test('only the owner can change a profile: there is no route to patch another user', async () => {
    const owner = await registered({ displayName: 'Owner' })
    const other = await registered()
    expect((await user.request('PATCH', '/users/me', { body: { displayName: 'Nope' } })).status).toBe(401)
    const sideways = await user.request('PATCH', `/users/${owner.id}`, {
      token: other.token,
      body: { displayName: 'Hijacked' },
    })
    // The path is a profile's, read-only: 405 naming what it allows.
    expect(sideways.status).toBe(405)
    expect(sideways.headers.get('allow')).toBe('GET, HEAD')
    const [row] = await user.db.select().from(profiles).where(eq(profiles.id, owner.id))
    expect(row?.displayName).toBe('Owner')
  })
})

describe('GET /users/:id', () => {
  test('public profile without the email, own or other', async () => {
    const target = await registered({ displayName: 'Public Person', email: 'secret@example.com' })
    const viewer = await registered()
    for (const token of [viewer.token, target.token]) {
      const response = await user.request('GET', `/users/${target.id}`, { token })
      expect(response.status).toBe(200)
      expect(Object.keys(response.body).sort()).toEqual([
        'avatarUrl',
        'bio',
        'createdAt',
        'displayName',
        'id',
      ])
      expect(JSON.stringify(response.body)).not.toContain('secret@example.com')
    }
  })

  test('404 problem for an unknown id, 422 for a malformed one, 401 without a token', async () => {
    const { token } = await registered()
    const unknown = await user.request('GET', `/users/${newId()}`, { token })
    expect(unknown.status).toBe(404)
    expect(unknown.body).toMatchObject({ status: 404, title: 'Not Found' })
    const malformed = await user.request('GET', '/users/not-a-uuid', { token })
    expect(malformed.status).toBe(422)
    expect(malformed.body.errors[0].field).toBe('params.id')
    expect((await user.request('GET', `/users/${newId()}`)).status).toBe(401)
  })
})

describe('profile cache', () => {
  async function cachedVersion(id: string): Promise<number | undefined> {
    const value = await user.redis.get(`profile:${id}`)
    return value ? (JSON.parse(value) as { version: number }).version : undefined
  }

  test('a PATCH replaces the cached profile at once', async () => {
    const target = await registered({ displayName: 'Cached Name' })
    const viewer = await registered()
    expect((await user.request('GET', `/users/${target.id}`, { token: viewer.token })).body.displayName).toBe(
      'Cached Name',
    )
    expect(await cachedVersion(target.id)).toBe(1)
    await user.request('PATCH', '/users/me', { token: target.token, body: { displayName: 'Fresh Name' } })
    expect(await cachedVersion(target.id)).toBe(2)
    const after = await user.request('GET', `/users/${target.id}`, { token: viewer.token })
    expect(after.body.displayName).toBe('Fresh Name')
    const metrics = await (await user.ops.handle(new Request('http://localhost/metrics'))).text()
    expect(metrics).toMatch(/cache_requests_total\{[^}]*cache="profile"[^}]*result="hit"[^}]*\} [1-9]/)
  })

  test('a consumed user.email_verified replaces the cached profile', async () => {
    const { id, token } = await registered()
    expect((await user.request('GET', '/users/me', { token })).body.emailVerified).toBe(false)
    expect(await cachedVersion(id)).toBe(1)
    await user.publish('user.email_verified', {
      userId: id,
      email: `${id.slice(-12)}@example.com`,
      verifiedAt: new Date().toISOString(),
    })
    await waitFor(async () => (await cachedVersion(id)) === 2, { what: 'cache refreshed by the event' })
    expect((await user.request('GET', '/users/me', { token })).body.emailVerified).toBe(true)
  })

  test('a stale row never replaces a newer cached one', async () => {
    const { id, token } = await registered()
    await user.request('PATCH', '/users/me', { token, body: { bio: 'v2' } })
    const [stale] = await user.db.select().from(profiles).where(eq(profiles.id, id))
    await user.request('PATCH', '/users/me', { token, body: { bio: 'v3' } })
    // A reader that loaded v2 before the last write puts it back late.
    const cache = new ProfileCache(user.redis, 300, new Metrics('test'), testLogger())
    await cache.put(stale ? [stale] : [])
    expect(await cachedVersion(id)).toBe(3)
    expect((await user.request('GET', `/users/${id}`, { token })).body.bio).toBe('v3')
  })
})

test('the routes are documented in /docs/json', async () => {
  const response = await user.app.handle(new Request('http://localhost/docs/json'))
  const paths = Object.keys(((await response.json()) as { paths: Record<string, unknown> }).paths)
  expect(paths).toEqual(expect.arrayContaining(['/users/me', '/users/{id}', '/users']))
})

test('every route documents 401 with the shared Problem schema', async () => {
  type Operation = {
    security?: unknown[]
    responses: Record<string, { content?: Record<string, { schema?: { $id?: string } }> }>
  }
  const response = await user.app.handle(new Request('http://localhost/docs/json'))
  const { paths } = (await response.json()) as { paths: Record<string, Record<string, Operation>> }
  const operations = Object.values(paths).flatMap((methods) => Object.values(methods))
  expect(operations).toHaveLength(4)
  for (const operation of operations) {
    expect(operation.security).toEqual([{ bearer: [] }])
    expect(operation.responses['401']?.content?.['application/json']?.schema?.$id).toBe(Problem.$id)
  }
})
