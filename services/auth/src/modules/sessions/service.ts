import { type Logger, type Metrics, newId, problems } from '@parley/common'
import { buildEvent } from '@parley/common/events'
import { enqueueEvents } from '@parley/common/postgres'
import { and, eq, gt, inArray, isNull, lt, sql } from 'drizzle-orm'
import type { Db, Queryable } from '../../db'
import { credentials, sessions } from '../../db/schema'
import { EVENT_SOURCE } from '../../events'
import { hashRefreshToken, type IssuedSession, newRefreshToken } from '../tokens/service'

/** What an access token says about its user. */
export type SessionUser = { id: string; email: string; roles: string[]; emailVerified: boolean }

export type RevokeReason = 'logout' | 'reuse_detected' | 'revoked_by_user' | 'revoked_by_admin'

type RefreshOutcome =
  | { kind: 'rotated'; issued: IssuedSession }
  | { kind: 'reused'; userId: string; sessionId: string }
  | { kind: 'unknown' | 'expired' | 'revoked' }

export type SessionOptions = { accessTtlSeconds: number; refreshTtlSeconds: number }

const INVALID_REFRESH = 'The refresh token is invalid, expired or revoked'

/**
 * Refresh-token families: one per login, rotated on every refresh, revoked as a whole when
 * a rotated token comes back (RFC 9700 §4.14.2), on logout, or on "revoke everything".
 */
export class SessionService {
  private readonly refreshes
  private readonly reuseDetected
  private readonly purged
  private readonly log: Logger

  constructor(
    private readonly db: Db,
    private readonly options: SessionOptions,
    metrics: Metrics,
    logger: Logger,
  ) {
    this.log = logger.child({ component: 'sessions' })
    this.refreshes = metrics.counter('auth_refreshes_total', 'Refresh token exchanges by outcome', [
      'outcome',
    ])
    this.reuseDetected = metrics.counter(
      'auth_refresh_reuse_detected_total',
      'Rotated refresh tokens presented again; each revoked its whole session family',
    )
    this.purged = metrics.counter('auth_sessions_purged_total', 'Expired refresh token rows deleted')
  }

  /** Starts a session family (login, registration) inside the caller's transaction. */
  start(tx: Queryable, user: SessionUser): Promise<IssuedSession> {
    return this.issue(tx, user, newId(), null)
  }

  /**
   * Exchanges a refresh token for a new pair. The conditional UPDATE lets exactly one of
   * several concurrent exchanges of the same token win; the others see it rotated, which is
   * indistinguishable from a replay, so they revoke the family.
   */
  async refresh(refreshToken: string): Promise<IssuedSession> {
    const tokenHash = hashRefreshToken(refreshToken)
    const outcome = await this.db.transaction(async (tx): Promise<RefreshOutcome> => {
      const [current] = await tx
        .update(sessions)
        .set({ rotatedAt: sql`now()` })
        .from(credentials)
        .where(
          and(
            eq(sessions.tokenHash, tokenHash),
            eq(credentials.id, sessions.userId),
            isNull(sessions.rotatedAt),
            isNull(sessions.revokedAt),
            gt(sessions.expiresAt, sql`now()`),
          ),
        )
        .returning({
          id: sessions.id,
          familyId: sessions.familyId,
          userId: credentials.id,
          email: credentials.email,
          roles: credentials.roles,
          emailVerified: credentials.emailVerified,
        })
      if (current) {
        const { id, familyId, userId, ...user } = current
        return { kind: 'rotated', issued: await this.issue(tx, { id: userId, ...user }, familyId, id) }
      }
      const [presented] = await tx
        .select({
          familyId: sessions.familyId,
          userId: sessions.userId,
          rotatedAt: sessions.rotatedAt,
          revokedAt: sessions.revokedAt,
        })
        .from(sessions)
        .where(eq(sessions.tokenHash, tokenHash))
      if (!presented) return { kind: 'unknown' }
      if (presented.rotatedAt) {
        await this.revokeFamily(tx, presented.familyId, 'reuse_detected')
        return { kind: 'reused', userId: presented.userId, sessionId: presented.familyId }
      }
      return { kind: presented.revokedAt ? 'revoked' : 'expired' }
    })
    this.refreshes.inc({ outcome: outcome.kind })
    if (outcome.kind === 'reused') {
      this.reuseDetected.inc()
      this.log.warn(
        { userId: outcome.userId, sessionId: outcome.sessionId },
        'refresh token reused: session revoked',
      )
    }
    if (outcome.kind !== 'rotated') throw problems.unauthorized(INVALID_REFRESH)
    return outcome.issued
  }

