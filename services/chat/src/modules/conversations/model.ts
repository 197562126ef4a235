import { t } from 'elysia'

export const MAX_PARTICIPANTS = 256
export const MAX_TITLE_LENGTH = 120
/** unreadCount counts at most this many messages: the badge shows "99+" style from here. */
export const UNREAD_COUNT_CAP = 100

const LOWERCASE_UUID = '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'

/** Ids are lowercase UUIDs; anything else (objects, `$`-operators, other strings) fails validation. */
export const Id = (description: string) => t.String({ format: 'uuid', pattern: LOWERCASE_UUID, description })

/** A point in time as the API writes it: ISO 8601 in UTC with milliseconds (`Date.toISOString`). */
export const Timestamp = (description: string) =>
  t.String({ format: 'date-time', description: `${description} (ISO 8601, UTC)` })

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
  userIds: t.Array(Id('User id'), {
    minItems: 1,
    maxItems: MAX_PARTICIPANTS,
    description: `Known users to add as members (1–${MAX_PARTICIPANTS} ids); ids already participating are ignored`,
  }),
})

/** Elysia's `t` (not the contracts' PageQuery): only its numbers are coerced from the query string. */
export const ConversationListQuery = t.Object({
  limit: t.Optional(
    t.Integer({
      minimum: 1,
      maximum: 100,
      default: 20,
      description: 'Conversations per page, 1–100 (default 20)',
    }),
  ),
  cursor: t.Optional(
    t.String({
      maxLength: 512,
      pattern: '^[A-Za-z0-9_-]+$',
      description: 'Opaque: `nextCursor` of the previous page',
    }),
  ),
})

export const Participant = t.Object({
  userId: Id('User id'),
  displayName: t.Union([t.String(), t.Null()], { description: 'Null until the user is known to chat' }),
  lastReadMessageId: t.Union([t.String(), t.Null()], {
    description: 'The newest message this participant marked read (POST …/read); null until they mark one',
  }),
  lastReadSeq: t.Union([t.Integer({ minimum: 1 }), t.Null()], {
    description: 'Sequence number of that message (see Message.seq)',
  }),
  role: RoleName,
})

export const LastMessage = t.Object({
  id: t.String({ description: 'Id of the newest message' }),
  seq: t.Integer({ minimum: 1, description: 'The highest sequence number of the conversation' }),
  senderId: t.String({ description: 'User id of its author' }),
  preview: t.String({
    maxLength: 200,
    description:
      'Its body cut to 200 UTF-16 units (ending in … when cut), or `📎 <filename>` for attachments only; follows edits; empty once deleted',
  }),
  createdAt: Timestamp('When it was sent'),
  deleted: t.Boolean({ description: 'The message was deleted' }),
})

export const Conversation = t.Object({
  id: t.String({ description: 'Conversation id (UUIDv7)' }),
  title: t.Union([t.String(), t.Null()], {
    description: `Shown name, at most ${MAX_TITLE_LENGTH} characters; null when untitled (clients then show the participants)`,
  }),
  createdBy: t.String({ description: 'User id of the participant who created it' }),
  direct: t.Boolean({ description: 'A 1:1 conversation (it cannot gain participants)' }),
  muted: t.Boolean({
    description: 'The caller muted it: no email or in-app notification for it (unread counts still move)',
  }),
  participants: t.Array(Participant, {
    description: `Everyone in it now (at most ${MAX_PARTICIPANTS}), the caller included; those who left are gone`,
  }),
  lastMessage: t.Union([LastMessage, t.Null()], { description: 'The newest message; null before the first' }),
  unreadCount: t.Integer({
    minimum: 0,
    maximum: UNREAD_COUNT_CAP,
    description: `Messages from others after the caller's read marker, counted up to ${UNREAD_COUNT_CAP} (${UNREAD_COUNT_CAP} means ${UNREAD_COUNT_CAP} or more)`,
  }),
  createdAt: Timestamp('When it was created'),
  updatedAt: Timestamp('Last activity; the list is ordered by it'),
})
export type Conversation = typeof Conversation.static

export const ConversationPage = t.Object({
  items: t.Array(Conversation, { description: 'Most recent activity (`updatedAt`) first' }),
  nextCursor: t.Union([t.String(), t.Null()], { description: 'Opaque; pass as `cursor` for the next page' }),
})
export type ConversationPage = typeof ConversationPage.static
