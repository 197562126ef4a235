import type { Logger, Metrics } from '@parley/common'
import type { CloudEvent } from '@parley/contracts'
import type { UserDirectory } from '../users/service'
import type { EmailDeliveries } from './deliveries'
import type { Mailer, OutgoingMail } from './mailer'
import type { PresenceReader } from './presence'
import {
  mentionMail,
  newMessageMail,
  type RenderedMail,
  type TemplateName,
  verificationCodeMail,
  welcomeMail,
} from './templates'
import type { MessageEmailThrottle, RecipientEmailCap } from './throttle'

/** Consumer name of the queue of bulk email (welcome, new message). */
export const EMAIL_QUEUE = 'notification.email'
/**
 * Consumer name of the queue of transactional email (verification codes): a queue, consumer and
 * SMTP pool of its own, so a flood of bulk email never delays a code until it expires.
 */
export const TRANSACTIONAL_EMAIL_QUEUE = 'notification.email.transactional'

/** Templates sent through the transactional SMTP pool; every other one goes through the bulk pool. */
const TRANSACTIONAL_TEMPLATES: ReadonlySet<TemplateName> = new Set(['verification_code'])

/**
 * Why an email was not sent: `unverified`: the address is not verified (only the verification
 * code goes to those); `hourly_cap`: the recipient had their new-message emails for the hour;
 * `muted`: the recipient muted the conversation.
 */
type SkipReason = 'recipient_online' | 'throttled' | 'expired' | 'unverified' | 'hourly_cap' | 'muted'
type EmailOutcome = 'sent' | 'failed' | 'rejected' | SkipReason

type Prepared =
  | { skip: SkipReason }
  | { mail: RenderedMail; to: { address: string; name: string }; onSendFailure?: () => Promise<void> }

/** One recipient's email of an event; `prepare` decides (and may throw to retry the event later). */
type Job = { recipientId: string; prepare: () => Promise<Prepared> }

export class DeliveryIncompleteError extends Error {
  override name = 'DeliveryIncompleteError'
}

export type MailServiceDeps = {
  /** Two pools to the relay: bulk email cannot take the connections codes need. */
  mailers: { bulk: Mailer; transactional: Mailer }
  deliveries: EmailDeliveries
  directory: UserDirectory
  presence: PresenceReader
  throttle: MessageEmailThrottle
  cap: RecipientEmailCap
  metrics: Metrics
  logger: Logger
}

/**
 * Turns events into emails. Each (event, recipient) is recorded in the delivery ledger, so
 * a redelivered event or a retry after a partial failure mails only who was not mailed yet.
 * Any failure throws, and the event bus retries the event with backoff, then dead-letters it.
 */
export class MailService {
  private readonly emails
  private readonly log: Logger

  constructor(private readonly deps: MailServiceDeps) {
    this.emails = deps.metrics.counter('notifications_emails_sent_total', 'Emails by template and outcome', [
      'template',
      'outcome',
    ])
    this.log = deps.logger.child({ component: 'mail' })
  }

  /**
   * The welcome email goes to verified addresses only: at registration if the address is
   * verified already, else when it is (onEmailVerified). Registering someone else's address
   * mails them the code, nothing more.
   */
  async onUserRegistered(event: CloudEvent<'user.registered'>): Promise<void> {
    const { userId, email, displayName, emailVerified } = event.data
    if (!emailVerified) return
    await this.deliver(event.id, 'welcome', [
      {
        recipientId: userId,
        prepare: async () => ({ mail: welcomeMail(displayName), to: { address: email, name: displayName } }),
      },
    ])
  }

  async onEmailVerified(event: CloudEvent<'user.email_verified'>): Promise<void> {
    const { userId, email } = event.data
    await this.deliver(event.id, 'welcome', [
      {
        recipientId: userId,
        prepare: async () => {
          const user = (await this.deps.directory.find([userId])).get(userId)
          // The name comes from user.registered, on the projection's own queue: wait for it.
          if (!user) throw new DeliveryIncompleteError(`user ${userId} is not known yet`)
          return { mail: welcomeMail(user.displayName), to: { address: email, name: user.displayName } }
        },
      },
    ])
  }

  async onVerificationRequested(event: CloudEvent<'user.email_verification_requested'>): Promise<void> {
    const { userId, email, displayName, code, expiresAt } = event.data
    await this.deliver(event.id, 'verification_code', [
      {
        recipientId: userId,
        prepare: async () => {
          const validMs = Date.parse(expiresAt) - Date.now()
          // A code that expired while the event waited (outage, retries) would only mislead.
          if (validMs <= 0) return { skip: 'expired' }
          const validMinutes = Math.max(1, Math.floor(validMs / 60_000))
          return {
            mail: verificationCodeMail(displayName, code, validMinutes),
            to: { address: email, name: displayName },
          }
        },
      },
    ])
  }

