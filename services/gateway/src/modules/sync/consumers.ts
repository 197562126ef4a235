import type { EventBus, EventHandlers } from '@parley/common/events'
import { type CloudEvent, USER_STREAM_EVENT_TYPES, type UserStreamEventType } from '@parley/contracts'
import type { UserStreams } from './service'

export const STREAMS_QUEUE = 'gateway.streams'

/** Short, then steady: an event waits for Redis to come back rather than be dropped. */
const STREAM_RETRY_DELAYS_MS = [500, 2_000, 5_000]

/**
 * The one writer of the user streams: a durable queue shared by every replica, one active
 * consumer at a time (so entries keep the broker's order), never dead-lettering a failed append
 * (a lost event is the one thing resume must not allow). Redeliveries append nothing twice.
 */
export function subscribeStreamWriter(bus: EventBus, streams: UserStreams): Promise<void> {
  const append = async (event: CloudEvent<UserStreamEventType>) => {
    await streams.append(event)
  }
  // Every user-stream type, so a type added to the contract list is streamed with no change here.
  const handlers = Object.fromEntries(
    USER_STREAM_EVENT_TYPES.map((type) => [type, append]),
  ) as unknown as EventHandlers<UserStreamEventType>
  return bus.subscribe({
    queue: STREAMS_QUEUE,
    handlers,
    retryDelaysMs: STREAM_RETRY_DELAYS_MS,
    retryForever: true,
    singleActiveConsumer: true,
  })
}
