import { createHmac } from 'node:crypto'
import { HttpProblem, type Metrics, problems } from '@parley/common'
import { buildEvent } from '@parley/common/events'
import { enqueueEvents } from '@parley/common/postgres'
import type { Redis } from '@parley/common/redis'
import { and, eq } from 'drizzle-orm'
import type { Db } from '../../db'
import { credentials } from '../../db/schema'
import { EVENT_SOURCE } from '../../events'
import type { VerificationRequested } from './model'

const CODE_SPACE = 1_000_000
/** The largest multiple of 10^6 below 2^32: values at or above it are redrawn, so every code is equally likely. */
const UNBIASED_LIMIT = Math.floor(2 ** 32 / CODE_SPACE) * CODE_SPACE

/** A 6-digit one-time code from the CSPRNG, by rejection sampling (no modulo bias). */
export function newVerificationCode(): string {
  const draw = new Uint32Array(1)
  for (;;) {
    crypto.getRandomValues(draw)
    const value = draw[0] ?? UNBIASED_LIMIT
    if (value < UNBIASED_LIMIT) return String(value % CODE_SPACE).padStart(6, '0')
  }
}

/**
 * Counts the attempt and compares in one step, so parallel guesses cannot exceed the limit.
 * KEYS[1] = the code's hash; ARGV[1] = hash of the guess, ARGV[2] = attempts allowed.
 */
const CONFIRM_SCRIPT = `
local stored = redis.call('HGET', KEYS[1], 'hash')
if not stored then return {'missing', 0} end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if stored == ARGV[1] then return {'ok', attempts} end
if attempts >= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return {'exhausted', attempts}
end
return {'wrong', attempts}
`

export type VerificationOptions = {
  codeTtlSeconds: number
  maxAttempts: number
  resendSeconds: number
  /** HMAC key of the stored code hashes. */
  pepper: Buffer
}

const codeKey = (userId: string) => `verification:code:${userId}`
const cooldownKey = (userId: string) => `verification:cooldown:${userId}`

/**
 * Email verification with one-time codes kept (hashed) in Redis. The code travels in
 * `user.email_verification_requested` to the notification service, which mails it.
 */
export class VerificationService {
  private readonly codes

  constructor(
    private readonly db: Db,
    private readonly redis: Redis,
    private readonly options: VerificationOptions,
    metrics: Metrics,
  ) {
    this.codes = metrics.counter(
      'auth_verification_codes_total',
      'Email verification codes: sent, refused (cooldown, unavailable) and confirmation outcomes',
      ['outcome'],
    )
  }

  async request(userId: string, correlationId: string | undefined): Promise<VerificationRequested> {
    const user = await this.unverifiedUser(userId)
    const { codeTtlSeconds, resendSeconds } = this.options
    const started = await this.redisCall(() =>
      this.redis.set(cooldownKey(userId), '1', 'EX', resendSeconds, 'NX'),
    )
    if (started === null) {
      const remaining = await this.redisCall(() => this.redis.ttl(cooldownKey(userId)))
      this.codes.inc({ outcome: 'cooldown' })
      throw problems.tooManyRequests(Math.max(remaining, 1))
    }
    const code = newVerificationCode()
    const expiresAt = new Date(Date.now() + codeTtlSeconds * 1000)
    try {
      await this.redisCall(() =>
        this.redis
          .multi()
          .del(codeKey(userId))
          .hset(codeKey(userId), { hash: this.hash(userId, code), attempts: 0 })
          .expire(codeKey(userId), codeTtlSeconds)
          .exec(),
      )
      await this.db.transaction((tx) =>
        enqueueEvents(tx, [
          buildEvent(
            EVENT_SOURCE,
            'user.email_verification_requested',
            {
              userId,
              email: user.email,
              displayName: user.displayName,
              code,
              expiresAt: expiresAt.toISOString(),
            },
            { correlationId },
          ),
        ]),
      )
    } catch (error) {
      // Not mailed: do not make the user wait out the cooldown for a code they never get.
      await this.redis.del(cooldownKey(userId), codeKey(userId)).catch(() => undefined)
      throw error
    }
    this.codes.inc({ outcome: 'sent' })
    return { expiresAt: expiresAt.toISOString(), resendAfterSeconds: resendSeconds }
  }

  async confirm(userId: string, code: string, correlationId: string | undefined): Promise<void> {
    await this.unverifiedUser(userId)
    const reply = await this.redisCall(() =>
      this.redis.eval(CONFIRM_SCRIPT, 1, codeKey(userId), this.hash(userId, code), this.options.maxAttempts),
    )
    const [verdict, attempts] = Array.isArray(reply) ? reply : []
    if (verdict !== 'ok') {
      this.codes.inc({ outcome: verdict === 'wrong' || verdict === 'exhausted' ? verdict : 'expired' })
      throw this.rejection(verdict, Number(attempts))
    }
    const verifiedAt = new Date()
    await this.db.transaction(async (tx) => {
      const [verified] = await tx
        .update(credentials)
        .set({ emailVerified: true, emailVerifiedAt: verifiedAt, updatedAt: verifiedAt })
        .where(and(eq(credentials.id, userId), eq(credentials.emailVerified, false)))
        .returning({ email: credentials.email })
      // A parallel confirmation got there first and published the event.
      if (!verified) return
      await enqueueEvents(tx, [
        buildEvent(
          EVENT_SOURCE,
          'user.email_verified',
          { userId, email: verified.email, verifiedAt: verifiedAt.toISOString() },
          { correlationId },
        ),
      ])
    })
    await this.redis.del(codeKey(userId)).catch(() => undefined)
    this.codes.inc({ outcome: 'confirmed' })
  }

  private hash(userId: string, code: string): string {
    return createHmac('sha256', this.options.pepper).update(`${userId}:${code}`).digest('hex')
  }

  private rejection(verdict: unknown, attempts: number): HttpProblem {
    if (verdict === 'wrong') {
      const left = this.options.maxAttempts - attempts
      return new HttpProblem(
        400,
        'Incorrect Verification Code',
        `The code is incorrect; ${left} attempt${left === 1 ? '' : 's'} left`,
        'verification-code-incorrect',
        [{ field: 'body.code', message: 'is incorrect' }],
      )
    }
    if (verdict === 'exhausted') {
      return new HttpProblem(
        400,
        'Verification Code Used Up',
        'Too many incorrect codes: request a new one',
        'verification-code-used-up',
      )
    }
    return new HttpProblem(
      400,
      'No Pending Verification Code',
      'No code is pending (it expired or none was requested): request a new one',
      'verification-code-expired',
    )
  }

  private async unverifiedUser(userId: string) {
    const [user] = await this.db
      .select({
        email: credentials.email,
        displayName: credentials.displayName,
        emailVerified: credentials.emailVerified,
      })
      .from(credentials)
      .where(eq(credentials.id, userId))
    if (!user) throw problems.unauthorized('The account no longer exists')
    if (user.emailVerified) throw problems.conflict('The email address is already verified')
    return user
  }

  /** Codes live only in Redis: without it, verification is unavailable rather than broken. */
  private async redisCall<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call()
    } catch {
      this.codes.inc({ outcome: 'unavailable' })
      throw new HttpProblem(
        503,
        'Service Unavailable',
        'Email verification is temporarily unavailable',
        'service-unavailable',
        undefined,
        { 'retry-after': '5' },
      )
    }
  }
}
