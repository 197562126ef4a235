import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { buildEvent } from '@parley/common/events'
import { waitFor } from '@parley/testkit'
import { decodeJwt } from 'jose'
import { createHarness, type Harness, metricValue, problemOf } from './harness'

let h: Harness
beforeAll(async () => {
  h = await createHarness()
})
afterAll(() => h.close())

type SignedInBody = {
  accessToken: string
  refreshToken: string
  tokenType: string
  expiresIn: number
  refreshExpiresIn: number
  user: { id: string; email: string; displayName: string; emailVerified: boolean; createdAt: string }
}

async function credentialsOf(email: string) {
  const [row] = await h.sql<
    {
      id: string
      email: string
      display_name: string
      password_hash: string
      roles: string[]
      email_verified: boolean
    }[]
  >`select * from credentials where email = ${email}`
  return row
}

describe('POST /auth/register', () => {
  test('creates the account, its first session and user.registered in one go', async () => {
    const reply = await h.call<SignedInBody>('POST', '/auth/register', {
      body: { email: '  Ada.Lovelace@Example.COM ', displayName: '  Ada  ', password: 'analytical engine' },
    })
    expect(reply.status).toBe(201)
    const { user, ...pair } = reply.body
    expect(pair).toMatchObject({ tokenType: 'Bearer', expiresIn: 900, refreshExpiresIn: 2_592_000 })
    expect(user).toEqual({
      id: expect.stringMatching(/^[0-9a-f]{8}-[0-9a-f]{4}-7/),
      email: 'ada.lovelace@example.com',
      displayName: 'Ada',
      emailVerified: false,
      createdAt: expect.any(String),
    })
    expect(decodeJwt(pair.accessToken)).toMatchObject({ sub: user.id, email: user.email, roles: ['user'] })

    const row = await credentialsOf('ada.lovelace@example.com')
    expect(row).toMatchObject({ id: user.id, display_name: 'Ada', roles: ['user'], email_verified: false })
    expect(row?.password_hash).toStartWith('$argon2id$v=19$m=1024,t=1,')
    expect(row?.password_hash).not.toContain('analytical engine')
    const sessions = await h.sql<{ token_hash: string; family_id: string; parent_id: string | null }[]>`
      select token_hash, family_id, parent_id from sessions where user_id = ${user.id}`
    expect(sessions).toHaveLength(1)
    expect(sessions[0]?.token_hash).toMatch(/^[0-9a-f]{64}$/)
    expect(sessions[0]?.token_hash).not.toBe(pair.refreshToken)
    expect(sessions[0]?.parent_id).toBeNull()
    expect(sessions[0]?.family_id).toBe(String(decodeJwt(pair.accessToken).sid))

    const event = await h.eventOf('user.registered', (event) => event.data.userId === user.id)
    expect(event).toMatchObject({
      source: 'parley/auth',
      correlationid: reply.headers.get('x-request-id') ?? 'missing',
      data: {
        userId: user.id,
        email: 'ada.lovelace@example.com',
        displayName: 'Ada',
        emailVerified: false,
        roles: ['user'],
        createdAt: user.createdAt,
      },
    })
  })

  test('an email taken in any letter case is a 409 problem and writes nothing', async () => {
    const first = await h.register({ email: 'grace@example.com' })
    const before = { credentials: await h.count('credentials'), sessions: await h.count('sessions') }
    const reply = await h.call('POST', '/auth/register', {
      body: { email: 'GRACE@Example.com', displayName: 'Impostor', password: 'something else entirely' },
    })
    expect(reply.status).toBe(409)
    expect(reply.headers.get('content-type')).toBe('application/problem+json')
    expect(problemOf(reply)).toMatchObject({ status: 409, type: 'https://parley.dev/problems/conflict' })
    expect({ credentials: await h.count('credentials'), sessions: await h.count('sessions') }).toEqual(before)
    const marker = await h.register()
    await h.eventOf('user.registered', (event) => event.data.userId === marker.id)
    expect(h.eventsOf('user.registered').filter((event) => event.data.email === first.email)).toHaveLength(1)
  })

  test('a password equal to the email is refused (422 naming body.password) before anything is written', async () => {
    const before = await h.count('credentials')
    const reply = await h.call('POST', '/auth/register', {
      body: { email: 'same@example.com', displayName: 'Same', password: 'SAME@example.com' },
    })
    expect(reply.status).toBe(422)
    expect(problemOf(reply).errors).toEqual([
      { field: 'body.password', message: 'must not be the email address' },
    ])
    expect(await h.count('credentials')).toBe(before)
    expect(await credentialsOf('same@example.com')).toBeUndefined()
  })

  test.each([
    ['a line feed', 'Bad\nName'],
    ['a carriage return', 'Bad\rName'],
    ['a tab', 'Bad\tName'],
    ['a NUL', 'Bad\u0000Name'],
    ['a DEL', 'Bad\u007fName'],
  ])('a display name with %s is a 422 naming body.displayName and writes nothing', async (_, displayName) => {
    const email = `control.${crypto.randomUUID().slice(0, 8)}@example.com`
    const password = 'long enough password'
    const before = { credentials: await h.count('credentials'), outbox: await h.count('outbox') }
    const reply = await h.call('POST', '/auth/register', { body: { email, displayName, password } })
    expect(reply.status).toBe(422)
    expect(problemOf(reply).errors?.map((error) => error.field)).toEqual(['body.displayName'])
    expect({ credentials: await h.count('credentials'), outbox: await h.count('outbox') }).toEqual(before)
    expect(await credentialsOf(email)).toBeUndefined()
    expect((await h.call('POST', '/auth/login', { body: { email, password } })).status).toBe(401)
  })

  test('a display name of spaces only is empty after trimming', async () => {
    const reply = await h.call('POST', '/auth/register', {
      body: { email: 'blank@example.com', displayName: '    ', password: 'long enough password' },
    })
    expect(reply.status).toBe(422)
    expect(problemOf(reply).errors?.map((error) => error.field)).toEqual(['body.displayName'])
  })
})

