import { type Static, type TSchema, Type as t } from '@sinclair/typebox'

const Uuid = t.String({ format: 'uuid' })
const Timestamp = t.String({ format: 'date-time' })

// Descriptions travel with the schemas into the gateway's OpenAPI document (`GET /api/v1/sync`
// `events[].data`, the WebSocket frames), so they are written for API clients.
function uuid(description: string) {
  return t.String({ format: 'uuid', description })
}
function instant(description: string) {
  return t.String({ format: 'date-time', description: `${description} (ISO 8601, UTC)` })
}

const ConversationId = t.String({ minLength: 1, description: 'The conversation (its id in the chat API)' })
const MessageId = t.String({ minLength: 1, description: 'The message (its id in the chat API)' })
const MessageSeq = t.Integer({
  minimum: 1,
  description: 'The message’s position in its conversation (its `seq` in `message.sent`)',
})
const ConversationTitle = t.Union([t.String({ maxLength: 120 }), t.Null()], {
  description: 'Up to 120 characters; null when untitled',
})
const Email = t.String({ format: 'email', description: 'The account’s email address (lower-cased)' })
const EventDisplayName = t.String({ minLength: 1, maxLength: 64, description: 'The user’s display name' })
/** The event's audience: each of them receives it on their stream. */
const ParticipantIds = t.Array(Uuid, {
  minItems: 1,
  maxItems: 256,
  description: 'Every participant of the conversation after this change (user ids)',
})
const Emoji = t.String({ minLength: 1, maxLength: 64, description: 'The reaction: one RGI emoji' })

