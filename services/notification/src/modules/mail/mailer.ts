import type { Logger } from '@parley/common'
import { createTransport } from 'nodemailer'
import type { RenderedMail } from './templates'

export type OutgoingMail = RenderedMail & {
  to: { address: string; name: string }
  /** Stable per (event, recipient): a resend after a crash carries the same Message-ID, so clients can fold it. */
  messageId: string
}

export type MailerOptions = {
  url: string
  maxConnections: number
  from: string
  replyTo?: string | undefined
}

/** The relay refused this recipient or message for good (5xx to RCPT TO / DATA); resending cannot help. */
export type SendOutcome = 'sent' | 'rejected'

type SmtpError = Error & { permanent?: boolean; command?: string; responseCode?: number }

/**
 * Sends mail over a pooled SMTP transport. Transient failures (relay down, 4xx, timeouts,
 * authentication) throw so the event is retried; a permanent rejection of the recipient
 * or message is returned as `rejected`.
 */
export class Mailer {
  private readonly transport
  readonly domain: string

  constructor(
    private readonly options: MailerOptions,
    private readonly logger: Logger,
  ) {
    this.transport = createTransport({
      url: options.url,
      pool: true,
      maxConnections: options.maxConnections,
      connectionTimeout: 10_000,
      greetingTimeout: 10_000,
      socketTimeout: 30_000,
    })
    this.domain = /@([^>\s]+)/.exec(options.from)?.[1] ?? 'parley.localhost'
  }

  async send(mail: OutgoingMail): Promise<SendOutcome> {
    try {
      await this.transport.sendMail({
        from: this.options.from,
        ...(this.options.replyTo ? { replyTo: this.options.replyTo } : {}),
        to: { address: mail.to.address, name: mail.to.name },
        subject: mail.subject,
        text: mail.text,
        html: mail.html,
        messageId: mail.messageId,
        headers: { 'Auto-Submitted': 'auto-generated', 'X-Parley-Template': mail.template },
      })
      return 'sent'
    } catch (error) {
      const smtp = error as SmtpError
      if (smtp.permanent === true && (smtp.command === 'RCPT TO' || smtp.command === 'DATA')) {
        this.logger.warn(
          { template: mail.template, responseCode: smtp.responseCode, err: smtp.message },
          'mail permanently rejected by the relay',
        )
        return 'rejected'
      }
      throw error
    }
  }

  close(): void {
    this.transport.close()
  }
}
