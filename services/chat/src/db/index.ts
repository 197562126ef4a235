import {
  bulkWriteChunked,
  createMongo,
  ensureOutboxIndexes,
  ensureProcessedEventsIndexes,
  isDuplicateKeyError,
} from '@parley/common/mongo'
import { MESSAGE_PREVIEW_LENGTH } from '@parley/contracts'
import { type Collection, type Db, type Document, MongoBulkWriteError } from 'mongodb'
import type { Config } from '../config'

/**
 * Newest message of a conversation, denormalised for the conversation list. `seq` first: `$max`
 * compares embedded documents field by field, so the greatest is the one with the highest seq.
 */
export type LastMessageDoc = { seq: number; id: string; senderId: string; preview: string; createdAt: Date }

/** Where a participant has read up to; `seq` first for `$max` as above. */
export type ReadMarker = { seq: number; id: string }

export type ConversationDoc = {
  /** UUIDv7. */
  _id: string
  title: string | null
  createdBy: string
  participantIds: string[]
  /** userId → the newest message that participant has read; only ever moves forward ($max by seq). */
  readMarkers: Record<string, ReadMarker>
  /** The message with the highest seq ($max). */
  lastMessage: LastMessageDoc | null
  /**
   * Highest seq recorded ($max after each insert): where a sender starts looking for the next
   * free seq. May lag behind the messages (it is written after the insert), never ahead.
   * Missing only on documents of the previous version, not yet numbered (see numberConversation).
   */
  lastSeq: number
  createdAt: Date
  /** Last activity (message, rename, new participants): the conversation list's order. */
  updatedAt: Date
  /** Incremented by every update; orders concurrent writes of the cached copy. */
  version: number
  /** Incremented each time a message is recorded; tags the cached latest page (see ChatCache). */
  messagesVersion: number
  /** Event ids of recent changes by version (outbox subjects, see outboxChangeUpdate); never read back. */
  outboxChanges?: Record<string, string>
}

export type MessageDoc = {
  /** UUIDv7 (drawn before the insert: not the commit order, `seq` is). */
  _id: string
  conversationId: string
  /**
   * Position in the conversation, 1, 2, 3…: unique per conversation, and taken only once every
   * lower one is visible (see MessageService.send), so paging by seq never skips a message.
   */
  seq: number
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
  // Conversation list: the caller's conversations by last activity, then id as tie-breaker. Not on
  // FerretDB: its PostgreSQL backend indexes the whole array as one btree entry (a conversation of
  // 256 participants exceeds PostgreSQL's row limit and cannot be written) and never uses it for
  // a membership filter anyway.
  if (await isFerretDB(db)) await dropIndexIfPresent(conversations, CONVERSATION_LIST_INDEX)
  else await conversations.createIndex({ participantIds: 1, updatedAt: -1, _id: -1 })
  // Messages of the previous version get their seq before the unique index (it would see them all as null).
  await numberAllConversations(db)
  // Message pages and unread counts: an index range per conversation, never skip/offset. Unique:
  // the insert itself is the atomic assignment of a seq (FerretDB enforces it in PostgreSQL too).
  await messages.createIndex({ conversationId: 1, seq: 1 }, { unique: true })
  await dropIndexIfPresent(messages, 'conversationId_1__id_1')
  await messages.createIndex({ idempotencyKey: 1 }, { unique: true, sparse: true })
  await ensureOutboxIndexes(db)
  // The retention purge of consumed-event markers scans them by age.
  await ensureProcessedEventsIndexes(db)
}

const CONVERSATION_LIST_INDEX = 'participantIds_1_updatedAt_-1__id_-1'

/** FerretDB answers buildInfo with its own version besides the MongoDB one it emulates. */
export async function isFerretDB(db: Db): Promise<boolean> {
  const info = (await db.admin().command({ buildInfo: 1 })) as { ferretdbVersion?: string }
  return typeof info.ferretdbVersion === 'string'
}

async function dropIndexIfPresent<T extends Document>(
  collection: Collection<T>,
  name: string,
): Promise<void> {
  // Both throw `ns does not exist` for a collection not created yet: nothing to drop then.
  const indexes = await collection.indexes().catch(() => [])
  if (indexes.some((index) => index.name === name)) await collection.dropIndex(name).catch(() => undefined)
}

const NUMBERING_BATCH = 500

