import type { EventBus } from '@parley/common/events'
import { INBOX_QUEUE, type NotificationService } from './service'

/** In-app notifications for new messages and conversations, and what deletions take out of them (each event applied once). */
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
      'message.deleted': (event) => inbox.onMessageDeleted(event),
      'conversation.created': (event) => inbox.onConversationCreated(event),
    },
  })
}
