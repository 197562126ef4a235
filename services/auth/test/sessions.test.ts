import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { decodeJwt } from 'jose'
import { createHarness, type Harness, metricValue, problemOf, type SignedInUser } from './harness'

let h: Harness
beforeAll(async () => {
  // Strict rotation: these tests present rotated tokens at once and expect reuse detection;
  // the grace window for retries is covered by session-races.test.ts.
  h = await createHarness({ REFRESH_REUSE_GRACE_SECONDS: '0' })
})
afterAll(() => h.close())

type Pair = { accessToken: string; refreshToken: string; tokenType: string; expiresIn: number }

const refresh = (refreshToken: string) => h.call<Pair>('POST', '/auth/refresh', { body: { refreshToken } })

async function familyRows(sid: string) {
  return h.sql<
    { id: string; parent_id: string | null; rotated_at: Date | null; revoked_reason: string | null }[]
  >`
    select id, parent_id, rotated_at, revoked_reason from sessions where family_id = ${sid} order by id`
}

async function login(user: SignedInUser): Promise<Pair> {
  const reply = await h.call<Pair>('POST', '/auth/login', {
    body: { email: user.email, password: user.password },
  })
  expect(reply.status).toBe(200)
  return reply.body
}

/** Publishes one more event and waits for it: anything written before it has been relayed by then. */
async function drainEvents() {
  const marker = await h.register()
  await h.eventOf('user.registered', (event) => event.data.userId === marker.id)
}

describe('POST /auth/refresh', () => {
  test('rotates: a new pair in the same session, the old refresh token spent', async () => {
    const user = await h.register()
    const reply = await refresh(user.refreshToken)
    expect(reply.status).toBe(200)
    expect(reply.body).toMatchObject({ tokenType: 'Bearer', expiresIn: 900, refreshExpiresIn: 2_592_000 })
    expect(reply.body.refreshToken).not.toBe(user.refreshToken)
    expect(reply.body.refreshToken).toMatch(/^[A-Za-z0-9_-]{43}$/)
    const claims = decodeJwt(reply.body.accessToken)
    expect(claims).toMatchObject({ sub: user.id, sid: h.sidOf(user) })
    expect(claims.jti).not.toBe(decodeJwt(user.accessToken).jti)

    const [first, second] = await familyRows(h.sidOf(user))
    expect(first?.rotated_at).toBeInstanceOf(Date)
    expect(second).toMatchObject({ parent_id: first?.id, rotated_at: null, revoked_reason: null })
    expect((await h.call('GET', '/auth/me', { token: reply.body.accessToken })).status).toBe(200)
  })

  test('tokens follow the account: roles and verification changed since login appear after a refresh', async () => {
    const user = await h.register()
    await h.sql`update credentials set roles = '{user,admin}', email_verified = true where id = ${user.id}`
    const reply = await refresh(user.refreshToken)
    expect(decodeJwt(reply.body.accessToken)).toMatchObject({
      roles: ['user', 'admin'],
      email_verified: true,
    })
  })

  test('reusing a rotated token revokes the whole family and answers 401', async () => {
    const user = await h.register()
    const reuseBefore = await metricValue(h.ops, 'auth_refresh_reuse_detected_total')
    const second = (await refresh(user.refreshToken)).body
    const third = (await refresh(second.refreshToken)).body
    const replay = await refresh(user.refreshToken)
    expect(replay.status).toBe(401)
    expect(problemOf(replay)).toMatchObject({ type: 'https://parley.dev/problems/unauthorized' })
    expect(await metricValue(h.ops, 'auth_refresh_reuse_detected_total')).toBe(reuseBefore + 1)
    // The gateway is told, so the family's access tokens stop working everywhere at once.
    const event = await h.eventOf('user.session_revoked', (event) => event.data.sessionId === h.sidOf(user))
    expect(event.data).toMatchObject({ userId: user.id, reason: 'reuse_detected' })

    const rows = await familyRows(h.sidOf(user))
    expect(rows).toHaveLength(3)
    expect(rows.map((row) => row.revoked_reason)).toEqual([
      'reuse_detected',
      'reuse_detected',
      'reuse_detected',
    ])
    // The legitimate holder's latest pair dies with it: the refresh token and, at auth, the access token.
    expect((await refresh(third.refreshToken)).status).toBe(401)
    expect((await h.call('GET', '/auth/me', { token: third.accessToken })).status).toBe(401)
    // Another login of the same user is another family, untouched.
    const other = await login(user)
    expect((await refresh(other.refreshToken)).status).toBe(200)
  })

  test('of ten concurrent refreshes with one token exactly one wins', async () => {
    const user = await h.register()
    const replies = await Promise.all(Array.from({ length: 10 }, () => refresh(user.refreshToken)))
    const statuses = replies.map((reply) => reply.status).sort()
    expect(statuses).toEqual([200, 401, 401, 401, 401, 401, 401, 401, 401, 401])
    const rows = await familyRows(h.sidOf(user))
    // One successor only: the losers found the token rotated, which is reuse, so the family is revoked.
    expect(rows).toHaveLength(2)
    expect(rows.filter((row) => row.parent_id !== null)).toHaveLength(1)
    expect(rows.every((row) => row.revoked_reason === 'reuse_detected')).toBe(true)
  })

  test('unknown and expired tokens are 401 and revoke nothing', async () => {
    expect((await refresh('A'.repeat(43))).status).toBe(401)
    const user = await h.register()
    await h.sql`update sessions set expires_at = now() - interval '1 second' where family_id = ${h.sidOf(user)}`
    const expired = await refresh(user.refreshToken)
    expect(expired.status).toBe(401)
    const rows = await familyRows(h.sidOf(user))
    expect([...rows]).toEqual([expect.objectContaining({ rotated_at: null, revoked_reason: null })])
    const metrics = {
      unknown: await metricValue(h.ops, 'auth_refreshes_total', { outcome: 'unknown' }),
      expired: await metricValue(h.ops, 'auth_refreshes_total', { outcome: 'expired' }),
    }
    expect(metrics.unknown).toBeGreaterThanOrEqual(1)
    expect(metrics.expired).toBeGreaterThanOrEqual(1)
  })
})