/** `data` schema of every event on the bus, keyed by CloudEvents `type` (= routing key). */
export const EventSchemas = {
  'user.registered': t.Object(
    {
      userId: uuid('The new user'),
      email: Email,
      displayName: EventDisplayName,
      emailVerified: t.Boolean({ description: 'Whether the email address is verified already' }),
      roles: t.Array(t.String(), { description: '`user`, and `admin` for administrators' }),
      createdAt: instant('When the account was created'),
    },
    { description: 'An account was created' },
  ),
  'user.email_verification_requested': t.Object(
    {
      userId: uuid('The user verifying their address'),
      email: Email,
      displayName: EventDisplayName,
      // In clear: only the notification service reads it, to mail it.
      code: t.String({ pattern: '^[0-9]{6}$', description: 'The one-time 6-digit code to mail' }),
      expiresAt: instant('When the code stops working'),
    },
    { description: 'A user asked for an email verification code' },
  ),
  'user.email_verified': t.Object(
    {
      userId: uuid('The user'),
      email: Email,
      verifiedAt: instant('When the code was confirmed'),
    },
    { description: 'A user confirmed their email address' },
  ),
  'user.sessions_revoked': t.Object(
    {
      userId: uuid('Whose sessions were revoked'),
      revokedBefore: instant('Access tokens with `iat` strictly before this instant are rejected'),
    },
    { description: 'Every session of a user was revoked' },
  ),
  'user.session_revoked': t.Object(
    {
      userId: uuid('Whose session was revoked'),
      sessionId: uuid(
        'The session family (the access token’s `sid`): its access tokens are rejected from now on',
      ),
      reason: t.Union([t.Literal('logout'), t.Literal('reuse_detected')], {
        description:
          '`logout`: the user ended it; `reuse_detected`: a used refresh token was presented again',
      }),
      revokedAt: instant('When it was revoked'),
    },
    { description: 'One session (login) of a user was revoked' },
  ),
  'user.profile_updated': t.Object(
    {
      userId: uuid('Whose profile changed'),
      displayName: EventDisplayName,
      bio: t.Union([t.String({ maxLength: 280 }), t.Null()], {
        description: 'Up to 280 characters; null when none',
      }),
      avatarUrl: t.Union([t.String({ maxLength: 2048 }), t.Null()], {
        description: 'An https URL; null when none',
      }),
      updatedAt: instant('When it changed'),
    },
    { description: 'A user changed their profile; carries the whole profile after the change' },
  ),
  'conversation.created': t.Object(
    {
      conversationId: ConversationId,
      title: ConversationTitle,
      createdBy: uuid('The user who created it (its first owner)'),
      participantIds: t.Array(Uuid, {
        minItems: 1,
        maxItems: 256,
        description: 'Every participant, the creator included (user ids)',
      }),
      direct: t.Optional(
        t.Boolean({
          description:
            'True for a 1:1 conversation (exactly one per pair; it never gains participants); absent for a group',
        }),
      ),
      createdAt: instant('When it was created'),
    },
    { description: 'A conversation was started; sent to every participant' },
  ),
  'conversation.updated': t.Object(
    {
      conversationId: ConversationId,
      title: ConversationTitle,
      updatedBy: uuid('The owner or admin who renamed it'),
      participantIds: ParticipantIds,
      updatedAt: instant('When it changed'),
    },
    { description: 'A conversation was renamed (its title set or cleared)' },
  ),
  'conversation.participants_added': t.Object(
    {
      conversationId: ConversationId,
      addedBy: uuid('The participant who added them'),
      userIds: t.Array(Uuid, { minItems: 1, maxItems: 256, description: 'The users added by this change' }),
      participantIds: t.Array(Uuid, {
        minItems: 1,
        maxItems: 256,
        description: 'Every participant after it, the added ones included',
      }),
      addedAt: instant('When they were added'),
    },
    { description: 'Users were added to a group conversation' },
  ),
  'conversation.participant_left': t.Object(
    {
      conversationId: ConversationId,
      userId: uuid('The user who left or was removed'),
      participantIds: t.Array(Uuid, {
        maxItems: 256,
        description: 'The participants who remain (possibly none)',
      }),
      removedBy: t.Optional(
        uuid('The owner or admin who removed `userId`; absent when they left themselves'),
      ),
      leftAt: instant('When they left'),
    },
    {
      description: 'A participant left a conversation or was removed; sent to them and to those who remain',
    },
  ),
  'conversation.read': t.Object(
    {
      conversationId: ConversationId,
      userId: uuid('The participant who read'),
      seq: t.Integer({
        minimum: 1,
        description: 'Sequence number of the last message read (its `seq` in `message.sent`)',
      }),
      messageId: t.String({ minLength: 1, description: 'The last message read' }),
      participantIds: ParticipantIds,
      readAt: instant('When the marker moved'),
    },
    { description: 'A participant’s read marker moved forward (read receipts)' },
  ),
  'message.sent': t.Object(
    {
      messageId: MessageId,
      conversationId: ConversationId,
      // Optional only so events staged by a replica of the previous version still validate.
      seq: t.Optional(
        t.Integer({
          minimum: 1,
          description:
            'Position in the conversation (1, 2, 3… in commit order, never reused); absent only on events of the previous version',
        }),
      ),
      senderId: uuid('The author'),
      recipientIds: t.Array(Uuid, { maxItems: 256, description: 'Every participant except the sender' }),
      mutedUserIds: t.Optional(
        t.Array(Uuid, {
          maxItems: 256,
          description:
            'The recipients who muted the conversation when it was sent: no email or in-app notification for them (their unread counts still move). Absent on events of the previous version',
        }),
      ),
      mentionedUserIds: t.Optional(
        t.Array(Uuid, {
          maxItems: 256,
          description:
            'The recipients the sender mentioned (each a participant): notified in-app (`mention`) and by email when offline, outside the per-conversation email window and even when muted. Absent on events of the previous version',
        }),
      ),
      replyTo: t.Optional(
        t.String({
          minLength: 1,
          description:
            'The thread’s first message when this is a reply (threads are one level deep); absent otherwise',
        }),
      ),
      preview: t.String({
        maxLength: 200,
        description:
          'The start of the body (up to 200 characters, plain text); for a message of attachments only "📎 <first filename>" (and "+N")',
      }),
      attachments: t.Optional(
        t.Array(
          t.Object({
            id: t.String({ minLength: 1, description: 'The attachment (its id in the chat API)' }),
            contentType: t.String({ minLength: 1, description: 'Its media type, e.g. `image/png`' }),
            size: t.Integer({ minimum: 1, description: 'Its size in bytes' }),
          }),
          {
            maxItems: 10,
            description:
              'Its files, in display order (no URLs: downloads are presigned per participant); absent when none',
          },
        ),
      ),
      createdAt: instant('When it was sent'),
    },
    { description: 'A message was sent; to every participant' },
  ),
  'message.updated': t.Object(
    {
      messageId: MessageId,
      conversationId: ConversationId,
      seq: MessageSeq,
      senderId: uuid('The author (only they edit)'),
      participantIds: ParticipantIds,
      preview: t.String({
        maxLength: 200,
        description: 'The new body’s preview; replaces the one of `message.sent`',
      }),
      editedAt: instant('When it was edited'),
    },
    { description: 'The author changed a message’s body' },
  ),
  'message.deleted': t.Object(
    {
      messageId: MessageId,
      conversationId: ConversationId,
      seq: MessageSeq,
      senderId: uuid('The author'),
      deletedBy: uuid('The author, or an owner or admin of the conversation'),
      participantIds: ParticipantIds,
      deletedAt: instant('When it was deleted'),
    },
    { description: 'A message became a tombstone: its seq stays, its body and reactions are gone' },
  ),
  'message.reaction_added': t.Object(
    {
      messageId: MessageId,
      conversationId: ConversationId,
      seq: MessageSeq,
      userId: uuid('The participant who reacted'),
      emoji: Emoji,
      participantIds: ParticipantIds,
      at: instant('When they reacted'),
    },
    { description: 'A participant added a reaction to a message' },
  ),
  'message.reaction_removed': t.Object(
    {
      messageId: MessageId,
      conversationId: ConversationId,
      seq: MessageSeq,
      userId: uuid('The participant who took their reaction back'),
      emoji: Emoji,
      participantIds: ParticipantIds,
      at: instant('When it was removed'),
    },
    { description: 'A participant removed their reaction from a message' },
  ),
  'message.pinned': t.Object(
    {
      messageId: MessageId,
      conversationId: ConversationId,
      seq: MessageSeq,
      userId: uuid('Who pinned it'),
      participantIds: ParticipantIds,
      at: instant('When it was pinned'),
    },
    {
      description: 'A participant pinned a message of the conversation (at most 50 pinned per conversation)',
    },
  ),
  'message.unpinned': t.Object(
    {
      messageId: MessageId,
      conversationId: ConversationId,
      seq: MessageSeq,
      userId: uuid('Who unpinned it (any participant may)'),
      participantIds: ParticipantIds,
      at: instant('When it was unpinned'),
    },
    { description: 'A participant unpinned a message' },
  ),
  'conversation.role_changed': t.Object(
    {
      conversationId: ConversationId,
      userId: uuid('The participant whose role changed'),
      role: t.Union([t.Literal('owner'), t.Literal('admin'), t.Literal('member')], {
        description: 'Their new role',
      }),
      changedBy: t.Optional(
        uuid('The owner who changed it; absent for the promotion that follows the last owner leaving'),
      ),
      participantIds: ParticipantIds,
      changedAt: instant('When it changed'),
    },
    {
      description:
        'A participant’s role changed (owner, admin, member): by an owner, or when the last owner left',
    },
  ),
  'conversation.muted': t.Object(
    {
      conversationId: ConversationId,
      userId: uuid('The user who muted it'),
      at: instant('When it was muted'),
    },
    { description: '`userId` muted the conversation (only their own devices learn it)' },
  ),
  'conversation.unmuted': t.Object(
    {
      conversationId: ConversationId,
      userId: uuid('The user who unmuted it'),
      at: instant('When it was unmuted'),
    },
    { description: '`userId` unmuted the conversation (only their own devices learn it)' },
  ),
  'user.blocked': t.Object(
    {
      userId: uuid('The blocker'),
      blockedUserId: uuid('The user blocked'),
      at: instant('When they were blocked'),
    },
    {
      description:
        '`userId` blocked `blockedUserId` (only the blocker’s devices learn it): the blocked user can no longer start a direct conversation with them or add them to a conversation',
    },
  ),
  'user.unblocked': t.Object(
    {
      userId: uuid('The user who lifted the block'),
      blockedUserId: uuid('The user no longer blocked'),
      at: instant('When the block was lifted'),
    },
    { description: '`userId` unblocked `blockedUserId` (only their own devices learn it)' },
  ),
  'notification.created': t.Object(
    {
      notificationId: uuid('The notification (its id in `GET /api/v1/notifications`)'),
      userId: uuid('Whose notification it is'),
      type: t.String({
        minLength: 1,
        maxLength: 64,
        description: 'Its kind: `message.received`, `mention` or `conversation.added`',
      }),
      payload: t.Record(t.String(), t.Unknown(), {
        description: 'As in the notifications API: its shape depends on `type`',
      }),
      createdAt: instant('When it was stored'),
    },
    { description: 'An in-app notification was stored for `userId`' },
  ),
} satisfies Record<string, TSchema>

