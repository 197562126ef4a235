import type { EventData } from '@parley/contracts'
import { inArray, sql } from 'drizzle-orm'
import type { Queryable, Transaction } from '../../db'
import { users } from '../../db/schema'

/** `verified`: the user proved they own `email` (only such addresses get mail beyond their code). */
export type Person = { id: string; email: string | null; displayName: string; verified: boolean }

/**
 * The notification service's projection of users (from `user.registered`,
 * `user.profile_updated` and `user.email_verified`): whom to address, how to greet them and
 * whether their address is verified. Every write carries the event's own timestamp, so a late or
 * replayed older event never overwrites newer data.
 */
export class UserDirectory {
  constructor(private readonly db: Queryable) {}

  async applyRegistered(tx: Transaction, data: EventData<'user.registered'>): Promise<void> {
    await tx
      .insert(users)
      .values({
        id: data.userId,
        email: data.email,
        displayName: data.displayName,
        updatedAt: new Date(data.createdAt),
        verifiedEmail: data.emailVerified ? data.email : null,
      })
      .onConflictDoUpdate({
        target: users.id,
        set: {
          email: sql`excluded.email`,
          displayName: sql`case when ${users.updatedAt} < excluded.updated_at then excluded.display_name else ${users.displayName} end`,
          updatedAt: sql`greatest(${users.updatedAt}, excluded.updated_at)`,
          // A `user.email_verified` applied first is kept: registration never un-verifies.
          verifiedEmail: sql`coalesce(excluded.verified_email, ${users.verifiedEmail})`,
        },
      })
  }

  async applyProfileUpdated(tx: Transaction, data: EventData<'user.profile_updated'>): Promise<void> {
    await tx
      .insert(users)
      .values({ id: data.userId, displayName: data.displayName, updatedAt: new Date(data.updatedAt) })
      .onConflictDoUpdate({
        target: users.id,
        set: { displayName: sql`excluded.display_name`, updatedAt: sql`excluded.updated_at` },
        setWhere: sql`${users.updatedAt} < excluded.updated_at`,
      })
  }

  /**
   * Records the verified address. Before its `user.registered` (the events may arrive in either
   * order) the row is a placeholder dated -infinity, so any registration or profile event fills in
   * the name; an empty name reads as not projected yet.
   */
  async applyEmailVerified(tx: Transaction, data: EventData<'user.email_verified'>): Promise<void> {
    await tx
      .insert(users)
      .values({
        id: data.userId,
        email: data.email,
        displayName: '',
        updatedAt: sql`'-infinity'::timestamptz`,
        verifiedEmail: data.email,
      })
      .onConflictDoUpdate({ target: users.id, set: { verifiedEmail: sql`excluded.verified_email` } })
  }

  /** The users known among `ids`; a placeholder row without a name yet is left out (not projected yet). */
  async find(ids: readonly string[], db: Queryable = this.db): Promise<Map<string, Person>> {
    if (ids.length === 0) return new Map()
    const rows = await db
      .select({
        id: users.id,
        email: users.email,
        displayName: users.displayName,
        verifiedEmail: users.verifiedEmail,
      })
      .from(users)
      .where(inArray(users.id, [...new Set(ids)]))
    return new Map(
      rows
        .filter((row) => row.displayName !== '')
        .map(({ verifiedEmail, ...row }) => [
          row.id,
          { ...row, verified: row.email !== null && verifiedEmail === row.email },
        ]),
    )
  }
}