  /**
   * Emails recipients who are offline and verified, at most once per recipient and conversation
   * per window and at most the cap per recipient per hour across conversations. A mentioned
   * recipient gets a `mention` email instead: outside the per-conversation window (neither
   * checked nor taken) and even when muted, but counted against the same hourly cap.
   */
  async onMessageSent(event: CloudEvent<'message.sent'>): Promise<void> {
    const { senderId, conversationId, preview } = event.data
    const recipients = [...new Set(event.data.recipientIds)].filter((userId) => userId !== senderId)
    if (recipients.length === 0) return
    const muted = new Set(event.data.mutedUserIds)
    const mentioned = new Set(event.data.mentionedUserIds)
    const { directory, presence, throttle, cap } = this.deps
    const [people, online] = await Promise.all([
      directory.find([...recipients, senderId]),
      presence.onlineAmong(recipients),
    ])
    const senderName = people.get(senderId)?.displayName ?? 'Someone'
    const reachable = (recipientId: string): { skip: SkipReason } | { address: string; name: string } => {
      if (online.has(recipientId)) return { skip: 'recipient_online' }
      const recipient = people.get(recipientId)
      // The users projection may lag behind chat: retry until it catches up.
      if (!recipient?.email) throw new DeliveryIncompleteError(`recipient ${recipientId} is not known yet`)
      if (!recipient.verified) return { skip: 'unverified' }
      return { address: recipient.email, name: recipient.displayName }
    }
    const mentionJobs = recipients
      .filter((recipientId) => mentioned.has(recipientId))
      .map((recipientId) => ({
        recipientId,
        prepare: async (): Promise<Prepared> => {
          const to = reachable(recipientId)
          if ('skip' in to) return to
          if (!(await cap.acquire(recipientId, event.id))) return { skip: 'hourly_cap' }
          return {
            mail: mentionMail(to.name, senderName, preview),
            to,
            onSendFailure: () => cap.release(recipientId, event.id),
          }
        },
      }))
    const messageJobs = recipients
      .filter((recipientId) => !mentioned.has(recipientId))
      .map((recipientId) => ({
        recipientId,
        prepare: async (): Promise<Prepared> => {
          if (muted.has(recipientId)) return { skip: 'muted' }
          const to = reachable(recipientId)
          if ('skip' in to) return to
          if (!(await throttle.acquire(recipientId, conversationId, event.id))) return { skip: 'throttled' }
          if (!(await cap.acquire(recipientId, event.id))) {
            // Nothing was sent about this conversation: its next message may mail once the hour frees up.
            await throttle.release(recipientId, conversationId, event.id)
            return { skip: 'hourly_cap' }
          }
          return {
            mail: newMessageMail(to.name, senderName, preview),
            to,
            onSendFailure: async () => {
              await throttle.release(recipientId, conversationId, event.id)
              await cap.release(recipientId, event.id)
            },
          }
        },
      }))
    // Both run even if one fails; the event is retried for whichever did not finish (the ledger keeps the rest).
    const results = await Promise.allSettled([
      this.deliver(event.id, 'mention', mentionJobs),
      this.deliver(event.id, 'new_message', messageJobs),
    ])
    for (const result of results) if (result.status === 'rejected') throw result.reason
  }

  private async deliver(eventId: string, template: TemplateName, jobs: readonly Job[]): Promise<void> {
    const claims = await this.deps.deliveries.claim(
      eventId,
      template,
      jobs.map((job) => job.recipientId),
    )
    const owned = jobs.filter((job) => claims.get(job.recipientId) === 'owned')
    const results = await Promise.allSettled(owned.map((job) => this.deliverOne(eventId, template, job)))
    const failures = results.filter((result) => result.status === 'rejected')
    if (failures.length > 0) {
      const first = failures[0]?.reason
      throw new DeliveryIncompleteError(
        `${failures.length} of ${owned.length} ${template} emails not delivered: ${first instanceof Error ? first.message : String(first)}`,
      )
    }
    const busy = jobs.filter((job) => claims.get(job.recipientId) === 'busy').length
    // A concurrent delivery of the same event holds these; come back once it has finished.
    if (busy > 0)
      throw new DeliveryIncompleteError(`${busy} ${template} emails are being sent by another attempt`)
  }

  private async deliverOne(eventId: string, template: TemplateName, job: Job): Promise<void> {
    const { deliveries, mailers } = this.deps
    const mailer = TRANSACTIONAL_TEMPLATES.has(template) ? mailers.transactional : mailers.bulk
    const { recipientId } = job
    let prepared: Prepared
    try {
      prepared = await job.prepare()
    } catch (error) {
      await this.releaseQuietly(eventId, recipientId)
      throw error
    }
    if ('skip' in prepared) {
      await deliveries.complete(eventId, recipientId, 'skipped', prepared.skip)
      this.count(template, prepared.skip)
      return
    }
    const mail: OutgoingMail = {
      ...prepared.mail,
      to: prepared.to,
      messageId: `<${eventId}.${recipientId}@${mailer.domain}>`,
    }
    let outcome: 'sent' | 'rejected'
    try {
      outcome = await mailer.send(mail)
    } catch (error) {
      this.count(template, 'failed')
      await prepared
        .onSendFailure?.()
        .catch((releaseError: unknown) =>
          this.log.warn({ err: releaseError, eventId }, 'could not release the email throttle'),
        )
      await this.releaseQuietly(eventId, recipientId)
      throw error
    }
    await deliveries.complete(eventId, recipientId, outcome, outcome === 'rejected' ? 'relay rejected' : null)
    this.count(template, outcome)
    this.log.debug({ eventId, recipientId, template, outcome }, 'email handled')
  }

  /** Best effort: if it fails too, the claim lapses on its own. */
  private async releaseQuietly(eventId: string, recipientId: string): Promise<void> {
    await this.deps.deliveries
      .release(eventId, recipientId)
      .catch((error: unknown) => this.log.warn({ err: error, eventId }, 'could not release the email claim'))
  }

  private count(template: TemplateName, outcome: EmailOutcome): void {
    this.emails.inc({ template, outcome })
  }
}
