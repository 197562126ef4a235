import type { EventBus } from '@parley/common/events'
import { consumeOnce } from '@parley/common/postgres'
import { and, eq, lt } from 'drizzle-orm'
import type { Db } from '../../db'
import { credentials } from '../../db/schema'

export const PROFILES_QUEUE = 'auth.profiles'

/**
 * Keeps the display name current (verification mails greet the user by it). Idempotent, and
 * an older update arriving after a newer one changes nothing.
 */
export function subscribeProfileUpdates(bus: EventBus, db: Db): Promise<void> {
  return bus.subscribe({
    queue: PROFILES_QUEUE,
    handlers: {
      'user.profile_updated': async (event) => {
        const updatedAt = new Date(event.data.updatedAt)
        await consumeOnce(db, PROFILES_QUEUE, event.id, async (tx) => {
          await tx
            .update(credentials)
            .set({ displayName: event.data.displayName, displayNameUpdatedAt: updatedAt })
            .where(
              and(eq(credentials.id, event.data.userId), lt(credentials.displayNameUpdatedAt, updatedAt)),
            )
        })
      },
    },
  })
}
