import type { EventBus } from '@parley/common/events'
import { INBOX_QUEUE, type NotificationService } from './service'

/** In-app notifications for new messages and conversations (the service applies each event once). */
export function subscribeInbox(
  bus: EventBus,
  inbox: NotificationService,
  retryDelaysMs: readonly number[],
): Promise<void> {
  return bus.subscribe({
    queue: INBOX_QUEUE,
    retryDelaysMs,
    handlers: {
      'message.sent': (event) => inbox.onMessageSent(event),
      'conversation.created': (event) => inbox.onConversationCreated(event),
    },
  })
}