describe('POST /auth/logout', () => {
  test('revokes that session only', async () => {
    const user = await h.register()
    const laptop = await login(user)
    const reply = await h.call('POST', '/auth/logout', {
      token: user.accessToken,
      body: { refreshToken: user.refreshToken },
    })
    expect(reply.status).toBe(204)
    expect(reply.body).toBeUndefined()
    expect((await familyRows(h.sidOf(user))).map((row) => row.revoked_reason)).toEqual(['logout'])
    const event = await h.eventOf('user.session_revoked', (event) => event.data.sessionId === h.sidOf(user))
    expect(event.data).toMatchObject({ userId: user.id, reason: 'logout' })
    const revokedBefore = await metricValue(h.ops, 'auth_refreshes_total', { outcome: 'revoked' })
    expect((await refresh(user.refreshToken)).status).toBe(401)
    expect(await metricValue(h.ops, 'auth_refreshes_total', { outcome: 'revoked' })).toBe(revokedBefore + 1)
    expect((await h.call('GET', '/auth/me', { token: user.accessToken })).status).toBe(401)
    // The other device keeps working, and may log out the first session again (idempotent).
    expect((await h.call('GET', '/auth/me', { token: laptop.accessToken })).status).toBe(200)
    const repeated = await h.call('POST', '/auth/logout', {
      token: laptop.accessToken,
      body: { refreshToken: user.refreshToken },
    })
    expect(repeated.status).toBe(204)
    expect((await refresh(laptop.refreshToken)).status).toBe(200)
    // Announced once: the repeated logout revoked nothing new.
    await Bun.sleep(300)
    expect(h.eventsOf('user.session_revoked').filter((event) => event.data.userId === user.id)).toHaveLength(
      1,
    )
  })

  test('someone else’s refresh token is answered like an unknown one, and survives', async () => {
    const caller = await h.register()
    const victim = await h.register()
    const foreign = await h.call('POST', '/auth/logout', {
      token: caller.accessToken,
      body: { refreshToken: victim.refreshToken },
    })
    const unknown = await h.call('POST', '/auth/logout', {
      token: caller.accessToken,
      body: { refreshToken: 'B'.repeat(43) },
    })
    expect(foreign.status).toBe(404)
    expect(problemOf(foreign)).toEqual(problemOf(unknown))
    expect((await refresh(victim.refreshToken)).status).toBe(200)
  })

  test('needs a bearer token and a refresh token', async () => {
    const user = await h.register()
    const anonymous = await h.call('POST', '/auth/logout', { body: { refreshToken: user.refreshToken } })
    expect(anonymous.status).toBe(401)
    const noBody = await h.call('POST', '/auth/logout', { token: user.accessToken, body: {} })
    expect(noBody.status).toBe(422)
    expect(problemOf(noBody).errors?.map((error) => error.field)).toEqual(['body.refreshToken'])
    expect((await refresh(user.refreshToken)).status).toBe(200)
  })
})

