import { type Static, Type as t } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'

/** Conversation ids are lowercase UUIDs (as chat validates them). */
const ConversationId = t.String({
  pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$',
})

/** Client → server: the user started or stopped typing in a conversation. */
export const TypingFrame = t.Object({
  type: t.Literal('typing'),
  conversationId: ConversationId,
  state: t.Union([t.Literal('start'), t.Literal('stop')]),
})
export type TypingFrame = Static<typeof TypingFrame>

/** Client → server: this socket's user is away from (or back at) the device. */
export const PresenceFrame = t.Object({
  type: t.Literal('presence'),
  status: t.Union([t.Literal('away'), t.Literal('online')]),
})
export type PresenceFrame = Static<typeof PresenceFrame>

export type PresenceStatus = 'online' | 'away' | 'offline'
export type TypingState = TypingFrame['state']

/** The client frame types this module answers; others belong to the realtime module. */
export const EPHEMERAL_FRAME_TYPES = ['typing', 'presence'] as const
export type EphemeralFrameType = (typeof EPHEMERAL_FRAME_TYPES)[number]

/**
 * A receiver treats a `start` as stopped after this long without another one; typists resend
 * `start` while they keep typing (every few seconds) and send `stop` when they stop.
 */
export const TYPING_EXPIRY_SECONDS = 8
/** Conversations (most recently active first) whose participants are a new socket's contacts. */
export const MAX_CONTACT_CONVERSATIONS = 500
export const CONTACT_PAGE_SIZE = 100
/** Contacts listed in the `presence.snapshot` frame sent on connect. */
export const MAX_SNAPSHOT_CONTACTS = 1_000
/** How long a participant list fetched from chat (outside the contact index) is reused. */
export const MEMBERSHIP_CACHE_MS = 30_000
export const MAX_CACHED_CONVERSATIONS = 10_000
/** Invalid typing/presence frames one connection may send before it is closed with 1008. */
export const MAX_INVALID_FRAMES = 20

export type ErrorFrame =
  | { type: 'error'; code: 'invalid_frame'; field: string; message: string }
  | { type: 'error'; code: 'not_participant'; conversationId: string }
  | { type: 'error'; code: 'rate_limited'; retryAfterSeconds: number; conversationId?: string }
  | { type: 'error'; code: 'unavailable'; conversationId: string }

/** Server → client frames of this module. */
export type EphemeralPush =
  | { type: 'typing'; conversationId: string; userId: string; state: TypingState }
  | { type: 'presence'; userId: string; status: PresenceStatus }
  | {
      type: 'presence.snapshot'
      contacts: { userId: string; status: Exclude<PresenceStatus, 'offline'> }[]
    }
  | ErrorFrame

/** What replicas tell each other over Redis pub/sub (never stored). */
export type EphemeralSignal =
  | { kind: 'typing'; conversationId: string; userId: string; state: TypingState; to: string[] }
  | { kind: 'presence'; userId: string; status: PresenceStatus }

export function isEphemeralFrame(message: unknown): message is { type: EphemeralFrameType } {
  return (
    typeof message === 'object' &&
    message !== null &&
    'type' in message &&
    (EPHEMERAL_FRAME_TYPES as readonly unknown[]).includes(message.type)
  )
}

export type ParsedFrame<T> = { ok: true; frame: T } | { ok: false; error: ErrorFrame }

/** Checks a frame against its schema; a failure names the first bad field (`state`, `conversationId`…). */
export function parseFrame<T extends typeof TypingFrame | typeof PresenceFrame>(
  schema: T,
  message: unknown,
): ParsedFrame<Static<T>> {
  const error = Value.Errors(schema, message).First()
  if (!error) return { ok: true, frame: message as Static<T> }
  return {
    ok: false,
    error: {
      type: 'error',
      code: 'invalid_frame',
      field: error.path.replace(/^\//, '') || 'type',
      message: error.message,
    },
  }
}

/** The part of chat's conversation answer the gateway reads (`GET /conversations/:id`, list items). */
export const ChatConversation = t.Object({
  id: t.String(),
  participants: t.Array(t.Object({ userId: t.String() })),
})
export type ChatConversation = Static<typeof ChatConversation>

export const ChatConversationPage = t.Object({
  items: t.Array(ChatConversation),
  nextCursor: t.Union([t.String(), t.Null()]),
})