export type EventType = keyof typeof EventSchemas
export type EventData<T extends EventType> = Static<(typeof EventSchemas)[T]>

export function isEventType(value: string): value is EventType {
  return Object.hasOwn(EventSchemas, value)
}

/** CloudEvents 1.0 envelope (JSON structured mode) with the `correlationid` and distributed tracing extensions. */
export const CloudEventEnvelope = t.Object({
  specversion: t.Literal('1.0'),
  id: t.String({ minLength: 1 }),
  source: t.String({ minLength: 1 }),
  type: t.String({ minLength: 1 }),
  time: Timestamp,
  datacontenttype: t.Literal('application/json'),
  correlationid: t.Optional(t.String()),
  /**
   * CloudEvents distributed tracing extension: the W3C trace context the event was created in
   * (the request or handler that staged it), continued by the publish and consumer spans.
   */
  traceparent: t.Optional(t.String({ pattern: '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$' })),
  tracestate: t.Optional(t.String({ maxLength: 512 })),
  data: t.Unknown(),
})

export type CloudEvent<T extends EventType = EventType> = Omit<
  Static<typeof CloudEventEnvelope>,
  'type' | 'data'
> & {
  type: T
  data: EventData<T>
}

/** Maximum characters of a message body carried in `message.sent.preview`. */
export const MESSAGE_PREVIEW_LENGTH = 200
