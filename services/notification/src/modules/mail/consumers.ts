import type { EventBus } from '@parley/common/events'
import { EMAIL_QUEUE, type MailService } from './service'

/** Welcome, verification-code and new-message emails (the last only to offline recipients). */
export function subscribeMail(
  bus: EventBus,
  mail: MailService,
  retryDelaysMs: readonly number[],
): Promise<void> {
  return bus.subscribe({
    queue: EMAIL_QUEUE,
    retryDelaysMs,
    handlers: {
      'user.registered': (event) => mail.onUserRegistered(event),
      'user.email_verification_requested': (event) => mail.onVerificationRequested(event),
      'message.sent': (event) => mail.onMessageSent(event),
    },
  })
}
