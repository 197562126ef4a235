import type { Redis } from '@parley/common/redis'
import { presenceKey } from '@parley/contracts'

/** Reads the gateway's presence sets (packages/contracts/src/presence.ts): online iff a member scores in the future. */
export class PresenceReader {
  constructor(private readonly redis: Redis) {}

  /** The subset of `userIds` online now; throws if Redis is unavailable (the caller retries later). */
  async onlineAmong(userIds: readonly string[]): Promise<Set<string>> {
    if (userIds.length === 0) return new Set()
    const now = Date.now()
    const pipeline = this.redis.pipeline()
    for (const userId of userIds) pipeline.zcount(presenceKey(userId), now, '+inf')
    const replies = (await pipeline.exec()) ?? []
    const online = new Set<string>()
    replies.forEach(([error, count], index) => {
      if (error) throw error
      const userId = userIds[index]
      if (userId !== undefined && Number(count) > 0) online.add(userId)
    })
    return online
  }
}
