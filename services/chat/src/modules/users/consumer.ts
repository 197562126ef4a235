import type { EventBus } from '@parley/common/events'
import { consumeOnceMongo } from '@parley/common/mongo'
import type { CloudEvent } from '@parley/contracts'
import type { Db } from 'mongodb'
import type { UserDirectory, UserProfile } from './service'

export const USER_PROJECTION_QUEUE = 'chat.users'

type UserEvent = CloudEvent<'user.registered'> | CloudEvent<'user.profile_updated'>

function profileOf(event: UserEvent): UserProfile {
  if (event.type === 'user.registered') {
    const { userId, displayName, createdAt } = event.data
    return { userId, displayName, at: new Date(createdAt) }
  }
  const { userId, displayName, updatedAt } = event.data
  return { userId, displayName, at: new Date(updatedAt) }
}

/** Keeps the users projection current; idempotent per event id and per profile version. */
export async function subscribeUserProjection(
  bus: EventBus,
  db: Db,
  directory: UserDirectory,
): Promise<void> {
  await bus.subscribe({
    queue: USER_PROJECTION_QUEUE,
    types: ['user.registered', 'user.profile_updated'],
    handler: async (event) => {
      await consumeOnceMongo(db, USER_PROJECTION_QUEUE, event.id, () =>
        directory.apply(profileOf(event as UserEvent)),
      )
    },
  })
}
