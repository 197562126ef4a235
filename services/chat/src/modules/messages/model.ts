import { t } from 'elysia'
import { MAX_ATTACHMENTS_PER_MESSAGE, MessageAttachment } from '../attachments/model'
import { Id, Timestamp, UNREAD_COUNT_CAP } from '../conversations/model'
import { Reactions } from '../reactions/model'

export const MessageParams = t.Object({ id: Id('Conversation id'), messageId: Id('Message id') })

/** Body length limit, in characters (code points) after trimming. */
export const MAX_BODY_LENGTH = 4000

/**
 * What `String.prototype.trim` removes (ECMAScript WhiteSpace and LineTerminator), spelled out:
 * `\s` means a slightly different set in other regex dialects (Python's, schemathesis').
 */
const TRIMMED = '\\t\\n\\v\\f\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff'

/** No NUL: the message store cannot keep it (FerretDB's PostgreSQL backend refuses U+0000). */
const NO_NUL = '^[^\\u0000]*$'

const Body = t.String({
  // Not blank and no NUL, written so that no input backtracks: leading whitespace, one other
  // character, anything after. The limit (at most 4000 characters after trimming) is the service's.
  pattern: `^[${TRIMMED}]*[^${TRIMMED}\\u0000][^\\u0000]*$`,
  maxLength: 4 * MAX_BODY_LENGTH,
  description: `1–${MAX_BODY_LENGTH} characters after trimming, no U+0000 (422 naming \`body.body\` otherwise)`,
})

export const EditMessageBody = t.Object({ body: Body })
export type EditMessageBody = typeof EditMessageBody.static

/** The most users one message may mention. */
export const MAX_MENTIONS = 50

export const SendMessageBody = t.Object({
  body: t.Optional(
    t.String({
      maxLength: 4 * MAX_BODY_LENGTH,
      pattern: NO_NUL,
      description: `Up to ${MAX_BODY_LENGTH} characters after trimming; may be empty or left out when the message has attachments (422 naming \`body.body\` otherwise)`,
    }),
  ),
  attachmentIds: t.Optional(
    t.Array(Id('An attachment of the sender (POST /attachments), uploaded and not yet attached'), {
      maxItems: MAX_ATTACHMENTS_PER_MESSAGE,
      description: `Up to ${MAX_ATTACHMENTS_PER_MESSAGE} attachments, in display order. Each upload is checked (size and type) if it was not yet: 422 naming \`body.attachmentIds.<index>\` for one that is not the sender's, not uploaded, refused (then removed) or already attached; 503 while the object store is unavailable (nothing is written)`,
    }),
  ),
  clientMessageId: t.Optional(
    t.String({
      minLength: 1,
      maxLength: 128,
      pattern: '^[\\x21-\\x7E]+$',
      description: 'Idempotency key chosen by the client: resending it returns the original message (200)',
    }),
  ),
  replyTo: t.Optional(
    Id(
      'Reply to this message of the same conversation (422 naming `body.replyTo` otherwise). Threads are one level deep: a reply to a reply joins its thread',
    ),
  ),
  mentions: t.Optional(
    t.Array(Id('A participant of the conversation'), {
      maxItems: MAX_MENTIONS,
      description:
        'User ids the message mentions, each a participant (422 naming `body.mentions.<index>` of the others); repeats count once. Rendering `@name` is left to clients. A mentioned user is notified (in-app `mention`, and by email when offline) even when they muted the conversation',
    }),
  ),
})
export type SendMessageBody = typeof SendMessageBody.static

/**
 * Opaque to clients. Today the decimal seq of the message at the edge; a message id (the format
 * of the previous version) is still accepted and stands for that message's seq.
 */
const Cursor = (description: string) =>
  t.String({
    pattern: '^(?:0|[1-9][0-9]{0,14}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$',
    description: `${description}. Opaque: a \`nextCursor\` (a message id is accepted too)`,
  })