describe('POST /auth/login', () => {
  test('signs in with the email in any case and starts a new session', async () => {
    const user = await h.register({ email: 'login.case@example.com' })
    const reply = await h.call<SignedInBody>('POST', '/auth/login', {
      body: { email: ' Login.CASE@example.com', password: user.password },
    })
    expect(reply.status).toBe(200)
    expect(reply.body.user).toMatchObject({ id: user.id, email: 'login.case@example.com' })
    const registeredSid = decodeJwt(user.accessToken).sid
    expect(decodeJwt(reply.body.accessToken).sid).not.toBe(registeredSid)
    const [families] = await h.sql<{ count: number }[]>`
      select count(distinct family_id)::int as count from sessions where user_id = ${user.id}`
    expect(families?.count).toBe(2)
  })

  test('unknown email and wrong password get the same 401 problem', async () => {
    const user = await h.register()
    const wrongPassword = await h.call('POST', '/auth/login', {
      body: { email: user.email, password: `${user.password}!` },
    })
    const unknownEmail = await h.call('POST', '/auth/login', {
      body: { email: `nobody.${crypto.randomUUID()}@example.com`, password: user.password },
    })
    for (const reply of [wrongPassword, unknownEmail]) {
      expect(reply.status).toBe(401)
      expect(reply.headers.get('www-authenticate')).toBe('Bearer')
    }
    expect(problemOf(wrongPassword)).toEqual(problemOf(unknownEmail))
    expect(
      await metricValue(h.ops, 'auth_logins_total', { outcome: 'invalid_credentials' }),
    ).toBeGreaterThanOrEqual(2)
  })

  test('passwords compare in Unicode NFC: the same characters typed another way still match', async () => {
    const composed = 'mot de passe tr\u00e8s s\u00fbr'
    const decomposed = composed.normalize('NFD')
    expect(decomposed).not.toBe(composed)
    const user = await h.register({ password: decomposed })
    const reply = await h.call('POST', '/auth/login', { body: { email: user.email, password: composed } })
    expect(reply.status).toBe(200)
  })

  test('a hash made with other argon2id parameters is upgraded at the next login', async () => {
    const user = await h.register()
    const stronger = await h.startAnother({ ARGON2_MEMORY_KIB: '2048', ARGON2_TIME_COST: '2' })
    const reply = await stronger.call('POST', '/auth/login', {
      body: { email: user.email, password: user.password },
    })
    expect(reply.status).toBe(200)
    expect((await credentialsOf(user.email))?.password_hash).toStartWith('$argon2id$v=19$m=2048,t=2,')
    expect(
      (await h.call('POST', '/auth/login', { body: { email: user.email, password: user.password } })).status,
    ).toBe(200)
    await stronger.close()
  })

  test('the default cost is OWASP’s argon2id (19 MiB, 2 iterations)', async () => {
    const defaults = await h.startAnother({ ARGON2_MEMORY_KIB: undefined, ARGON2_TIME_COST: undefined })
    expect(defaults.config).toMatchObject({ ARGON2_MEMORY_KIB: 19_456, ARGON2_TIME_COST: 2 })
    const email = `owasp.${crypto.randomUUID().slice(0, 8)}@example.com`
    const registered = await defaults.call('POST', '/auth/register', {
      body: { email, displayName: 'Owasp', password: 'default cost password' },
    })
    expect(registered.status).toBe(201)
    expect((await credentialsOf(email))?.password_hash).toStartWith('$argon2id$v=19$m=19456,t=2,p=1$')
    const login = await defaults.call('POST', '/auth/login', {
      body: { email, password: 'default cost password' },
    })
    expect(login.status).toBe(200)
    const wrong = await defaults.call('POST', '/auth/login', {
      body: { email, password: 'not the password' },
    })
    expect(wrong.status).toBe(401)
    await defaults.close()
  })
})

