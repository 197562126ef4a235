import type { EventBus } from '@parley/common/events'
import {
  type Revocation,
  type RevocationStore,
  sessionRevocation,
  userRevocation,
} from '../edge-auth/service'
import type { RealtimeHub } from './service'

export const REALTIME_QUEUE = 'gateway.realtime'

/**
 * Every replica applies every revocation itself: an exclusive per-process queue, so the
 * revocation goes into this replica's memory (its REST checks apply it at once, and while
 * Redis is down) and ends its affected sockets. Pushes come from the user streams instead
 * (sync/service.ts StreamFeed).
 */
export function subscribeRealtime(
  bus: EventBus,
  hub: RealtimeHub,
  revocations: RevocationStore,
): Promise<void> {
  const revoke = async (revocation: Revocation) => {
    revocations.remember(revocation)
    hub.revoke(revocation)
  }
  return bus.subscribe({
    queue: REALTIME_QUEUE,
    transient: true,
    handlers: {
      'user.sessions_revoked': ({ data }) => revoke(userRevocation(data)),
      'user.session_revoked': ({ data }) => revoke(sessionRevocation(data)),
    },
  })
}
