import type { EventBus } from '@parley/common/events'
import type { CloudEvent } from '@parley/contracts'
import type { RealtimeEventType } from './model'
import type { RealtimeHub } from './service'

export const REALTIME_QUEUE = 'gateway.realtime'

/**
 * Every replica pushes to (and ends) its own sockets: an exclusive per-process queue taking
 * the pushed events and the revocations that end sockets.
 */
export function subscribeRealtime(bus: EventBus, hub: RealtimeHub): Promise<void> {
  const push = async (event: CloudEvent<RealtimeEventType>) => {
    hub.deliver(event)
  }
  return bus.subscribe({
    queue: REALTIME_QUEUE,
    transient: true,
    handlers: {
      'message.sent': push,
      'conversation.created': push,
      'user.sessions_revoked': async ({ data }) =>
        hub.revokeSessions(data.userId, new Date(data.revokedBefore)),
    },
  })
}
