import type { EventBus } from '@parley/common/events'
import { consumeOnceMongo } from '@parley/common/mongo'
import type { Db } from 'mongodb'
import type { UserDirectory, UserProfile } from './service'

export const USER_PROJECTION_QUEUE = 'chat.users'

/** Keeps the users projection current; idempotent per event id and per profile version. */
export async function subscribeUserProjection(
  bus: EventBus,
  db: Db,
  directory: UserDirectory,
): Promise<void> {
  const apply = async (eventId: string, profile: UserProfile) => {
    await consumeOnceMongo(db, USER_PROJECTION_QUEUE, eventId, () => directory.apply(profile))
  }
  await bus.subscribe({
    queue: USER_PROJECTION_QUEUE,
    handlers: {
      'user.registered': ({ id, data }) =>
        apply(id, { userId: data.userId, displayName: data.displayName, at: new Date(data.createdAt) }),
      'user.profile_updated': ({ id, data }) =>
        apply(id, { userId: data.userId, displayName: data.displayName, at: new Date(data.updatedAt) }),
    },
  })
}
