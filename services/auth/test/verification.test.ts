import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { CloudEvent } from '@parley/contracts'
import { testInfra, waitFor } from '@parley/testkit'
import Redis from 'ioredis'
import { decodeJwt } from 'jose'
import { newVerificationCode } from '../src/modules/verification/service'
import { createHarness, type Harness, metricValue, problemOf, type SignedInUser } from './harness'

let h: Harness
let redis: Redis
beforeAll(async () => {
  h = await createHarness()
  redis = new Redis(testInfra.redisUrl)
})
afterAll(async () => {
  const keys = await redis.keys(`${h.redisPrefix}*`)
  if (keys.length > 0) await redis.del(...keys)
  await redis.quit()
  await h.close()
})

type Requested = { expiresAt: string; resendAfterSeconds: number }

const request = (user: SignedInUser, instance: Pick<Harness, 'call'> = h) =>
  instance.call<Requested>('POST', '/auth/verify-email/request', { token: user.accessToken })
const confirm = (user: SignedInUser, code: string, instance: Pick<Harness, 'call'> = h) =>
  instance.call('POST', '/auth/verify-email/confirm', { token: user.accessToken, body: { code } })

/** The `index`th code mailed to the user. */
async function mailedCode(
  user: SignedInUser,
  index = 0,
): Promise<CloudEvent<'user.email_verification_requested'>> {
  return waitFor(
    () =>
      h.eventsOf('user.email_verification_requested').filter((event) => event.data.userId === user.id)[index],
    { timeoutMs: 15_000, what: 'verification requested event' },
  )
}

/** A code that is not `code`. */
const wrongCode = (code: string) => String((Number(code) + 1) % 1_000_000).padStart(6, '0')

describe('POST /auth/verify-email/request', () => {
  test('mails a 6-digit code through user.email_verification_requested and stores only its hash', async () => {
    const user = await h.register({ displayName: 'Vera' })
    const reply = await request(user)
    expect(reply.status).toBe(202)
    expect(reply.body.resendAfterSeconds).toBe(60)
    const expiresIn = Date.parse(reply.body.expiresAt) - Date.now()
    expect(expiresIn).toBeGreaterThan(590_000)
    expect(expiresIn).toBeLessThanOrEqual(600_000)

    const event = await mailedCode(user)
    expect(event).toMatchObject({
      source: 'parley/auth',
      correlationid: reply.headers.get('x-request-id') ?? 'missing',
      data: { userId: user.id, email: user.email, displayName: 'Vera', expiresAt: reply.body.expiresAt },
    })
    expect(event.data.code).toMatch(/^[0-9]{6}$/)

    const key = `${h.redisPrefix}verification:code:${user.id}`
    const stored = await redis.hgetall(key)
    expect(stored).toEqual({ hash: expect.stringMatching(/^[0-9a-f]{64}$/), attempts: '0' })
    expect(JSON.stringify(stored)).not.toContain(event.data.code)
    const ttl = await redis.ttl(key)
    expect(ttl).toBeGreaterThan(590)
    expect(ttl).toBeLessThanOrEqual(600)
    // Everything lives under the configured prefix.
    expect(await redis.exists(`verification:code:${user.id}`)).toBe(0)
  })

  test('a second request within the cooldown is a 429 problem with Retry-After, and mails nothing', async () => {
    const user = await h.register()
    expect((await request(user)).status).toBe(202)
    const again = await request(user)
    expect(again.status).toBe(429)
    const retryAfter = Number(again.headers.get('retry-after'))
    expect(retryAfter).toBeGreaterThanOrEqual(1)
    expect(retryAfter).toBeLessThanOrEqual(60)
    expect(problemOf(again)).toMatchObject({ status: 429, type: 'https://parley.dev/problems/rate-limited' })
    const marker = await h.register()
    await h.eventOf('user.registered', (event) => event.data.userId === marker.id)
    const requested = h
      .eventsOf('user.email_verification_requested')
      .filter((event) => event.data.userId === user.id)
    expect(requested).toHaveLength(1)
  })

  test('needs a bearer token', async () => {
    expect((await h.call('POST', '/auth/verify-email/request')).status).toBe(401)
  })
})

