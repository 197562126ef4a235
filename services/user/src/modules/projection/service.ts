import { consumeOnce } from '@parley/common/postgres'
import type { CloudEvent } from '@parley/contracts'
import { and, eq, sql } from 'drizzle-orm'
import type { Transaction, UserDatabase } from '../../db'
import { type ProfileRow, pendingEmailVerifications, profiles } from '../../db/schema'
import { PROFILE_CREATED_CHANNEL } from '../profiles/arrivals'
import type { ProfileCache } from '../profiles/cache'

/** Queue and inbox name of the projection consumer. */
export const PROJECTION_QUEUE = 'user.projection'

/**
 * Serialises the handlers of one user's events: without it, `user.registered` and an early
 * `user.email_verified` applied concurrently could each miss the other's uncommitted row.
 */
async function lockUser(tx: Transaction, userId: string): Promise<void> {
  await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${userId}, 0))`)
}

async function markVerified(tx: Transaction, userId: string): Promise<ProfileRow | undefined> {
  const [row] = await tx
    .update(profiles)
    .set({
      emailVerified: true,
      version: sql`${profiles.version} + 1`,
      updatedAt: sql`date_trunc('milliseconds', greatest(clock_timestamp(), ${profiles.updatedAt} + interval '1 millisecond'))`,
    })
    .where(and(eq(profiles.id, userId), eq(profiles.emailVerified, false)))
    .returning()
  return row
}

/**
 * Builds profiles from auth's events. Each event is applied at most once (its id is recorded
 * in the same transaction), and the effects commute: `user.email_verified` before
 * `user.registered` is parked and applied when the profile is created; a second
 * `user.registered` for the same user changes nothing the user may have edited since.
 */
export class ProfileProjection {
  constructor(
    private readonly db: UserDatabase,
    private readonly cache: ProfileCache,
  ) {}

  async registered(event: CloudEvent<'user.registered'>): Promise<void> {
    const { userId, email, displayName, emailVerified, createdAt } = event.data
    let changed: ProfileRow | undefined
    await consumeOnce(this.db, PROJECTION_QUEUE, event.id, async (tx) => {
      await lockUser(tx, userId)
      const [created] = await tx
        .insert(profiles)
        .values({
          id: userId,
          email: sql`lower(${email})`,
          displayName,
          emailVerified,
          createdAt: new Date(createdAt),
          updatedAt: new Date(createdAt),
        })
        .onConflictDoNothing()
        .returning()
      const parked = await tx
        .delete(pendingEmailVerifications)
        .where(eq(pendingEmailVerifications.userId, userId))
        .returning()
      const verified =
        parked.length > 0 || (emailVerified && !created) ? await markVerified(tx, userId) : undefined
      changed = verified ?? created
      if (created) await tx.execute(sql`select pg_notify(${PROFILE_CREATED_CHANNEL}, ${userId})`)
    })
    if (changed) await this.cache.put([changed])
  }

  async emailVerified(event: CloudEvent<'user.email_verified'>): Promise<void> {
    const { userId, verifiedAt } = event.data
    let changed: ProfileRow | undefined
    await consumeOnce(this.db, PROJECTION_QUEUE, event.id, async (tx) => {
      await lockUser(tx, userId)
      changed = await markVerified(tx, userId)
      if (changed) return
      const [exists] = await tx.select({ id: profiles.id }).from(profiles).where(eq(profiles.id, userId))
      if (!exists)
        await tx
          .insert(pendingEmailVerifications)
          .values({ userId, verifiedAt: new Date(verifiedAt) })
          .onConflictDoNothing()
    })
    if (changed) await this.cache.put([changed])
  }
}
