import type { EventBus } from '@parley/common/events'
import type { CloudEvent } from '@parley/contracts'
import {
  type Revocation,
  type RevocationStore,
  sessionRevocation,
  userRevocation,
} from '../edge-auth/service'
import type { RealtimeEventType } from './model'
import type { RealtimeHub } from './service'

export const REALTIME_QUEUE = 'gateway.realtime'

/**
 * Every replica pushes to (and ends) its own sockets: an exclusive per-process queue taking
 * the pushed events and the revocations, which also go into this replica's memory so its
 * REST checks apply them at once (and while Redis is down).
 */
export function subscribeRealtime(
  bus: EventBus,
  hub: RealtimeHub,
  revocations: RevocationStore,
): Promise<void> {
  const push = async (event: CloudEvent<RealtimeEventType>) => {
    hub.deliver(event)
  }
  const revoke = async (revocation: Revocation) => {
    revocations.remember(revocation)
    hub.revoke(revocation)
  }
  return bus.subscribe({
    queue: REALTIME_QUEUE,
    transient: true,
    handlers: {
      'message.sent': push,
      'conversation.created': push,
      'user.sessions_revoked': ({ data }) => revoke(userRevocation(data)),
      'user.session_revoked': ({ data }) => revoke(sessionRevocation(data)),
    },
  })
}
