import type { EventBus } from '@parley/common/events'
import type { RevocationStore } from './service'

export const REVOCATIONS_QUEUE = 'gateway.revocations'

/** Shared state written once: a durable queue, so a revocation is not lost while every replica is down. */
export function subscribeRevocations(bus: EventBus, revocations: RevocationStore): Promise<void> {
  return bus.subscribe({
    queue: REVOCATIONS_QUEUE,
    handlers: {
      'user.sessions_revoked': ({ data }) => revocations.revoke(data.userId, new Date(data.revokedBefore)),
    },
  })
}
