import { type Static, type TSchema, Type as t } from '@sinclair/typebox'

const Uuid = t.String({ format: 'uuid' })
const Timestamp = t.String({ format: 'date-time' })

/** `data` schema of every event on the bus, keyed by CloudEvents `type` (= routing key). */
export const EventSchemas = {
  'user.registered': t.Object({
    userId: Uuid,
    email: t.String({ format: 'email' }),
    displayName: t.String({ minLength: 1, maxLength: 64 }),
    emailVerified: t.Boolean(),
    roles: t.Array(t.String()),
    createdAt: Timestamp,
  }),
  'user.email_verification_requested': t.Object({
    userId: Uuid,
    email: t.String({ format: 'email' }),
    displayName: t.String({ minLength: 1, maxLength: 64 }),
    /** The one-time code in clear: only the notification service reads it, to mail it. */
    code: t.String({ pattern: '^[0-9]{6}$' }),
    expiresAt: Timestamp,
  }),
  'user.email_verified': t.Object({
    userId: Uuid,
    email: t.String({ format: 'email' }),
    verifiedAt: Timestamp,
  }),
  'user.sessions_revoked': t.Object({
    userId: Uuid,
    /** Access tokens with `iat` strictly before this instant are rejected. */
    revokedBefore: Timestamp,
  }),
  'user.session_revoked': t.Object({
    userId: Uuid,
    /** The session family (the access token's `sid`): its access tokens are rejected from now on. */
    sessionId: Uuid,
    reason: t.Union([t.Literal('logout'), t.Literal('reuse_detected')]),
    revokedAt: Timestamp,
  }),
  'user.profile_updated': t.Object({
    userId: Uuid,
    displayName: t.String({ minLength: 1, maxLength: 64 }),
    bio: t.Union([t.String({ maxLength: 280 }), t.Null()]),
    avatarUrl: t.Union([t.String({ maxLength: 2048 }), t.Null()]),
    updatedAt: Timestamp,
  }),
  'conversation.created': t.Object({
    conversationId: t.String({ minLength: 1 }),
    title: t.Union([t.String({ maxLength: 120 }), t.Null()]),
    createdBy: Uuid,
    participantIds: t.Array(Uuid, { minItems: 1, maxItems: 256 }),
    /** A 1:1 conversation (exactly one per pair; it never gains participants). Absent: a group. */
    direct: t.Optional(t.Boolean()),
    createdAt: Timestamp,
  }),
  'conversation.updated': t.Object({
    conversationId: t.String({ minLength: 1 }),
    title: t.Union([t.String({ maxLength: 120 }), t.Null()]),
    updatedBy: Uuid,
    participantIds: t.Array(Uuid, { minItems: 1, maxItems: 256 }),
    updatedAt: Timestamp,
  }),
  'conversation.participants_added': t.Object({
    conversationId: t.String({ minLength: 1 }),
    addedBy: Uuid,
    /** The users added by this change. */
    userIds: t.Array(Uuid, { minItems: 1, maxItems: 256 }),
    /** Every participant after it, the added ones included. */
    participantIds: t.Array(Uuid, { minItems: 1, maxItems: 256 }),
    addedAt: Timestamp,
  }),
  'conversation.participant_left': t.Object({
    conversationId: t.String({ minLength: 1 }),
    userId: Uuid,
    /** The participants who remain (possibly none). */
    participantIds: t.Array(Uuid, { maxItems: 256 }),
    /** The owner or admin who removed `userId`; absent when they left themselves. */
    removedBy: t.Optional(Uuid),
    leftAt: Timestamp,
  }),
  /** A participant's read marker moved forward (read receipts). */
  'conversation.read': t.Object({
    conversationId: t.String({ minLength: 1 }),
    userId: Uuid,
    /** Sequence number of the last message read (see `message.sent` `seq`). */
    seq: t.Integer({ minimum: 1 }),
    messageId: t.String({ minLength: 1 }),
    participantIds: t.Array(Uuid, { minItems: 1, maxItems: 256 }),
    readAt: Timestamp,
  }),
  'message.sent': t.Object({
    messageId: t.String({ minLength: 1 }),
    conversationId: t.String({ minLength: 1 }),
    /**
     * Position in the conversation (1, 2, 3… in commit order, never reused). Optional only so
     * events staged by a replica of the previous version still validate; every new event has it.
     */
    seq: t.Optional(t.Integer({ minimum: 1 })),
    senderId: Uuid,
    recipientIds: t.Array(Uuid, { maxItems: 256 }),
    /**
     * The recipients who muted the conversation when it was sent: no email or in-app notification
     * for them (their unread counts still move). Absent on events of the previous version.
     */
    mutedUserIds: t.Optional(t.Array(Uuid, { maxItems: 256 })),
    /**
     * The recipients the sender mentioned (each a participant): notified in-app (`mention`) and by
     * email when offline, outside the per-conversation email window and even when muted. Absent
     * on events of the previous version.
     */
    mentionedUserIds: t.Optional(t.Array(Uuid, { maxItems: 256 })),
    /** The thread's first message when this is a reply (threads are one level deep). */
    replyTo: t.Optional(t.String({ minLength: 1 })),
    /** The body's preview; for a message of attachments only "📎 <first filename>" (and "+N"). */
    preview: t.String({ maxLength: 200 }),
    /** Its files, in display order (no URLs: downloads are presigned per participant). Absent: none. */
    attachments: t.Optional(
      t.Array(
        t.Object({
          id: t.String({ minLength: 1 }),
          contentType: t.String({ minLength: 1 }),
          size: t.Integer({ minimum: 1 }),
        }),
        { maxItems: 10 },
      ),
    ),
    createdAt: Timestamp,
  }),
  /** The author changed a message's body (previews follow: `preview` replaces the one of `message.sent`). */
  'message.updated': t.Object({
    messageId: t.String({ minLength: 1 }),
    conversationId: t.String({ minLength: 1 }),
    seq: t.Integer({ minimum: 1 }),
    senderId: Uuid,
    participantIds: t.Array(Uuid, { minItems: 1, maxItems: 256 }),
    preview: t.String({ maxLength: 200 }),
    editedAt: Timestamp,
  }),
  /** A message became a tombstone: its seq stays, its body and reactions are gone. */
  'message.deleted': t.Object({
    messageId: t.String({ minLength: 1 }),
    conversationId: t.String({ minLength: 1 }),
    seq: t.Integer({ minimum: 1 }),
    senderId: Uuid,
    /** The author, or an owner or admin of the conversation. */
    deletedBy: Uuid,
    participantIds: t.Array(Uuid, { minItems: 1, maxItems: 256 }),
    deletedAt: Timestamp,
  }),
  'message.reaction_added': t.Object({
    messageId: t.String({ minLength: 1 }),
    conversationId: t.String({ minLength: 1 }),
    seq: t.Integer({ minimum: 1 }),
    userId: Uuid,
    /** One RGI emoji (see the chat service). */
    emoji: t.String({ minLength: 1, maxLength: 64 }),
    participantIds: t.Array(Uuid, { minItems: 1, maxItems: 256 }),
    at: Timestamp,
  }),
  'message.reaction_removed': t.Object({
    messageId: t.String({ minLength: 1 }),
    conversationId: t.String({ minLength: 1 }),
    seq: t.Integer({ minimum: 1 }),
    userId: Uuid,
    emoji: t.String({ minLength: 1, maxLength: 64 }),
    participantIds: t.Array(Uuid, { minItems: 1, maxItems: 256 }),
    at: Timestamp,
  }),
  /** A participant pinned a message of the conversation (at most 50 pinned per conversation). */
  'message.pinned': t.Object({
    messageId: t.String({ minLength: 1 }),
    conversationId: t.String({ minLength: 1 }),
    seq: t.Integer({ minimum: 1 }),
    /** Who pinned it. */
    userId: Uuid,
    participantIds: t.Array(Uuid, { minItems: 1, maxItems: 256 }),
    at: Timestamp,
  }),
  'message.unpinned': t.Object({
    messageId: t.String({ minLength: 1 }),
    conversationId: t.String({ minLength: 1 }),
    seq: t.Integer({ minimum: 1 }),
    /** Who unpinned it (any participant may). */
    userId: Uuid,
    participantIds: t.Array(Uuid, { minItems: 1, maxItems: 256 }),
    at: Timestamp,
  }),
  /** A participant's role changed (owner, admin, member): by an owner, or when the last owner left. */
  'conversation.role_changed': t.Object({
    conversationId: t.String({ minLength: 1 }),
    userId: Uuid,
    role: t.Union([t.Literal('owner'), t.Literal('admin'), t.Literal('member')]),
    /** The owner who changed it; absent for the promotion that follows the last owner leaving. */
    changedBy: t.Optional(Uuid),
    participantIds: t.Array(Uuid, { minItems: 1, maxItems: 256 }),
    changedAt: Timestamp,
  }),
  /** `userId` muted the conversation (only their own devices learn it). */
  'conversation.muted': t.Object({
    conversationId: t.String({ minLength: 1 }),
    userId: Uuid,
    at: Timestamp,
  }),
  'conversation.unmuted': t.Object({
    conversationId: t.String({ minLength: 1 }),
    userId: Uuid,
    at: Timestamp,
  }),
  /**
   * `userId` blocked `blockedUserId` (only the blocker's devices learn it): the blocked user can no
   * longer start a direct conversation with them or add them to a conversation.
   */
  'user.blocked': t.Object({
    userId: Uuid,
    blockedUserId: Uuid,
    at: Timestamp,
  }),
  'user.unblocked': t.Object({
    userId: Uuid,
    blockedUserId: Uuid,
    at: Timestamp,
  }),
  /** An in-app notification was stored for `userId`. */
  'notification.created': t.Object({
    notificationId: Uuid,
    userId: Uuid,
    type: t.String({ minLength: 1, maxLength: 64 }),
    payload: t.Record(t.String(), t.Unknown()),
    createdAt: Timestamp,
  }),
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
