import type { EventBus } from '@parley/common/events'
import { EMAIL_QUEUE, type MailService, TRANSACTIONAL_EMAIL_QUEUE } from './service'

/**
 * Bulk email (welcome once verified, new message to offline verified recipients) and, on a queue
 * of its own, transactional email (verification codes): however deep the bulk queue gets, a code
 * is consumed at once.
 */
export async function subscribeMail(
  bus: EventBus,
  mail: MailService,
  retryDelaysMs: readonly number[],
): Promise<void> {
  await bus.subscribe({
    queue: TRANSACTIONAL_EMAIL_QUEUE,
    retryDelaysMs,
    handlers: {
      'user.email_verification_requested': (event) => mail.onVerificationRequested(event),
    },
  })
  await bus.subscribe({
    queue: EMAIL_QUEUE,
    retryDelaysMs,
    handlers: {
      'user.registered': (event) => mail.onUserRegistered(event),
      'user.email_verified': (event) => mail.onEmailVerified(event),
      'message.sent': (event) => mail.onMessageSent(event),
    },
  })
}
