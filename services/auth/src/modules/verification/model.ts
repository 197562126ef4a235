// Type.Integer, not Elysia's t.Integer: that one also accepts numeric strings and documents them.
import { Type } from '@sinclair/typebox'
import { t } from 'elysia'

export const VerificationRequested = t.Object({
  expiresAt: t.String({ format: 'date-time', description: 'When the mailed code stops working' }),
  resendAfterSeconds: Type.Integer({ description: 'How long until another code may be requested' }),
})
export type VerificationRequested = typeof VerificationRequested.static

export const ConfirmBody = t.Object({
  code: t.String({ pattern: '^[0-9]{6}$', description: 'The 6-digit code from the mail' }),
})

export const Verified = t.Object({
  emailVerified: t.Literal(true, { description: 'Always true: the address is now verified' }),
})
