import { findByIds, isDuplicateKeyError } from '@parley/common/mongo'
import type { Collection } from 'mongodb'
import type { UserDoc } from '../../db'

export type UserProfile = { userId: string; displayName: string; at: Date }

/** Chat's own projection of users (id → display name), fed by auth and user events. */
export class UserDirectory {
  constructor(private readonly users: Collection<UserDoc>) {}

  /**
   * Stores the profile unless a newer one is already there, so events applied twice or out
   * of order converge on the newest. When the stored copy is newer the filter matches nothing
   * and the upsert's insert collides on `_id`: that collision means "already newer".
   */
  async apply({ userId, displayName, at }: UserProfile): Promise<void> {
    try {
      await this.users.updateOne(
        { _id: userId, updatedAt: { $lt: at } },
        { $set: { displayName, updatedAt: at } },
        { upsert: true },
      )
    } catch (error) {
      if (!isDuplicateKeyError(error)) throw error
    }
  }

  /** The ids among `ids` that the projection does not know, in the order given. */
  async unknownIds(ids: readonly string[]): Promise<string[]> {
    if (ids.length === 0) return []
    const known = await findByIds(this.users, ids, { _id: 1 })
    const knownIds = new Set(known.map((user) => user._id))
    return ids.filter((id) => !knownIds.has(id))
  }

  async displayNames(ids: readonly string[]): Promise<Map<string, string>> {
    if (ids.length === 0) return new Map()
    const users = await findByIds(this.users, ids, { displayName: 1 })
    return new Map(users.map((user) => [user._id, user.displayName]))
  }
}
