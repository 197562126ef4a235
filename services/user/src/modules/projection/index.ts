import type { EventBus } from '@parley/common/events'
import type { CloudEvent, EventType } from '@parley/contracts'
import { PROJECTION_QUEUE, type ProfileProjection } from './service'

function isEvent<T extends EventType>(event: CloudEvent, type: T): event is CloudEvent<T> {
  return event.type === type
}

/** Consumes auth's user events into the profile projection (queue `user.projection`). */
export function subscribeProjection(bus: EventBus, projection: ProfileProjection): Promise<void> {
  return bus.subscribe({
    queue: PROJECTION_QUEUE,
    types: ['user.registered', 'user.email_verified'],
    handler: async (event) => {
      if (isEvent(event, 'user.registered')) await projection.registered(event)
      else if (isEvent(event, 'user.email_verified')) await projection.emailVerified(event)
    },
  })
}
