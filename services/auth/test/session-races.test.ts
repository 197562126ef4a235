import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { waitFor } from '@parley/testkit'
import { decodeJwt } from 'jose'
import { createHarness, type Harness, metricValue, type SignedInUser } from './harness'

// A one-second grace window: short enough to wait out, long enough for an immediate retry.
const GRACE_SECONDS = 1

let h: Harness
beforeAll(async () => {
  h = await createHarness({ REFRESH_REUSE_GRACE_SECONDS: String(GRACE_SECONDS) })
})
afterAll(() => h.close())

type Pair = { accessToken: string; refreshToken: string; refreshExpiresIn: number }

const refresh = (refreshToken: string) => h.call<Pair>('POST', '/auth/refresh', { body: { refreshToken } })

async function login(user: SignedInUser): Promise<Pair> {
  const reply = await h.call<Pair>('POST', '/auth/login', {
    body: { email: user.email, password: user.password },
  })
  expect(reply.status).toBe(200)
  return reply.body
}

/** Statements of this test database blocked on a lock right now. */
async function blocked(): Promise<number> {
  const [row] = await h.sql<{ count: number }[]>`
    select count(*)::int as count from pg_stat_activity
    where datname = current_database() and wait_event_type = 'Lock'`
  return row?.count ?? 0
}

const untilBlocked = (count: number) =>
  waitFor(async () => (await blocked()) >= count || undefined, { what: `${count} blocked statements` })

/**
 * Holds the user's credentials row (FOR UPDATE, from the test's own connection) while `queue`
 * starts the requests, so refreshes stall mid-transaction: before the fix, after rotating the
 * presented row and before their successor's INSERT passes its foreign-key check. Then lets go.
 */
async function withUserHeld<T>(userId: string, queue: () => Promise<T>): Promise<T> {
  let release = () => {}
  const released = new Promise<void>((resolve) => {
    release = resolve
  })
  let held = () => {}
  const locked = new Promise<void>((resolve) => {
    held = resolve
  })
  const holder = h.sql.begin(async (tx) => {
    await tx`select id from credentials where id = ${userId} for update`
    held()
    await released
  })
  await locked
  try {
    return await queue()
  } finally {
    release()
    await holder
  }
}

type Seen = { refresh: string[]; access: string[] }

function record(seen: Seen, replies: { status: number; body: Pair }[]) {
  for (const reply of replies)
    if (reply.status === 200) {
      seen.refresh.push(reply.body.refreshToken)
      seen.access.push(reply.body.accessToken)
    }
}

async function expectAllDead(seen: Seen) {
  // Newest first: presenting a rotated original first would be reuse and revoke the survivors.
  for (const refreshToken of [...seen.refresh].reverse())
    expect((await refresh(refreshToken)).status).toBe(401)
  for (const accessToken of seen.access)
    expect((await h.call('GET', '/auth/me', { token: accessToken })).status).toBe(401)
}

describe('refresh racing a revocation', () => {
  test('POST /auth/revoke while refreshes are in flight: afterwards no token of the user works (20 rounds)', async () => {
    const revoked: { userId: string; access: string[] }[] = []
    for (let round = 0; round < 20; round++) {
      const user = await h.register()
      const families = [user, await login(user), await login(user)]
      const seen: Seen = {
        refresh: families.map((family) => family.refreshToken),
        access: families.map((family) => family.accessToken),
      }
      const { refreshes, revoke } = await withUserHeld(user.id, async () => {
        const refreshes = Promise.all(families.map((family) => refresh(family.refreshToken)))
        await untilBlocked(families.length)
        const revoke = h.call('POST', '/auth/revoke', { token: user.accessToken })
        await untilBlocked(families.length + 1)
        return { refreshes, revoke }
      })
      expect((await revoke).status).toBe(204)
      record(seen, await refreshes)
      await expectAllDead(seen)
      revoked.push({ userId: user.id, access: seen.access })
    }
    // No access token minted from a pre-revoke refresh carries an `iat` after the announced
    // instant, so the gateway (which compares only `iat`) refuses every one of them too.
    for (const { userId, access } of revoked) {
      const event = await h.eventOf('user.sessions_revoked', (event) => event.data.userId === userId)
      const revokedBefore = Date.parse(event.data.revokedBefore)
      for (const token of access)
        expect(Number(decodeJwt(token).iat) * 1000).toBeLessThanOrEqual(revokedBefore)
    }
  })

  test('POST /auth/logout while refreshes of that family are in flight: none of its tokens works (20 rounds)', async () => {
    for (let round = 0; round < 20; round++) {
      const user = await h.register()
      const other = await login(user)
      const seen: Seen = { refresh: [user.refreshToken], access: [user.accessToken] }
      const { refreshes, logout } = await withUserHeld(user.id, async () => {
        const refreshes = Promise.all([refresh(user.refreshToken)])
        await untilBlocked(1)
        const logout = h.call('POST', '/auth/logout', {
          token: other.accessToken,
          body: { refreshToken: user.refreshToken },
        })
        await untilBlocked(2)
        return { refreshes, logout }
      })
      expect((await logout).status).toBe(204)
      record(seen, await refreshes)
      await expectAllDead(seen)
      // The user's other session is untouched.
      expect((await h.call('GET', '/auth/me', { token: other.accessToken })).status).toBe(200)
      expect((await refresh(other.refreshToken)).status).toBe(200)
    }
  })
})

