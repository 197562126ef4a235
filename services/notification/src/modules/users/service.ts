import type { EventData } from '@parley/contracts'
import { inArray, sql } from 'drizzle-orm'
import type { Queryable, Transaction } from '../../db'
import { users } from '../../db/schema'

export type Person = { id: string; email: string | null; displayName: string }

/**
 * The notification service's projection of users (from `user.registered` and
 * `user.profile_updated`): whom to address and how to greet them. Every write carries the
 * event's own timestamp, so a late or replayed older event never overwrites newer data.
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
      })
      .onConflictDoUpdate({
        target: users.id,
        set: {
          email: sql`excluded.email`,
          displayName: sql`case when ${users.updatedAt} < excluded.updated_at then excluded.display_name else ${users.displayName} end`,
          updatedAt: sql`greatest(${users.updatedAt}, excluded.updated_at)`,
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

  async find(ids: readonly string[], db: Queryable = this.db): Promise<Map<string, Person>> {
    if (ids.length === 0) return new Map()
    const rows = await db
      .select({ id: users.id, email: users.email, displayName: users.displayName })
      .from(users)
      .where(inArray(users.id, [...new Set(ids)]))
    return new Map(rows.map((row) => [row.id, row]))
  }
}
