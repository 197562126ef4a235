import { type Logger, type Metrics, newId, problems } from '@parley/common'
import { buildEvent } from '@parley/common/events'
import { enqueueEvents } from '@parley/common/postgres'
import { and, eq, gt, inArray, isNull, lt, sql } from 'drizzle-orm'
import type { Db, Queryable, Transaction } from '../../db'
import { credentials, sessions } from '../../db/schema'
import { EVENT_SOURCE } from '../../events'
import {
  hashRefreshToken,
  type IssuedSession,
  newRefreshToken,
  successorRefreshToken,
} from '../tokens/service'

/** What an access token says about its user. */
export type SessionUser = { id: string; email: string; roles: string[]; emailVerified: boolean }

export type RevokeReason = 'logout' | 'reuse_detected' | 'revoked_by_user' | 'revoked_by_admin'
/** Reasons one session (not all of a user's) ends for. */
type SessionRevokeReason = Extract<RevokeReason, 'logout' | 'reuse_detected'>

type RefreshOutcome<T> =
  | { kind: 'rotated' | 'retried'; minted: T }
  | { kind: 'reused'; userId: string; sessionId: string }
  | { kind: 'unknown' | 'expired' | 'revoked' }

export type SessionOptions = {
  accessTtlSeconds: number
  refreshTtlSeconds: number
  /** How long a just-rotated token still yields its (unused) successor instead of counting as reuse. */
  reuseGraceSeconds: number
  /** HMAC key deriving each successor from the token it replaces (successorRefreshToken). */
  successorSecret: Buffer
}

const INVALID_REFRESH = 'The refresh token is invalid, expired or revoked'

