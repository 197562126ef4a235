import { t } from 'elysia'

export const MAX_PARTICIPANTS = 256
export const MAX_TITLE_LENGTH = 120
/** unreadCount counts at most this many messages: the badge shows "99+" style from here. */
export const UNREAD_COUNT_CAP = 100

const LOWERCASE_UUID = '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'

/** Ids are lowercase UUIDs; anything else (objects, `$`-operators, other strings) fails validation. */
export const Id = (description: string) => t.String({ format: 'uuid', pattern: LOWERCASE_UUID, description })

export const ConversationParams = t.Object({ id: Id('Conversation id') })
export const ParticipantParams = t.Object({ id: Id('Conversation id'), userId: Id('User id') })

const RoleName = t.Union([t.Literal('owner'), t.Literal('admin'), t.Literal('member')], {
  description:
    'owner: everything, and sets roles; admin: renames, adds and removes members, deletes any message; member: sends, reacts, leaves',
})

export const SetRoleBody = t.Object({ role: RoleName })

const Title = t.String({
  maxLength: MAX_TITLE_LENGTH,
  // The store cannot keep U+0000 (FerretDB's PostgreSQL backend).
  pattern: '^[^\\u0000]*$',
  description: 'Trimmed; an empty title is stored as null',
})

export const CreateConversationBody = t.Object({
  title: t.Optional(t.Union([Title, t.Null()])),
  participantIds: t.Array(Id('User id'), {
    minItems: 1,
    maxItems: MAX_PARTICIPANTS,
    description: 'Known users; the caller is always added. With `direct`: exactly the one other user',
  }),
  direct: t.Optional(
    t.Boolean({
      description:
        'A 1:1 conversation: returns the existing one of the pair (200) if there is one, else creates it (201); exactly one per pair, even under concurrency; it never gains participants',
    }),
  ),
})
export type CreateConversationBody = typeof CreateConversationBody.static

export const RenameConversationBody = t.Object({ title: t.Union([Title, t.Null()]) })

export const AddParticipantsBody = t.Object({
  userIds: t.Array(Id('User id'), { minItems: 1, maxItems: MAX_PARTICIPANTS }),
})

/** Elysia's `t` (not the contracts' PageQuery): only its numbers are coerced from the query string. */
export const ConversationListQuery = t.Object({
  limit: t.Optional(t.Integer({ minimum: 1, maximum: 100, default: 20 })),
  cursor: t.Optional(
    t.String({
      maxLength: 512,
      pattern: '^[A-Za-z0-9_-]+$',
      description: 'Opaque: `nextCursor` of the previous page',
    }),
  ),
})

const Timestamp = t.String({ format: 'date-time' })

export const Participant = t.Object({
  userId: Id('User id'),
  displayName: t.Union([t.String(), t.Null()], { description: 'Null until the user is known to chat' }),
  lastReadMessageId: t.Union([t.String(), t.Null()]),
  lastReadSeq: t.Union([t.Integer({ minimum: 1 }), t.Null()], {
    description: 'Sequence number of that message (see Message.seq)',
  }),
  role: RoleName,
})

export const LastMessage = t.Object({
  id: t.String(),
  seq: t.Integer({ minimum: 1, description: 'The highest sequence number of the conversation' }),
  senderId: t.String(),
  preview: t.String({ maxLength: 200, description: 'Follows edits; empty once deleted' }),
  createdAt: Timestamp,
  deleted: t.Boolean({ description: 'The message was deleted' }),
})

export const Conversation = t.Object({
  id: t.String(),
  title: t.Union([t.String(), t.Null()]),
  createdBy: t.String(),
  direct: t.Boolean({ description: 'A 1:1 conversation (it cannot gain participants)' }),
  muted: t.Boolean({
    description: 'The caller muted it: no email or in-app notification for it (unread counts still move)',
  }),
  participants: t.Array(Participant),
  lastMessage: t.Union([LastMessage, t.Null()]),
  unreadCount: t.Integer({
    minimum: 0,
    maximum: UNREAD_COUNT_CAP,
    description: `Messages from others after the caller's read marker, counted up to ${UNREAD_COUNT_CAP} (${UNREAD_COUNT_CAP} means ${UNREAD_COUNT_CAP} or more)`,
  }),
  createdAt: Timestamp,
  updatedAt: t.String({ format: 'date-time', description: 'Last activity; the list is ordered by it' }),
})
export type Conversation = typeof Conversation.static

export const ConversationPage = t.Object({
  items: t.Array(Conversation),
  nextCursor: t.Union([t.String(), t.Null()], { description: 'Opaque; pass as `cursor` for the next page' }),
})
export type ConversationPage = typeof ConversationPage.static
