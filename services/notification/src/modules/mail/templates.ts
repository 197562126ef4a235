import { html, type SafeHtml, singleLine } from './html'
import { MESSAGE_EMAIL_WINDOW_MS } from './throttle'

export type TemplateName = 'welcome' | 'verification_code' | 'new_message' | 'mention'

export type RenderedMail = { template: TemplateName; subject: string; text: string; html: string }

const PRODUCT = 'Parley'

function layout(subject: string, content: SafeHtml, footer: string): string {
  return html`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>${subject}</title></head>
<body style="margin:0;padding:24px;background:#f4f5f7;font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;color:#1f2933">
<div style="max-width:560px;margin:0 auto;background:#ffffff;border-radius:8px;padding:32px;line-height:1.5">
${content}
<p style="margin-top:32px;color:#7b8794;font-size:12px">${footer}</p>
</div>
</body>
</html>
`.value
}

function rendered(
  template: TemplateName,
  subject: string,
  text: string[],
  content: SafeHtml,
  footer: string,
): RenderedMail {
  const safeSubject = singleLine(subject)
  return {
    template,
    subject: safeSubject,
    text: `${[...text, '', '--', footer].join('\n')}\n`,
    html: layout(safeSubject, content, footer),
  }
}

const ACCOUNT_FOOTER = `You receive this email because an account on ${PRODUCT} uses this address.`

export function welcomeMail(displayName: string): RenderedMail {
  const name = singleLine(displayName)
  return rendered(
    'welcome',
    `Welcome to ${PRODUCT}, ${name}`,
    [
      `Hi ${name},`,
      '',
      `Welcome to ${PRODUCT}! Your account is ready: start a conversation and invite the people you talk to.`,
    ],
    html`<h1 style="font-size:22px;margin:0 0 16px">Welcome to ${PRODUCT}, ${name}</h1>
<p>Hi ${name},</p>
<p>Welcome to ${PRODUCT}! Your account is ready: start a conversation and invite the people you talk to.</p>`,
    ACCOUNT_FOOTER,
  )
}

export function verificationCodeMail(displayName: string, code: string, validMinutes: number): RenderedMail {
  const name = singleLine(displayName)
  const validity = validMinutes === 1 ? '1 minute' : `${validMinutes} minutes`
  return rendered(
    'verification_code',
    `Your ${PRODUCT} verification code`,
    [
      `Hi ${name},`,
      '',
      `Your code to confirm this email address is: ${code}`,
      '',
      `It expires in ${validity}. If you did not ask for it, ignore this email.`,
    ],
    html`<p>Hi ${name},</p>
<p>Your code to confirm this email address is:</p>
<p style="font-size:28px;font-weight:600;letter-spacing:6px;margin:16px 0">${code}</p>
<p>It expires in ${validity}. If you did not ask for it, ignore this email.</p>`,
    ACCOUNT_FOOTER,
  )
}

export function newMessageMail(recipientName: string, senderName: string, preview: string): RenderedMail {
  const name = singleLine(recipientName)
  const sender = singleLine(senderName)
  return rendered(
    'new_message',
    `New message from ${sender} on ${PRODUCT}`,
    [
      `Hi ${name},`,
      '',
      `${sender} sent you a message:`,
      '',
      ...preview.split(/\r?\n/).map((line) => `> ${line}`),
      '',
      `Open ${PRODUCT} to reply.`,
    ],
    html`<p>Hi ${name},</p>
<p><strong>${sender}</strong> sent you a message:</p>
<blockquote style="margin:16px 0;padding:12px 16px;border-left:4px solid #3b82f6;background:#f5f7fa;white-space:pre-wrap">${preview}</blockquote>
<p>Open ${PRODUCT} to reply.</p>`,
    `You get at most one email per conversation every ${MESSAGE_EMAIL_WINDOW_MS / 60_000} minutes, and none while you are online in ${PRODUCT}.`,
  )
}

export function mentionMail(recipientName: string, senderName: string, preview: string): RenderedMail {
  const name = singleLine(recipientName)
  const sender = singleLine(senderName)
  return rendered(
    'mention',
    `${sender} mentioned you on ${PRODUCT}`,
    [
      `Hi ${name},`,
      '',
      `${sender} mentioned you:`,
      '',
      ...preview.split(/\r?\n/).map((line) => `> ${line}`),
      '',
      `Open ${PRODUCT} to reply.`,
    ],
    html`<p>Hi ${name},</p>
<p><strong>${sender}</strong> mentioned you:</p>
<blockquote style="margin:16px 0;padding:12px 16px;border-left:4px solid #3b82f6;background:#f5f7fa;white-space:pre-wrap">${preview}</blockquote>
<p>Open ${PRODUCT} to reply.</p>`,
    `You get an email for each mention while you are offline in ${PRODUCT}, within your hourly limit of message emails.`,
  )
}