describe('POST /auth/verify-email/confirm', () => {
  test('the mailed code verifies the email and publishes user.email_verified', async () => {
    const user = await h.register()
    await request(user)
    const { data } = await mailedCode(user)

    const wrong = await confirm(user, wrongCode(data.code))
    expect(wrong.status).toBe(400)
    expect(problemOf(wrong)).toMatchObject({
      type: 'https://parley.dev/problems/verification-code-incorrect',
      detail: 'The code is incorrect; 4 attempts left',
      errors: [{ field: 'body.code', message: 'is incorrect' }],
    })

    const reply = await confirm(user, data.code)
    expect(reply.status).toBe(200)
    expect(reply.body).toEqual({ emailVerified: true })
    const [row] = await h.sql<{ email_verified: boolean; email_verified_at: Date | null }[]>`
      select email_verified, email_verified_at from credentials where id = ${user.id}`
    expect(row?.email_verified).toBe(true)
    expect(row?.email_verified_at).toBeInstanceOf(Date)
    const event = await h.eventOf('user.email_verified', (event) => event.data.userId === user.id)
    expect(event.data).toEqual({ userId: user.id, email: user.email, verifiedAt: expect.any(String) })
    expect(await redis.exists(`${h.redisPrefix}verification:code:${user.id}`)).toBe(0)

    const me = await h.call<{ emailVerified: boolean }>('GET', '/auth/me', { token: user.accessToken })
    expect(me.body.emailVerified).toBe(true)
    const refreshed = await h.call<{ accessToken: string }>('POST', '/auth/refresh', {
      body: { refreshToken: user.refreshToken },
    })
    expect(decodeJwt(refreshed.body.accessToken).email_verified).toBe(true)
    expect(
      await metricValue(h.ops, 'auth_verification_codes_total', { outcome: 'confirmed' }),
    ).toBeGreaterThanOrEqual(1)
  })

  test('once verified, requesting or confirming again is a 409 problem', async () => {
    const user = await h.register()
    await request(user)
    const { data } = await mailedCode(user)
    expect((await confirm(user, data.code)).status).toBe(200)
    const requestAgain = await request(user)
    expect(requestAgain.status).toBe(409)
    expect(problemOf(requestAgain).detail).toBe('The email address is already verified')
    expect((await confirm(user, data.code)).status).toBe(409)
  })

  test('five wrong codes use the code up; the right one no longer works', async () => {
    const user = await h.register()
    await request(user)
    const { data } = await mailedCode(user)
    const details: (string | undefined)[] = []
    for (let attempt = 0; attempt < 5; attempt++)
      details.push(problemOf(await confirm(user, wrongCode(data.code))).detail)
    expect(details).toEqual([
      'The code is incorrect; 4 attempts left',
      'The code is incorrect; 3 attempts left',
      'The code is incorrect; 2 attempts left',
      'The code is incorrect; 1 attempt left',
      'Too many incorrect codes: request a new one',
    ])
    const late = await confirm(user, data.code)
    expect(late.status).toBe(400)
    expect(problemOf(late).type).toBe('https://parley.dev/problems/verification-code-expired')
    const [row] = await h.sql<
      { email_verified: boolean }[]
    >`select email_verified from credentials where id = ${user.id}`
    expect(row?.email_verified).toBe(false)
  })

  test('parallel guesses cannot exceed the attempt limit', async () => {
    const user = await h.register()
    await request(user)
    const { data } = await mailedCode(user)
    const replies = await Promise.all(Array.from({ length: 20 }, () => confirm(user, wrongCode(data.code))))
    const types = replies.map((reply) => problemOf(reply).type.replace('https://parley.dev/problems/', ''))
    expect(types.filter((type) => type === 'verification-code-incorrect')).toHaveLength(4)
    expect(types.filter((type) => type === 'verification-code-used-up')).toHaveLength(1)
    expect(types.filter((type) => type === 'verification-code-expired')).toHaveLength(15)
  })

  test('a new request replaces the code (and its attempts)', async () => {
    const user = await h.register()
    const quick = await h.startAnother({ VERIFICATION_RESEND_SECONDS: '1' })
    await request(user, quick)
    const first = await mailedCode(user)
    expect((await confirm(user, wrongCode(first.data.code))).status).toBe(400)
    await waitFor(async () => (await request(user, quick)).status === 202, { what: 'cooldown over' })
    const second = await mailedCode(user, 1)
    expect(await redis.hget(`${h.redisPrefix}verification:code:${user.id}`, 'attempts')).toBe('0')
    if (second.data.code !== first.data.code) expect((await confirm(user, first.data.code)).status).toBe(400)
    expect((await confirm(user, second.data.code)).status).toBe(200)
    await quick.close()
  })

  test('an expired code is refused', async () => {
    const shortLived = await h.startAnother({ VERIFICATION_CODE_TTL_SECONDS: '1' })
    const user = await h.register()
    const reply = await request(user, shortLived)
    expect(reply.status).toBe(202)
    const { data } = await mailedCode(user)
    await waitFor(async () => (await redis.exists(`${h.redisPrefix}verification:code:${user.id}`)) === 0, {
      what: 'code expired in Redis',
    })
    const late = await confirm(user, data.code, shortLived)
    expect(late.status).toBe(400)
    expect(problemOf(late)).toMatchObject({
      type: 'https://parley.dev/problems/verification-code-expired',
      detail: 'No code is pending (it expired or none was requested): request a new one',
    })
    await shortLived.close()
  })

  test('without a pending code, or with a malformed one', async () => {
    const user = await h.register()
    expect(problemOf(await confirm(user, '123456')).type).toBe(
      'https://parley.dev/problems/verification-code-expired',
    )
    for (const code of ['12345', '1234567', 'abcdef', ' 12345']) {
      const reply = await confirm(user, code)
      expect(reply.status).toBe(422)
      expect(problemOf(reply).errors?.map((error) => error.field)).toEqual(['body.code'])
    }
    const anonymous = await h.call('POST', '/auth/verify-email/confirm', { body: { code: '123456' } })
    expect(anonymous.status).toBe(401)
  })
})