const PageLimit = t.Integer({
  minimum: 1,
  maximum: 100,
  default: 50,
  description: 'Messages per page, 1–100 (default 50)',
})

export const RepliesQuery = t.Object({
  limit: t.Optional(PageLimit),
  after: t.Optional(
    t.String({
      pattern: '^(?:0|[1-9][0-9]{0,14})$',
      description: 'Opaque: the `nextCursor` of the previous page (replies right after it, oldest first)',
    }),
  ),
})
export type RepliesQuery = typeof RepliesQuery.static

export const Thread = t.Object(
  {
    replyCount: t.Integer({
      minimum: 1,
      description: 'Replies sent to the thread (a deleted reply still counts)',
    }),
    lastReplyAt: Timestamp('When the newest reply was sent'),
    recentReplierIds: t.Array(t.String(), {
      maxItems: 3,
      description: 'The most recent distinct repliers, newest first',
    }),
  },
  { description: 'The replies to this message in short (read them with GET …/replies)' },
)

export const MessagePageQuery = t.Object({
  limit: t.Optional(PageLimit),
  after: t.Optional(
    Cursor('Return the messages right after this position (oldest first); not together with `before` (422)'),
  ),
  before: t.Optional(
    Cursor(
      'Return the messages right before this position; not together with `after` (422 naming `query.before`)',
    ),
  ),
})
export type MessagePageQuery = typeof MessagePageQuery.static

export const Message = t.Object(
  {
    id: t.String({ description: 'UUIDv7' }),
    conversationId: t.String({ description: 'The conversation it was sent in' }),
    seq: t.Integer({
      minimum: 1,
      description:
        'Position in the conversation: 1, 2, 3… in commit order, never reused; a message with a higher seq is never visible before one with a lower seq',
    }),
    senderId: t.String({ description: 'User id of its author' }),
    body: t.String({ description: 'Empty once the message is deleted' }),
    clientMessageId: t.Union([t.String(), t.Null()], {
      description: "The sender's idempotency key, as sent; null when none was given",
    }),
    createdAt: Timestamp('When it was sent; `seq`, not this, gives the order'),
    editedAt: t.Union([t.String({ format: 'date-time' }), t.Null()], {
      description: 'When its author last changed the body; null if never',
    }),
    deletedAt: t.Union([t.String({ format: 'date-time' }), t.Null()], {
      description: 'Set on a tombstone: the seq stays, body and reactions are gone',
    }),
    reactions: Reactions,
    replyTo: t.Union([t.String(), t.Null()], {
      description: "The thread's first message when this is a reply",
    }),
    thread: t.Union([Thread, t.Null()], { description: 'Null until someone replies' }),
    mentions: t.Array(t.String(), { description: 'The participants the sender mentioned' }),
    attachments: t.Array(MessageAttachment, {
      description: 'Its files with presigned downloads, issued to participants only; empty once deleted',
    }),
  },
  { description: 'A message as participants see it' },
)
export type Message = typeof Message.static

export const MessagePage = t.Object({
  items: t.Array(Message, { description: 'Always oldest first (ascending seq)' }),
  nextCursor: t.Union([t.String(), t.Null()], {
    description:
      'Opaque. Continue in the same direction: pass as `before` (latest or `before` pages) or as `after` (`after` pages); null at that end',
  }),
})
export type MessagePage = typeof MessagePage.static

export const ReadBody = t.Object({ messageId: Id('The newest message the caller has read') })

export const ReadReceipt = t.Object({
  conversationId: t.String({ description: 'The conversation whose read marker this is' }),
  lastReadMessageId: t.String({ description: 'Never moves backwards' }),
  lastReadSeq: t.Integer({ minimum: 1, description: 'Sequence number of that message' }),
  unreadCount: t.Integer({
    minimum: 0,
    description: `Messages from others after the marker, counted as Conversation.unreadCount (up to ${UNREAD_COUNT_CAP})`,
  }),
})
export type ReadReceipt = typeof ReadReceipt.static