/** Numbers every conversation of the previous version (no `lastSeq`); idempotent, one conversation at a time. */
export async function numberAllConversations(db: Db): Promise<number> {
  const { conversations } = chatCollections(db)
  let numbered = 0
  // Batches of ids rather than one cursor held open across the writes: FerretDB on PostgreSQL
  // stopped answering with a cursor open on the collection being updated.
  for (;;) {
    const pending = await conversations
      .find({ lastSeq: { $exists: false } }, { projection: { _id: 1 } })
      .limit(NUMBERING_BATCH)
      .toArray()
    if (pending.length === 0) return numbered
    for (const { _id } of pending) await numberConversation(db, _id)
    numbered += pending.length
  }
}

/**
 * Gives the messages of a conversation written by the previous version (no `seq`) the next seqs
 * in `_id` order, in batches, then sets `lastSeq`, `lastMessage` and the read markers (message
 * ids then) from them. Idempotent and safe to run twice at once: a message is numbered only while
 * it has no seq, and a seq taken meanwhile (unique index, when present) moves on to the next.
 */
export async function numberConversation(db: Db, conversationId: string): Promise<void> {
  const { conversations, messages } = chatCollections(db)
  const highestSeq = async () =>
    (
      await messages.findOne(
        { conversationId, seq: { $exists: true } },
        { sort: { seq: -1 }, projection: { seq: 1 } },
      )
    )?.seq ?? 0
  let top = await highestSeq()
  for (;;) {
    const batch = await messages
      .find({ conversationId, seq: { $exists: false } }, { projection: { _id: 1 } })
      .sort({ _id: 1 })
      .limit(NUMBERING_BATCH)
      .toArray()
    if (batch.length === 0) break
    try {
      const result = await bulkWriteChunked(
        messages,
        batch.map(({ _id }, index) => ({
          updateOne: { filter: { _id, seq: { $exists: false } }, update: { $set: { seq: top + index + 1 } } },
        })),
        { ordered: true },
      )
      if (result.modifiedCount < batch.length) top = await highestSeq()
      else top += batch.length
    } catch (error) {
      const duplicate =
        isDuplicateKeyError(error) ||
        (error instanceof MongoBulkWriteError &&
          [error.writeErrors].flat().every((failure) => failure.code === 11000))
      if (!duplicate) throw error
      top = await highestSeq()
    }
  }
  const conversation = await conversations.findOne({ _id: conversationId })
  if (!conversation || typeof conversation.lastSeq === 'number') return
  const last = await messages.findOne({ conversationId }, { sort: { seq: -1 } })
  const markers: Record<string, ReadMarker> = {}
  for (const [userId, marker] of Object.entries(conversation.readMarkers as Record<string, unknown>)) {
    if (typeof marker !== 'string') continue
    const read = await messages.findOne({ _id: marker, conversationId }, { projection: { seq: 1 } })
    if (read) markers[`readMarkers.${userId}`] = { seq: read.seq, id: read._id }
  }
  await conversations.updateOne(
    { _id: conversationId, lastSeq: { $exists: false } },
    {
      $set: {
        lastSeq: last?.seq ?? 0,
        lastMessage: last ? lastMessageOf(last) : null,
        ...markers,
      },
      $inc: { version: 1 },
    },
  )
}

export function lastMessageOf(message: MessageDoc): LastMessageDoc {
  return {
    seq: message.seq,
    id: message._id,
    senderId: message.senderId,
    preview: previewOf(message.body),
    createdAt: message.createdAt,
  }
}

/** The body cut to MESSAGE_PREVIEW_LENGTH UTF-16 units on a character boundary, with an ellipsis if cut. */
export function previewOf(body: string): string {
  if (body.length <= MESSAGE_PREVIEW_LENGTH) return body
  let preview = ''
  for (const character of body) {
    if (preview.length + character.length > MESSAGE_PREVIEW_LENGTH - 1) break
    preview += character
  }
  return `${preview}…`
}

/** `<binary> migrate`: numbers messages of the previous version, creates the indexes and exits. */
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
  lastSeq: 1,
  createdAt: 1,
  updatedAt: 1,
  version: 1,
  messagesVersion: 1,
} as const

export const MESSAGE_FIELDS = {
  conversationId: 1,
  seq: 1,
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
  const { _id, title, createdBy, participantIds, readMarkers, lastMessage, lastSeq, createdAt, updatedAt } =
    doc
  return {
    _id,
    title,
    createdBy,
    participantIds,
    readMarkers,
    lastMessage,
    lastSeq,
    createdAt,
    updatedAt,
    version: doc.version,
    messagesVersion: doc.messagesVersion,
  }
}