describe('Redis unavailable', () => {
  test('verification answers 503 problems; everything else keeps working', async () => {
    const closedPort = 'redis://127.0.0.1:1'
    const withoutRedis = await h.startAnother({ REDIS_URL: closedPort })
    const user = await h.register()
    for (const reply of [await request(user, withoutRedis), await confirm(user, '123456', withoutRedis)]) {
      expect(reply.status).toBe(503)
      expect(reply.headers.get('retry-after')).toBe('5')
      expect(problemOf(reply)).toMatchObject({
        status: 503,
        detail: 'Email verification is temporarily unavailable',
      })
    }
    const login = await withoutRedis.call('POST', '/auth/login', {
      body: { email: user.email, password: user.password },
    })
    expect(login.status).toBe(200)
    const ready = await withoutRedis.ops.handle(new Request('http://localhost/ready'))
    expect(ready.status).toBe(200)
    expect(((await ready.json()) as { checks: Record<string, string> }).checks.redis).not.toBe('ok')
    expect(
      await metricValue(withoutRedis.ops, 'auth_verification_codes_total', { outcome: 'unavailable' }),
    ).toBe(2)
    // Nothing was mailed for the refused request.
    const marker = await h.register()
    await h.eventOf('user.registered', (event) => event.data.userId === marker.id)
    expect(
      h.eventsOf('user.email_verification_requested').some((event) => event.data.userId === user.id),
    ).toBe(false)
    await withoutRedis.close()
  })
})

describe('newVerificationCode', () => {
  test('six digits, leading zeros kept, from the whole range', () => {
    const codes = Array.from({ length: 20_000 }, newVerificationCode)
    expect(codes.every((code) => /^[0-9]{6}$/.test(code))).toBe(true)
    expect(codes.some((code) => code.startsWith('0'))).toBe(true)
    expect(codes.some((code) => code.startsWith('9'))).toBe(true)
    expect(new Set(codes).size).toBeGreaterThan(19_000)
  })
})