/**
 * Refresh-token families: one per login, rotated on every refresh, revoked as a whole when
 * a rotated token comes back (RFC 9700 §4.14.2), on logout, or on "revoke everything".
 *
 * Every write to a user's sessions first locks that user's `credentials` row: refresh and
 * logout FOR NO KEY UPDATE, revoke-everything FOR UPDATE (which also waits for logins, whose
 * session INSERT holds FOR KEY SHARE through the foreign key). Under READ COMMITTED a
 * revocation's UPDATE cannot see a successor row a concurrent refresh has inserted but not
 * committed; with the lock no such refresh can be in flight, and a refresh that waited for a
 * revocation re-reads the presented row and finds it revoked.
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
   * Exchanges a refresh token for a new pair; `mint` (signing the access token) runs inside
   * the transaction, so every access token minted from a pre-revoke token has an `iat`
   * before the revocation's `revokedBefore`, which is taken once the revocation holds the lock.
   *
   * Concurrent exchanges of one token are serialised by the user lock: the first rotates, the
   * others find it rotated. Within the grace window, while the successor is unused, that is a
   * retry and gets the same successor (recomputed, never stored); otherwise it is reuse and
   * revokes the family.
   */
  async refresh<T>(refreshToken: string, mint: (issued: IssuedSession) => Promise<T>): Promise<T> {
    const tokenHash = hashRefreshToken(refreshToken)
    const outcome = await this.db.transaction(async (tx): Promise<RefreshOutcome<T>> => {
      const [owner] = await tx
        .select({ userId: sessions.userId })
        .from(sessions)
        .where(eq(sessions.tokenHash, tokenHash))
      if (!owner) return { kind: 'unknown' }
      const [user] = await tx
        .select({
          id: credentials.id,
          email: credentials.email,
          roles: credentials.roles,
          emailVerified: credentials.emailVerified,
        })
        .from(credentials)
        .where(eq(credentials.id, owner.userId))
        .for('no key update')
      if (!user) return { kind: 'unknown' }
      // A statement after the lock: it sees every revocation committed before we got it.
      const [current] = await tx
        .update(sessions)
        .set({ rotatedAt: sql`now()` })
        .where(
          and(
            eq(sessions.tokenHash, tokenHash),
            isNull(sessions.rotatedAt),
            isNull(sessions.revokedAt),
            gt(sessions.expiresAt, sql`now()`),
          ),
        )
        .returning({ id: sessions.id, familyId: sessions.familyId })
      if (current) {
        const successor = successorRefreshToken(this.options.successorSecret, refreshToken)
        const issued = await this.issue(tx, user, current.familyId, current.id, successor)
        return { kind: 'rotated', minted: await mint(issued) }
      }
      const [presented] = await tx
        .select({
          id: sessions.id,
          familyId: sessions.familyId,
          rotatedAt: sessions.rotatedAt,
          revokedAt: sessions.revokedAt,
          // clock_timestamp, not now(): now() is this transaction's start, which can precede a
          // concurrent rotation's own now(), and would put it "in grace" even with a 0 s window.
          inGrace: sql<boolean>`${sessions.rotatedAt} > clock_timestamp() - make_interval(secs => ${this.options.reuseGraceSeconds})`,
        })
        .from(sessions)
        .where(eq(sessions.tokenHash, tokenHash))
      if (!presented) return { kind: 'unknown' }
      if (presented.rotatedAt && !presented.revokedAt && presented.inGrace) {
        const retried = await this.successorFor(tx, refreshToken, presented.id)
        if (retried) {
          const issued = this.claimsFor(user, presented.familyId, retried.refreshToken, retried.expiresAt)
          return { kind: 'retried', minted: await mint(issued) }
        }
      }
      if (presented.rotatedAt) {
        await this.revokeFamily(tx, owner.userId, presented.familyId, 'reuse_detected')
        return { kind: 'reused', userId: owner.userId, sessionId: presented.familyId }
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
    if (outcome.kind !== 'rotated' && outcome.kind !== 'retried') throw problems.unauthorized(INVALID_REFRESH)
    return outcome.minted
  }

  /** Ends the session the refresh token belongs to; someone else's token is answered like an unknown one. */
  async logout(userId: string, refreshToken: string): Promise<void> {
    await this.db.transaction(async (tx) => {
      const [session] = await tx
        .select({ familyId: sessions.familyId })
        .from(sessions)
        .where(and(eq(sessions.tokenHash, hashRefreshToken(refreshToken)), eq(sessions.userId, userId)))
      if (!session) throw problems.notFound('No session of yours has this refresh token')
      // Waits for the user's refreshes in flight, so the UPDATE below sees their successors.
      await this.lockUser(tx, userId, 'no key update')
      await this.revokeFamily(tx, userId, session.familyId, 'logout')
    })
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
      // After the lock: every refresh committed before it (and the `iat` it minted) is earlier.
      await this.lockUser(tx, userId, 'update')
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

  private async lockUser(tx: Transaction, userId: string, strength: 'update' | 'no key update') {
    await tx.select({ id: credentials.id }).from(credentials).where(eq(credentials.id, userId)).for(strength)
  }

  /** The unused successor of the rotated row `parentId`, recomputed from the presented token. */
  private async successorFor(tx: Transaction, presented: string, parentId: string) {
    const refreshToken = successorRefreshToken(this.options.successorSecret, presented)
    const [row] = await tx
      .select({ expiresAt: sessions.expiresAt })
      .from(sessions)
      .where(
        and(
          eq(sessions.tokenHash, hashRefreshToken(refreshToken)),
          eq(sessions.parentId, parentId),
          isNull(sessions.rotatedAt),
          isNull(sessions.revokedAt),
          gt(sessions.expiresAt, sql`now()`),
        ),
      )
    // None after a signing-key change (another secret) or once the successor was used: reuse.
    return row ? { refreshToken, expiresAt: row.expiresAt } : undefined
  }

  /**
   * Revokes one session family and, in the same transaction, announces it: the gateway refuses
   * the family's access tokens (`sid`) at once instead of when they expire.
   */
  private async revokeFamily(
    tx: Queryable,
    userId: string,
    familyId: string,
    reason: SessionRevokeReason,
  ): Promise<void> {
    const revoked = await tx
      .update(sessions)
      .set({ revokedAt: sql`now()`, revokedReason: reason })
      .where(and(eq(sessions.familyId, familyId), isNull(sessions.revokedAt)))
      .returning({ id: sessions.id })
    if (revoked.length === 0) return
    await enqueueEvents(tx, [
      buildEvent(EVENT_SOURCE, 'user.session_revoked', {
        userId,
        sessionId: familyId,
        reason,
        revokedAt: new Date().toISOString(),
      }),
    ])
  }

  private async issue(
    tx: Queryable,
    user: SessionUser,
    familyId: string,
    parentId: string | null,
    refreshToken = newRefreshToken(),
  ): Promise<IssuedSession> {
    const expiresAt = new Date(Date.now() + this.options.refreshTtlSeconds * 1000)
    await tx.insert(sessions).values({
      id: newId(),
      familyId,
      parentId,
      userId: user.id,
      tokenHash: hashRefreshToken(refreshToken),
      expiresAt,
    })
    return this.claimsFor(user, familyId, refreshToken, expiresAt)
  }

  private claimsFor(
    user: SessionUser,
    familyId: string,
    refreshToken: string,
    expiresAt: Date,
  ): IssuedSession {
    const now = Date.now()
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
      refreshExpiresIn: Math.max(1, Math.round((expiresAt.getTime() - now) / 1000)),
    }
  }
}