describe('GET /auth/me', () => {
  test('answers the caller’s identity, roles and verification state', async () => {
    const user = await h.register({ displayName: 'Me Myself' })
    const reply = await h.call('GET', '/auth/me', { token: user.accessToken })
    expect(reply.status).toBe(200)
    expect(reply.body).toEqual({
      id: user.id,
      email: user.email,
      displayName: 'Me Myself',
      emailVerified: false,
      roles: ['user'],
      sessionId: String(decodeJwt(user.accessToken).sid),
      createdAt: expect.any(String),
    })
  })

  test('roles come from the account: an admin is told so', async () => {
    const user = await h.register()
    await h.sql`update credentials set roles = '{user,admin}' where id = ${user.id}`
    const reply = await h.call<{ roles: string[] }>('GET', '/auth/me', { token: user.accessToken })
    expect(reply.body.roles).toEqual(['user', 'admin'])
  })

  test('needs a valid bearer token', async () => {
    const missing = await h.call('GET', '/auth/me')
    expect(missing.status).toBe(401)
    expect(problemOf(missing).type).toBe('https://parley.dev/problems/unauthorized')
    const garbage = await h.call('GET', '/auth/me', { token: 'not.a.jwt' })
    expect(garbage.status).toBe(401)
  })
})

describe('user.profile_updated', () => {
  test('keeps the display name current, ignoring stale and repeated events', async () => {
    const user = await h.register({ displayName: 'Before' })
    const publish = (displayName: string, updatedAt: Date, id?: string) =>
      h.observer.publishEvent(
        buildEvent(
          'parley/user',
          'user.profile_updated',
          { userId: user.id, displayName, bio: null, avatarUrl: null, updatedAt: updatedAt.toISOString() },
          id ? { id } : {},
        ),
      )
    const later = new Date(Date.now() + 60_000)
    await publish('After', later)
    await waitFor(async () => (await credentialsOf(user.email))?.display_name === 'After', {
      what: 'display name updated',
    })
    // Older than what was applied: ignored.
    await publish('Stale', new Date(later.getTime() - 30_000))
    // A redelivery (same event id) is skipped even though it is the newest: otherwise it would win over Final.
    const eventId = Bun.randomUUIDv7()
    await publish('First delivery', new Date(later.getTime() + 1_000), eventId)
    await waitFor(async () => (await credentialsOf(user.email))?.display_name === 'First delivery', {
      what: 'newer update applied',
    })
    await publish('Redelivered', new Date(later.getTime() + 5_000), eventId)
    await publish('Final', new Date(later.getTime() + 3_000))
    await waitFor(
      async () =>
        (await metricValue(h.ops, 'events_consumed_total', { queue: 'auth.profiles', outcome: 'ok' })) === 5,
      { what: 'all five deliveries handled' },
    )
    expect((await credentialsOf(user.email))?.display_name).toBe('Final')
    const processed = await h.sql<{ event_id: string }[]>`
      select event_id from processed_events where consumer = 'auth.profiles' and event_id = ${eventId}`
    expect(processed).toHaveLength(1)
  }, 30_000)
})
