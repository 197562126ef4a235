import type { EventBus } from '@parley/common/events'
import { consumeOnce } from '@parley/common/postgres'
import type { CloudEvent, EventType } from '@parley/contracts'
import type { Db } from './db'
import { EMAIL_QUEUE, type MailService } from './modules/mail/service'
import { INBOX_QUEUE, type NotificationService } from './modules/notifications/service'
import type { UserDirectory } from './modules/users/service'

export const USERS_QUEUE = 'notification.users'

function isType<T extends EventType>(event: CloudEvent, type: T): event is CloudEvent<T> {
  return event.type === type
}

export type Consumers = {
  db: Db
  directory: UserDirectory
  inbox: NotificationService
  mail: MailService
}

/**
 * Three queues, so one slow or failing dependency holds back nothing else: an SMTP outage
 * delays emails only, never in-app notifications or the users projection.
 */
export async function subscribeConsumers(
  bus: EventBus,
  { db, directory, inbox, mail }: Consumers,
  retryDelaysMs: readonly number[],
): Promise<void> {
  await bus.subscribe({
    queue: USERS_QUEUE,
    types: ['user.registered', 'user.profile_updated'],
    retryDelaysMs,
    handler: async (event) => {
      await consumeOnce(db, USERS_QUEUE, event.id, async (tx) => {
        if (isType(event, 'user.registered')) await directory.applyRegistered(tx, event.data)
        else if (isType(event, 'user.profile_updated')) await directory.applyProfileUpdated(tx, event.data)
      })
    },
  })
  await bus.subscribe({
    queue: INBOX_QUEUE,
    types: ['message.sent', 'conversation.created'],
    retryDelaysMs,
    handler: async (event) => {
      if (isType(event, 'message.sent')) await inbox.onMessageSent(event)
      else if (isType(event, 'conversation.created')) await inbox.onConversationCreated(event)
    },
  })
  await bus.subscribe({
    queue: EMAIL_QUEUE,
    types: ['user.registered', 'user.email_verification_requested', 'message.sent'],
    retryDelaysMs,
    handler: async (event) => {
      if (isType(event, 'user.registered')) await mail.onUserRegistered(event)
      else if (isType(event, 'user.email_verification_requested')) await mail.onVerificationRequested(event)
      else if (isType(event, 'message.sent')) await mail.onMessageSent(event)
    },
  })
}
