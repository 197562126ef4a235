import { Page } from '@parley/contracts'
import { t } from 'elysia'

const Timestamp = t.String({ format: 'date-time' })
const ConversationId = t.String({ description: 'The conversation (its id in the chat API)' })

export const NotificationType = t.Union(
  [t.Literal('message.received'), t.Literal('mention'), t.Literal('conversation.added')],
  {
    description:
      '`message.received`: someone wrote in a conversation you are in; `mention`: someone mentioned you in a message (instead of `message.received` for it, also when you muted the conversation; payload as for `message.received`); `conversation.added`: someone started a conversation with you',
  },
)
export type NotificationType = typeof NotificationType.static

export const MessageReceivedPayload = t.Object(
  {
    conversationId: ConversationId,
    messageId: t.String({ description: 'The message (its id in the chat API)' }),
    senderId: t.String({ format: 'uuid', description: 'The author' }),
    senderName: t.Union([t.String(), t.Null()], {
      description: 'Display name of the sender when the notification was created, if known',
    }),
    preview: t.String({
      description:
        'Start of the message body, as sent (plain text, not escaped); empty once the message is deleted',
    }),
    sentAt: t.String({ format: 'date-time', description: 'When the message was sent (ISO 8601, UTC)' }),
    deleted: t.Optional(t.Boolean({ description: 'True once the message was deleted' })),
  },
  { title: 'MessageReceivedPayload' },
)
export type MessageReceivedPayload = typeof MessageReceivedPayload.static

export const ConversationAddedPayload = t.Object(
  {
    conversationId: ConversationId,
    title: t.Union([t.String(), t.Null()], {
      description: 'The conversation’s title at creation; null when untitled',
    }),
    createdBy: t.String({ format: 'uuid', description: 'The user who started the conversation' }),
    createdByName: t.Union([t.String(), t.Null()], {
      description: 'Display name of the creator when the notification was created, if known',
    }),
    participantCount: t.Integer({
      minimum: 1,
      description: 'How many participants it started with, the creator included',
    }),
  },
  { title: 'ConversationAddedPayload' },
)
export type ConversationAddedPayload = typeof ConversationAddedPayload.static

export const Notification = t.Object({
  id: t.String({ format: 'uuid', description: 'The notification id (for `POST /notifications/{id}/read`)' }),
  type: NotificationType,
  payload: t.Union([MessageReceivedPayload, ConversationAddedPayload], {
    description: 'Shape depends on `type`',
  }),
  createdAt: t.String({ format: 'date-time', description: 'When it was created (ISO 8601, UTC)' }),
  readAt: t.Union([Timestamp, t.Null()], {
    description: 'When it was first marked read (ISO 8601, UTC); null while unread',
  }),
})
export type Notification = typeof Notification.static

export const NotificationPage = Page(Notification)
export type NotificationPage = typeof NotificationPage.static

export const ListQuery = t.Object({
  unread: t.Optional(
    t.Boolean({ description: '`true`: only unread notifications; `false`: only read ones; absent: all' }),
  ),
  // Same bounds as the contracts' PageQuery, written with Elysia's `t` so query strings are coerced.
  limit: t.Optional(t.Integer({ minimum: 1, maximum: 100, default: 20, description: 'Page size, 1–100' })),
  cursor: t.Optional(
    t.String({
      maxLength: 512,
      pattern: '^[A-Za-z0-9_-]+$',
      description: 'Opaque `nextCursor` of the previous page',
    }),
  ),
})
export type ListQuery = typeof ListQuery.static

export const NotificationParams = t.Object({
  id: t.String({ format: 'uuid', description: 'The notification id' }),
})

export const MarkedRead = t.Object({
  markedRead: t.Integer({ minimum: 0, description: 'How many unread notifications were marked read' }),
})

/** Unread counts stop at this value: a badge shows "999+" and the count stays cheap. */
export const UNREAD_COUNT_CAP = 999

export const UnreadCount = t.Object({
  unread: t.Integer({
    minimum: 0,
    maximum: UNREAD_COUNT_CAP,
    description: `Unread notifications, counted up to ${UNREAD_COUNT_CAP}`,
  }),
  capped: t.Boolean({
    description: `true when there are more than ${UNREAD_COUNT_CAP} unread notifications`,
  }),
})
export type UnreadCount = typeof UnreadCount.static
