import type { EventBus } from '@parley/common/events'
import { PROJECTION_QUEUE, type ProfileProjection } from './service'

/** Consumes auth's user events into the profile projection (queue `user.projection`). */
export function subscribeProjection(bus: EventBus, projection: ProfileProjection): Promise<void> {
  return bus.subscribe({
    queue: PROJECTION_QUEUE,
    handlers: {
      'user.registered': (event) => projection.registered(event),
      'user.email_verified': (event) => projection.emailVerified(event),
    },
  })
}