  /** Ends the session the refresh token belongs to; someone else's token is answered like an unknown one. */
  async logout(userId: string, refreshToken: string): Promise<void> {
    const [session] = await this.db
      .select({ familyId: sessions.familyId })
      .from(sessions)
      .where(and(eq(sessions.tokenHash, hashRefreshToken(refreshToken)), eq(sessions.userId, userId)))
    if (!session) throw problems.notFound('No session of yours has this refresh token')
    await this.revokeFamily(this.db, session.familyId, 'logout')
  }

  /**
   * Revokes every session of `targetUserId` (default: the caller) and announces it, so the
   * gateway rejects access tokens issued before now. Another user's sessions need the
   * `admin` role, checked in the database rather than trusted from a possibly stale token.
   */
  async revokeAll(
    caller: { userId: string },
    targetUserId: string | undefined,
    correlationId: string | undefined,
  ): Promise<void> {
    const userId = targetUserId ?? caller.userId
    const byAdmin = userId !== caller.userId
    await this.db.transaction(async (tx) => {
      if (byAdmin) {
        const [actor] = await tx
          .select({ roles: credentials.roles })
          .from(credentials)
          .where(eq(credentials.id, caller.userId))
        if (!actor?.roles.includes('admin'))
          throw problems.forbidden('Only an admin may revoke another user’s sessions')
        const [target] = await tx
          .select({ id: credentials.id })
          .from(credentials)
          .where(eq(credentials.id, userId))
        if (!target) throw problems.notFound('No such user')
      }
      const revokedBefore = new Date()
      await tx
        .update(sessions)
        .set({ revokedAt: revokedBefore, revokedReason: byAdmin ? 'revoked_by_admin' : 'revoked_by_user' })
        .where(and(eq(sessions.userId, userId), isNull(sessions.revokedAt)))
      await enqueueEvents(tx, [
        buildEvent(
          EVENT_SOURCE,
          'user.sessions_revoked',
          { userId, revokedBefore: revokedBefore.toISOString() },
          { correlationId },
        ),
      ])
    })
    if (byAdmin) this.log.info({ adminId: caller.userId, userId }, 'sessions revoked by an admin')
  }

  /** False once the family (the token's `sid`) is revoked: the auth service's own bearer routes check it. */
  async isActive(sessionId: string): Promise<boolean> {
    const [active] = await this.db
      .select({ id: sessions.id })
      .from(sessions)
      .where(and(eq(sessions.familyId, sessionId), isNull(sessions.revokedAt)))
      .limit(1)
    return active !== undefined
  }

  /**
   * Deletes refresh-token rows past their expiry, a batch at a time (every refresh adds a row).
   * An expired token is refused anyway; once deleted, presenting it is simply unknown.
   */
  async purgeExpired(batchSize = 1000): Promise<number> {
    let total = 0
    for (;;) {
      const expired = this.db
        .select({ id: sessions.id })
        .from(sessions)
        .where(lt(sessions.expiresAt, sql`now()`))
        .limit(batchSize)
      const deleted = await this.db
        .delete(sessions)
        .where(inArray(sessions.id, expired))
        .returning({ id: sessions.id })
      total += deleted.length
      this.purged.inc(deleted.length)
      if (deleted.length < batchSize) return total
    }
  }

  private async revokeFamily(db: Queryable, familyId: string, reason: RevokeReason): Promise<void> {
    await db
      .update(sessions)
      .set({ revokedAt: sql`now()`, revokedReason: reason })
      .where(and(eq(sessions.familyId, familyId), isNull(sessions.revokedAt)))
  }

  private async issue(
    tx: Queryable,
    user: SessionUser,
    familyId: string,
    parentId: string | null,
  ): Promise<IssuedSession> {
    const refreshToken = newRefreshToken()
    const now = Date.now()
    await tx.insert(sessions).values({
      id: newId(),
      familyId,
      parentId,
      userId: user.id,
      tokenHash: hashRefreshToken(refreshToken),
      expiresAt: new Date(now + this.options.refreshTtlSeconds * 1000),
    })
    return {
      claims: {
        sub: user.id,
        sid: familyId,
        jti: newId(),
        roles: user.roles,
        email_verified: user.emailVerified,
        email: user.email,
        exp: Math.floor(now / 1000) + this.options.accessTtlSeconds,
      },
      refreshToken,
      refreshExpiresIn: this.options.refreshTtlSeconds,
    }
  }
}