describe('POST /auth/revoke', () => {
  test('revokes every session of the caller and publishes user.sessions_revoked', async () => {
    const user = await h.register()
    const phone = await login(user)
    const bystander = await h.register()
    const reply = await h.call('POST', '/auth/revoke', { token: user.accessToken })
    expect(reply.status).toBe(204)

    const rows = await h.sql<{ revoked_reason: string | null }[]>`
      select revoked_reason from sessions where user_id = ${user.id}`
    expect(rows.map((row) => row.revoked_reason)).toEqual(['revoked_by_user', 'revoked_by_user'])
    for (const refreshToken of [user.refreshToken, phone.refreshToken])
      expect((await refresh(refreshToken)).status).toBe(401)
    expect((await h.call('GET', '/auth/me', { token: phone.accessToken })).status).toBe(401)
    expect((await refresh(bystander.refreshToken)).status).toBe(200)

    const event = await h.eventOf('user.sessions_revoked', (event) => event.data.userId === user.id)
    expect(event.correlationid).toBe(reply.headers.get('x-request-id') ?? 'missing')
    // Every access token issued so far has `iat` before the announced instant, so the gateway rejects it.
    const revokedBefore = Date.parse(event.data.revokedBefore)
    for (const token of [user.accessToken, phone.accessToken])
      expect(Number(decodeJwt(token).iat) * 1000).toBeLessThanOrEqual(revokedBefore)

    // Signing in again afterwards works.
    const fresh = await login(user)
    expect((await h.call('GET', '/auth/me', { token: fresh.accessToken })).status).toBe(200)
  })

  test('an empty JSON body or the caller’s own id mean the caller', async () => {
    const user = await h.register()
    const second = await login(user)
    expect((await h.call('POST', '/auth/revoke', { token: user.accessToken, body: {} })).status).toBe(204)
    const third = await login(user)
    expect(
      (await h.call('POST', '/auth/revoke', { token: third.accessToken, body: { userId: user.id } })).status,
    ).toBe(204)
    expect((await refresh(second.refreshToken)).status).toBe(401)
    expect((await refresh(third.refreshToken)).status).toBe(401)
  })

  test('another user’s sessions: 403 for a user, done for an admin', async () => {
    const target = await h.register()
    const caller = await h.register()
    const forbidden = await h.call('POST', '/auth/revoke', {
      token: caller.accessToken,
      body: { userId: target.id },
    })
    expect(forbidden.status).toBe(403)
    expect(problemOf(forbidden).type).toBe('https://parley.dev/problems/forbidden')
    expect((await refresh(target.refreshToken)).status).toBe(200)
    await drainEvents()
    expect(h.eventsOf('user.sessions_revoked').filter((event) => event.data.userId === target.id)).toEqual([])

    const admin = await h.register()
    // The role is checked in the database, so an access token issued before the promotion suffices.
    await h.sql`update credentials set roles = '{user,admin}' where id = ${admin.id}`
    const done = await h.call('POST', '/auth/revoke', {
      token: admin.accessToken,
      body: { userId: target.id },
    })
    expect(done.status).toBe(204)
    const rows = await h.sql<{ revoked_reason: string | null }[]>`
      select distinct revoked_reason from sessions where user_id = ${target.id}`
    expect([...rows]).toEqual([{ revoked_reason: 'revoked_by_admin' }])
    await h.eventOf('user.sessions_revoked', (event) => event.data.userId === target.id)
    expect((await h.call('GET', '/auth/me', { token: admin.accessToken })).status).toBe(200)

    const unknown = await h.call('POST', '/auth/revoke', {
      token: admin.accessToken,
      body: { userId: Bun.randomUUIDv7() },
    })
    expect(unknown.status).toBe(404)
    const malformed = await h.call('POST', '/auth/revoke', {
      token: admin.accessToken,
      body: { userId: 'nope' },
    })
    expect(malformed.status).toBe(422)
    expect(problemOf(malformed).errors?.map((error) => error.field)).toEqual(['body.userId'])
  })

  test('needs a bearer token', async () => {
    expect((await h.call('POST', '/auth/revoke')).status).toBe(401)
  })
})

describe('expired sessions', () => {
  test('are purged in batches; live ones stay', async () => {
    const expired = await h.register()
    await refresh(expired.refreshToken)
    const live = await h.register()
    await h.sql`update sessions set expires_at = now() - interval '1 minute' where user_id = ${expired.id}`
    const [expiredRows] = await h.sql<{ count: number }[]>`
      select count(*)::int as count from sessions where expires_at < now()`
    expect(await h.deps.sessions.purgeExpired(1)).toBe(expiredRows?.count ?? -1)
    const [left] = await h.sql<
      { count: number }[]
    >`select count(*)::int as count from sessions where expires_at < now()`
    expect(left?.count).toBe(0)
    expect((await familyRows(h.sidOf(live))).length).toBe(1)
    expect((await refresh(live.refreshToken)).status).toBe(200)
  })
})
