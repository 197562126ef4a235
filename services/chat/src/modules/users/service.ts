import { findByIds, isDuplicateKeyError } from '@parley/common/mongo'
import type { Collection } from 'mongodb'
import type { ChatCache } from '../../cache'
import type { UserDoc } from '../../db'

export type UserProfile = { userId: string; displayName: string; at: Date }

/** Chat's own projection of users (id → display name), fed by auth and user events. */
export class UserDirectory {
  constructor(
    private readonly users: Collection<UserDoc>,
    private readonly cache: ChatCache,
  ) {}

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
      return
    }
    // Only what the projection took; versioned by `at` as well, for a concurrent reader's fill.
    await this.cache.storeDisplayNames([{ id: userId, displayName, updatedAt: at }])
  }

  /** The ids among `ids` that the projection does not know, in the order given. */
  async unknownIds(ids: readonly string[]): Promise<string[]> {
    if (ids.length === 0) return []
    const cached = await this.cache.displayNames(ids)
    const uncached = ids.filter((id) => !cached.has(id))
    const known = uncached.length === 0 ? [] : await findByIds(this.users, uncached, { _id: 1 })
    const knownIds = new Set([...cached.keys(), ...known.map((user) => user._id)])
    return ids.filter((id) => !knownIds.has(id))
  }

  /** Display names by id, from the cache and, for the ids it lacks, the projection (then cached). */
  async displayNames(ids: readonly string[]): Promise<Map<string, string>> {
    const unique = [...new Set(ids)]
    if (unique.length === 0) return new Map()
    const names = await this.cache.displayNames(unique)
    const missing = unique.filter((id) => !names.has(id))
    if (missing.length === 0) return names
    const users = await findByIds(this.users, missing, { displayName: 1, updatedAt: 1 })
    for (const user of users) names.set(user._id, user.displayName)
    await this.cache.storeDisplayNames(
      users.map((user) => ({ id: user._id, displayName: user.displayName, updatedAt: user.updatedAt })),
    )
    return names
  }
}
