import { t } from 'elysia'
import { Id } from '../conversations/model'

/** Body length limit, in characters (code points) after trimming. */
export const MAX_BODY_LENGTH = 4000

export const SendMessageBody = t.Object({
  body: t.String({
    // The precise limit (1–4000 characters after trim) is checked by the service.
    maxLength: 4 * MAX_BODY_LENGTH,
    description: `1–${MAX_BODY_LENGTH} characters after trimming`,
  }),
  clientMessageId: t.Optional(
    t.String({
      minLength: 1,
      maxLength: 128,
      pattern: '^[\\x21-\\x7E]+$',
      description: 'Idempotency key chosen by the client: resending it returns the original message (200)',
    }),
  ),
})
export type SendMessageBody = typeof SendMessageBody.static

export const MessagePageQuery = t.Object({
  limit: t.Optional(t.Integer({ minimum: 1, maximum: 100, default: 50 })),
  after: t.Optional(Id('Return the messages right after this message id (oldest first)')),
  before: t.Optional(Id('Return the messages right before this message id')),
})
export type MessagePageQuery = typeof MessagePageQuery.static

export const Message = t.Object({
  id: t.String({ description: 'UUIDv7: sorts in send order' }),
  conversationId: t.String(),
  senderId: t.String(),
  body: t.String(),
  clientMessageId: t.Union([t.String(), t.Null()]),
  createdAt: t.String({ format: 'date-time' }),
})
export type Message = typeof Message.static

export const MessagePage = t.Object({
  items: t.Array(Message, { description: 'Always oldest first' }),
  nextCursor: t.Union([t.String(), t.Null()], {
    description:
      'Continue in the same direction: pass as `before` (latest or `before` pages) or as `after` (`after` pages); null at that end',
  }),
})
export type MessagePage = typeof MessagePage.static

export const ReadBody = t.Object({ messageId: Id('The newest message the caller has read') })

export const ReadReceipt = t.Object({
  conversationId: t.String(),
  lastReadMessageId: t.String({ description: 'Never moves backwards' }),
  unreadCount: t.Integer({ minimum: 0 }),
})
export type ReadReceipt = typeof ReadReceipt.static
