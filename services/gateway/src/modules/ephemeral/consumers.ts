import type { EventBus } from '@parley/common/events'
import type { EphemeralHub } from './service'

export const EPHEMERAL_QUEUE = 'gateway.ephemeral'

/**
 * Membership events keep each replica's contact index and participant cache current: an
 * exclusive per-process queue, so every replica sees every change.
 */
export function subscribeMembership(bus: EventBus, ephemeral: EphemeralHub): Promise<void> {
  return bus.subscribe({
    queue: EPHEMERAL_QUEUE,
    transient: true,
    handlers: {
      'conversation.created': async ({ data }) => ephemeral.membershipChanged(data),
      'conversation.updated': async ({ data }) => ephemeral.membershipChanged(data),
      'conversation.participants_added': async ({ data }) => ephemeral.membershipChanged(data),
      'conversation.participant_left': async ({ data }) => ephemeral.membershipChanged(data, data.userId),
    },
  })
}
