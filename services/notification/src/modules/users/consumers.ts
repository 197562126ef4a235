import type { EventBus } from '@parley/common/events'
import { consumeOnce } from '@parley/common/postgres'
import type { Db } from '../../db'
import type { UserDirectory } from './service'

export const USERS_QUEUE = 'notification.users'

/** Keeps the users projection (names, addresses, verification) current, once per event. */
export function subscribeUserDirectory(
  bus: EventBus,
  { db, directory }: { db: Db; directory: UserDirectory },
  retryDelaysMs: readonly number[],
): Promise<void> {
  return bus.subscribe({
    queue: USERS_QUEUE,
    retryDelaysMs,
    handlers: {
      'user.registered': async (event) => {
        await consumeOnce(db, USERS_QUEUE, event.id, (tx) => directory.applyRegistered(tx, event.data))
      },
      'user.profile_updated': async (event) => {
        await consumeOnce(db, USERS_QUEUE, event.id, (tx) => directory.applyProfileUpdated(tx, event.data))
      },
      'user.email_verified': async (event) => {
        await consumeOnce(db, USERS_QUEUE, event.id, (tx) => directory.applyEmailVerified(tx, event.data))
      },
    },
  })
}
