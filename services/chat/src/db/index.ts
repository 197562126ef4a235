import { createMongo, ensureOutboxIndexes, ensureProcessedEventsIndexes } from '@parley/common/mongo'
import type { Collection, Db } from 'mongodb'
import type { Config } from '../config'

/** Newest message of a conversation, denormalised for the conversation list. */
export type LastMessageDoc = { id: string; senderId: string; preview: string; createdAt: Date }

export type ConversationDoc = {
  /** UUIDv7. */
  _id: string
  title: string | null
  createdBy: string
  participantIds: string[]
  /** userId → id of the newest message that participant has read; only ever moves forward ($max). */
  readMarkers: Record<string, string>
  /** Kept as the greatest message by id: `$max` compares embedded documents field by field, `id` first. */
  lastMessage: LastMessageDoc | null
  createdAt: Date
  /** Last activity (message, rename, new participants): the conversation list's order. */
  updatedAt: Date
  /** Incremented by every update; orders concurrent writes of the cached copy. */
  version: number
  /** Incremented each time a message is recorded; tags the cached latest page (see ChatCache). */
  messagesVersion: number
}

export type MessageDoc = {
  /** UUIDv7: time-ordered, so `_id` ranges within a conversation page stably. */
  _id: string
  conversationId: string
  senderId: string
  body: string
  clientMessageId?: string
  /**
   * `<conversationId>:<senderId>:<clientMessageId>`, present only with a clientMessageId. A sparse
   * unique index on it stands in for a partial unique index on the triple (FerretDB has none).
   */
  idempotencyKey?: string
  createdAt: Date
}

/** The users projection fed by `user.registered` / `user.profile_updated`. */
export type UserDoc = { _id: string; displayName: string; updatedAt: Date }

export type ChatCollections = {
  conversations: Collection<ConversationDoc>
  messages: Collection<MessageDoc>
  users: Collection<UserDoc>
}

export function chatCollections(db: Db): ChatCollections {
  return {
    conversations: db.collection<ConversationDoc>('conversations'),
    messages: db.collection<MessageDoc>('messages'),
    users: db.collection<UserDoc>('users'),
  }
}

/** Creates every index the service relies on; idempotent, so it runs at start-up and in `migrate`. */
export async function ensureIndexes(db: Db): Promise<void> {
  const { conversations, messages } = chatCollections(db)
  // Conversation list: the caller's conversations by last activity, then id as tie-breaker.
  await conversations.createIndex({ participantIds: 1, updatedAt: -1, _id: -1 })
  // Message pages and unread counts: an index range per conversation, never skip/offset.
  await messages.createIndex({ conversationId: 1, _id: 1 })
  await messages.createIndex({ idempotencyKey: 1 }, { unique: true, sparse: true })
  await ensureOutboxIndexes(db)
  // The retention purge of consumed-event markers scans them by age.
  await ensureProcessedEventsIndexes(db)
}

/** `<binary> migrate`: creates the indexes and exits. */
export async function migrate(config: Config): Promise<void> {
  const mongo = createMongo(config.MONGO_URL, config.MONGO_DB)
  try {
    await ensureIndexes(mongo.db)
  } finally {
    await mongo.close()
  }
}

/** What reads return: the state fields, never the embedded outbox. */
export const CONVERSATION_FIELDS = {
  title: 1,
  createdBy: 1,
  participantIds: 1,
  readMarkers: 1,
  lastMessage: 1,
  createdAt: 1,
  updatedAt: 1,
  version: 1,
  messagesVersion: 1,
} as const

export const MESSAGE_FIELDS = {
  conversationId: 1,
  senderId: 1,
  body: 1,
  clientMessageId: 1,
  createdAt: 1,
} as const

/**
 * The state fields of a conversation returned by findOneAndUpdate, which cannot take a
 * projection here (FerretDB does not implement `fields` on findAndModify).
 */
export function conversationState(doc: ConversationDoc): ConversationDoc {
  const { _id, title, createdBy, participantIds, readMarkers, lastMessage, createdAt, updatedAt } = doc
  return {
    _id,
    title,
    createdBy,
    participantIds,
    readMarkers,
    lastMessage,
    createdAt,
    updatedAt,
    version: doc.version,
    messagesVersion: doc.messagesVersion,
  }
}
