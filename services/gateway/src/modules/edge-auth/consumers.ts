import type { EventBus } from '@parley/common/events'
import { type RevocationStore, sessionRevocation, userRevocation } from './service'

export const REVOCATIONS_QUEUE = 'gateway.revocations'

/**
 * Shared state written once: a durable queue, so a revocation is not lost while every replica
 * is down, retried for as long as Redis refuses it (a dead-lettered revocation would be a
 * session that stays valid for replicas started later).
 */
export function subscribeRevocations(bus: EventBus, revocations: RevocationStore): Promise<void> {
  return bus.subscribe({
    queue: REVOCATIONS_QUEUE,
    retryForever: true,
    handlers: {
      'user.sessions_revoked': ({ data }) => revocations.revoke(userRevocation(data)),
      'user.session_revoked': ({ data }) => revocations.revoke(sessionRevocation(data)),
    },
  })
}