describe('grace window for a retried refresh', () => {
  test('re-presenting the just-rotated token within the window returns the same successor and revokes nothing', async () => {
    const user = await h.register()
    const retriedBefore = await metricValue(h.ops, 'auth_refreshes_total', { outcome: 'retried' })
    const first = await refresh(user.refreshToken)
    expect(first.status).toBe(200)
    const retry = await refresh(user.refreshToken)
    expect(retry.status).toBe(200)
    expect(retry.body.refreshToken).toBe(first.body.refreshToken)
    expect(retry.body.accessToken).not.toBe(first.body.accessToken)
    expect(retry.body.refreshExpiresIn).toBeGreaterThan(0)
    expect(retry.body.refreshExpiresIn).toBeLessThanOrEqual(first.body.refreshExpiresIn)
    expect(decodeJwt(retry.body.accessToken)).toMatchObject({ sub: user.id, sid: h.sidOf(user) })
    expect((await h.call('GET', '/auth/me', { token: retry.body.accessToken })).status).toBe(200)
    expect(await metricValue(h.ops, 'auth_refreshes_total', { outcome: 'retried' })).toBe(retriedBefore + 1)

    // Still one successor, nothing revoked; only a hash of each token is stored.
    const rows = await h.sql<{ token_hash: string; revoked_reason: string | null }[]>`
      select token_hash, revoked_reason from sessions where family_id = ${h.sidOf(user)}`
    expect(rows).toHaveLength(2)
    expect(rows.every((row) => row.revoked_reason === null)).toBe(true)
    for (const row of rows) expect(row.token_hash).not.toBe(first.body.refreshToken)

    // The successor works as usual, and once used the old token is plain reuse again.
    const next = await refresh(first.body.refreshToken)
    expect(next.status).toBe(200)
    expect((await refresh(user.refreshToken)).status).toBe(401)
    expect((await refresh(next.body.refreshToken)).status).toBe(401)
  })

  test('after the window, re-presenting the rotated token revokes the family', async () => {
    const user = await h.register()
    const first = await refresh(user.refreshToken)
    expect(first.status).toBe(200)
    await Bun.sleep(GRACE_SECONDS * 1000 + 200)
    const replay = await refresh(user.refreshToken)
    expect(replay.status).toBe(401)
    const rows = await h.sql<{ revoked_reason: string | null }[]>`
      select revoked_reason from sessions where family_id = ${h.sidOf(user)}`
    expect(rows.map((row) => row.revoked_reason)).toEqual(['reuse_detected', 'reuse_detected'])
    expect((await refresh(first.body.refreshToken)).status).toBe(401)
    expect((await h.call('GET', '/auth/me', { token: first.body.accessToken })).status).toBe(401)
  })

  test('a revoked family gets no successor, even within the window', async () => {
    const user = await h.register()
    const first = await refresh(user.refreshToken)
    expect((await h.call('POST', '/auth/revoke', { token: first.body.accessToken })).status).toBe(204)
    expect((await refresh(user.refreshToken)).status).toBe(401)
    expect((await refresh(first.body.refreshToken)).status).toBe(401)
  })
})
