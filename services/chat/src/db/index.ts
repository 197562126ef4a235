import {
  bulkWriteChunked,
  createMongo,
  ensureOutboxIndexes,
  ensureProcessedEventsIndexes,
  isDuplicateKeyError,
  isFerretDB,
} from '@parley/common/mongo'
import { MESSAGE_PREVIEW_LENGTH } from '@parley/contracts'
import { type Collection, type Db, type Document, type Filter, MongoBulkWriteError } from 'mongodb'
import type { Config } from '../config'

/**
 * Newest message of a conversation, denormalised for the conversation list. `seq` first: `$max`
 * compares embedded documents field by field, so the greatest is the one with the highest seq.
 */
export type LastMessageDoc = {
  seq: number
  id: string
  senderId: string
  preview: string
  createdAt: Date
  /** Set when that message was deleted (its preview is then empty). */
  deleted?: true
}

/** Where a participant has read up to; `seq` first for `$max` as above. */
export type ReadMarker = { seq: number; id: string }

/** What a participant may do: owners and admins manage the conversation, members take part. */
export type Role = 'owner' | 'admin' | 'member'

export type ConversationDoc = {
  /** UUIDv7. */
  _id: string
  title: string | null
  createdBy: string
  /** In the order they joined (`$addToSet` appends): the oldest first. */
  participantIds: string[]
  /**
   * userId → role of the owners and admins (members are not listed). Missing on conversations
   * created before roles: their creator is the owner (see roleOf).
   */
  roles?: Record<string, Exclude<Role, 'member'>>
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
  /** A 1:1 conversation: it never gains participants. */
  direct?: true
  /**
   * `<userId>:<userId>` of a direct conversation's pair, sorted, while both are in it (unset when
   * one leaves, so the pair may start a new one). Unique: the insert is the exactly-once creation.
   */
  directKey?: string
  /** userId → true for the participants who muted it (set key by key, see rolesUpdate). */
  mutedBy?: Record<string, true>
  /** messageId → who pinned it and when (set key by key, at most MAX_PINS_PER_CONVERSATION). */
  pins?: Record<string, PinDoc>
}

/** A pinned message: its seq (events name it) and who pinned it when (ISO text: it survives the cache as is). */
export type PinDoc = { seq: number; userId: string; at: string }

/** What a thread's first message shows of its replies (kept on it: a page reads no replies). */
export type ThreadDoc = {
  replyCount: number
  lastReplyAt: Date
  /** The most recent distinct repliers, newest first, at most THREAD_RECENT_REPLIERS. */
  recentReplierIds: string[]
}

/** How many recent repliers a thread summary names. */
export const THREAD_RECENT_REPLIERS = 3

export type MessageDoc = {
  /** UUIDv7 (drawn before the insert: not the commit order, `seq` is). */
  _id: string
  conversationId: string
  /**
   * Position in the conversation, 1, 2, 3…: unique per conversation, and taken only once every
   * lower one is visible (see MessageService.send), so paging by seq never skips a message.
   */
  seq: number
  /** blockOf(seq): the equality a page filters on, which FerretDB can push down (ranges it cannot). */
  seqBlock: number
  senderId: string
  body: string
  clientMessageId?: string
  /**
   * `<conversationId>:<senderId>:<clientMessageId>`, present only with a clientMessageId. A sparse
   * unique index on it stands in for a partial unique index on the triple (FerretDB has none).
   */
  idempotencyKey?: string
  createdAt: Date
  /** When its author last changed the body. */
  editedAt?: Date
  /** A tombstone from then on: body empty, reactions gone, seq kept. */
  deletedAt?: Date
  deletedBy?: string
  /** Incremented by every edit or delete (orders them, see MessageService.change); missing: never changed. */
  version?: number
  /** Event ids of the edits/deletes by version (outbox subjects, see outboxChangeUpdate); never read back. */
  outboxChanges?: Record<string, string>
  /** The thread's first message (same conversation) when this is a reply. */
  replyTo?: string
  /** On a thread's first message: its replies in short. */
  thread?: ThreadDoc
  /** The participants the sender mentioned (as sent, each once); missing: none. */
  mentions?: string[]
  /** Its files, in the order sent (copied from their verified attachments); missing: none, or deleted. */
  attachments?: MessageAttachmentDoc[]
}

/** A thumbnail stored beside its image. */
export type ThumbnailDoc = { key: string; contentType: string; width: number; height: number }

/** What a message keeps of each of its attachments: enough to render and presign without a lookup. */
export type MessageAttachmentDoc = {
  id: string
  filename: string
  contentType: string
  size: number
  /** The object served (generated, never the filename). */
  key: string
  width?: number
  height?: number
  thumbnail?: ThumbnailDoc
}

/**
 * An upload, from its presigned PUT to its message: `pending` (declared, maybe uploaded),
 * `ready` (bytes checked, copied to `key`), `attached` (claimed by a send; `messageId` once it is
 * in), `deleted` (its message was deleted: objects to remove). Every change is one update
 * conditional on the status read (FerretDB loses concurrent read-modify-writes of a document).
 */
export type AttachmentDoc = {
  /** UUIDv7. */
  _id: string
  ownerId: string
  /** As given, cleaned of paths and control characters; only ever shown, never a key. */
  filename: string
  contentType: string
  /** Declared until ready, then the size of the object served (metadata stripped). */
  size: number
  status: 'pending' | 'ready' | 'attached' | 'deleted'
  /** Where the presigned PUT writes. */
  uploadKey: string
  /**
   * When the presigned PUT stops working. Set (with `uploadOpen`) while it may still write: a PUT
   * after the check lands at `uploadKey` again, which the sweep deletes once the URL expired.
   */
  uploadExpiresAt: Date
  uploadOpen?: true
  /** Where the checked (and, for an image, re-encoded) object is served from. */
  key: string
  width?: number
  height?: number
  thumbnail?: ThumbnailDoc
  conversationId?: string
  messageId?: string
  createdAt: Date
  /** Deleted by the sweep after this unless attached. */
  orphanAt: Date
}

/**
 * `_id` `<userId>:<blockedUserId>`. Unblocking keeps the document (`active: false`, version
 * bumped), so both are versioned writes whose event the outbox can tie to them (as reactions).
 */
export type BlockDoc = {
  _id: string
  userId: string
  blockedUserId: string
  active: boolean
  version: number
  at: Date
  outboxChanges?: Record<string, string>
}

export const blockId = (userId: string, blockedUserId: string) => `${userId}:${blockedUserId}`

/**
 * One user's reaction with one emoji to one message, `_id` `<messageId>:<emoji>:<userId>`: its own
 * document, so concurrent reactions never rewrite a shared one (FerretDB writes updates back
 * whole). Removing one keeps the document (`active: false`, version bumped), so the removal is a
 * versioned update whose event the outbox can tie to it, and adding it again is one too.
 */
export type ReactionDoc = {
  _id: string
  conversationId: string
  /** The message's block: a page reads the reactions of its blocks with one equality each. */
  seqBlock: number
  messageId: string
  emoji: string
  userId: string
  active: boolean
  version: number
  /** When it was last added or removed. */
  at: Date
  outboxChanges?: Record<string, string>
}

/**
 * Messages per block of seqs: 1–63 are block 0, 64–127 block 1… A page reads one or two blocks.
 * FerretDB answers a filter it cannot push down (a seq range) by reading into memory every
 * message that matches the rest of it: the whole conversation without blocks, at most a block with.
 */
export const SEQ_BLOCK_SIZE = 64

export function blockOf(seq: number): number {
  return Math.floor(seq / SEQ_BLOCK_SIZE)
}

/** Seqs strictly between `after` and `before`, in `order`: what readSeqRange and countSeqRange walk. */
export type SeqRange = { after: number; before: number; order: 1 | -1 }

/** The blocks a range covers, in its order. */
function* blocksOf({ after, before, order }: SeqRange): Generator<number> {
  if (before - after < 2) return
  const first = blockOf(after + 1)
  const last = blockOf(before - 1)
  if (order === 1) for (let block = first; block <= last; block++) yield block
  else for (let block = last; block >= first; block--) yield block
}

const rangeFilter = (
  conversationId: string,
  block: number,
  { after, before }: SeqRange,
): Filter<MessageDoc> => ({
  conversationId,
  seqBlock: block,
  seq: { $gt: after, $lt: before },
})

/** Up to `limit` messages of a conversation in `range`, one block at a time. */
export async function readSeqRange(
  messages: Collection<MessageDoc>,
  conversationId: string,
  range: SeqRange,
  limit: number,
): Promise<MessageDoc[]> {
  const found: MessageDoc[] = []
  for (const block of blocksOf(range)) {
    const docs = await messages
      .find(rangeFilter(conversationId, block, range), { projection: MESSAGE_FIELDS })
      .sort({ seq: range.order })
      .limit(limit - found.length)
      .toArray()
    found.push(...docs)
    if (found.length >= limit) break
  }
  return found
}

/** How many messages of a conversation in `range` match `filter`, counted up to `limit`. */
export async function countSeqRange(
  messages: Collection<MessageDoc>,
  conversationId: string,
  range: SeqRange,
  filter: Filter<MessageDoc>,
  limit: number,
): Promise<number> {
  let count = 0
  for (const block of blocksOf(range)) {
    count += await messages.countDocuments(
      { ...filter, ...rangeFilter(conversationId, block, range) },
      { limit: limit - count },
    )
    if (count >= limit) break
  }
  return count
}

/** The users projection fed by `user.registered` / `user.profile_updated`. */
export type UserDoc = { _id: string; displayName: string; updatedAt: Date }

export type ChatCollections = {
  conversations: Collection<ConversationDoc>
  messages: Collection<MessageDoc>
  users: Collection<UserDoc>
  reactions: Collection<ReactionDoc>
  blocks: Collection<BlockDoc>
  attachments: Collection<AttachmentDoc>
}

export function chatCollections(db: Db): ChatCollections {
  return {
    conversations: db.collection<ConversationDoc>('conversations'),
    messages: db.collection<MessageDoc>('messages'),
    users: db.collection<UserDoc>('users'),
    reactions: db.collection<ReactionDoc>('reactions'),
    blocks: db.collection<BlockDoc>('blocks'),
    attachments: db.collection<AttachmentDoc>('attachments'),
  }
}

/** Creates every index the service relies on; idempotent, so it runs at start-up and in `migrate`. */
export async function ensureIndexes(db: Db): Promise<void> {
  const { conversations, messages, reactions, blocks, attachments } = chatCollections(db)
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
  // MongoDB pages along the index above (the block filter costs nothing there); FerretDB needs an
  // index on the block for its equality lookup (see scripts/ferretdb-postgresql.sql).
  if (await isFerretDB(db)) await messages.createIndex({ conversationId: 1, seqBlock: 1 })
  await blockAllMessages(db)
  await dropIndexIfPresent(messages, 'conversationId_1__id_1')
  await messages.createIndex({ idempotencyKey: 1 }, { unique: true, sparse: true })
  // The reactions of a page's blocks: one equality lookup per block, on MongoDB and FerretDB.
  await reactions.createIndex({ conversationId: 1, seqBlock: 1 })
  // Exactly one direct conversation per pair: a concurrent second insert fails with 11000.
  await conversations.createIndex({ directKey: 1 }, { unique: true, sparse: true })
  // A thread's replies: an equality on replyTo (FerretDB's lookup), then seq order.
  await messages.createIndex({ replyTo: 1, seq: 1 })
  // The caller's block list.
  await blocks.createIndex({ userId: 1 })
  // The sweep's equality on status (the age is filtered after it, as FerretDB would anyway).
  await attachments.createIndex({ status: 1 })
  // The sweep of upload keys whose presigned PUT may have written after the check.
  await attachments.createIndex({ uploadOpen: 1 }, { sparse: true })
  await ensureOutboxIndexes(db)
  // The retention purge of consumed-event markers scans them by age.
  await ensureProcessedEventsIndexes(db)
}

const CONVERSATION_LIST_INDEX = 'participantIds_1_updatedAt_-1__id_-1'

async function dropIndexIfPresent<T extends Document>(
  collection: Collection<T>,
  name: string,
): Promise<void> {
  // Both throw `ns does not exist` for a collection not created yet: nothing to drop then.
  const indexes = await collection.indexes().catch(() => [])
  if (indexes.some((index) => index.name === name)) await collection.dropIndex(name).catch(() => undefined)
}

const NUMBERING_BATCH = 500

/** Migrations done, `{_id: <name>, at}`: checked before a migration that would read every message. */
const MIGRATIONS = 'migrations'
const SEQ_BLOCKS_MIGRATION = 'messages.seqBlock'

/**
 * Gives messages numbered by the previous version (seq, no seqBlock) their block; once, then
 * recorded in `migrations` so later start-ups do not read every message again.
 */
export async function blockAllMessages(db: Db): Promise<number> {
  const migrations = db.collection<{ _id: string; at: Date }>(MIGRATIONS)
  if (await migrations.findOne({ _id: SEQ_BLOCKS_MIGRATION })) return 0
  const { messages } = chatCollections(db)
  let blocked = 0
  for (;;) {
    const batch = await messages
      .find({ seqBlock: { $exists: false }, seq: { $exists: true } }, { projection: { _id: 1, seq: 1 } })
      .limit(NUMBERING_BATCH)
      .toArray()
    if (batch.length === 0) break
    await bulkWriteChunked(
      messages,
      batch.map(({ _id, seq }) => ({
        updateOne: { filter: { _id, seq }, update: { $set: { seqBlock: blockOf(seq) } } },
      })),
      { ordered: false },
    )
    blocked += batch.length
  }
  try {
    await migrations.insertOne({ _id: SEQ_BLOCKS_MIGRATION, at: new Date() })
  } catch (error) {
    if (!isDuplicateKeyError(error)) throw error
  }
  return blocked
}

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
          updateOne: {
            filter: { _id, seq: { $exists: false } },
            update: { $set: { seq: top + index + 1, seqBlock: blockOf(top + index + 1) } },
          },
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
    preview: messagePreview(message),
    createdAt: message.createdAt,
  }
}

/** The body's preview, or for a message of attachments only "📎 <first filename>" (and how many more). */
export function messagePreview(message: Pick<MessageDoc, 'body' | 'attachments'>): string {
  const [first, ...others] = message.attachments ?? []
  if (message.body !== '' || !first) return previewOf(message.body)
  return previewOf(`📎 ${first.filename}${others.length > 0 ? ` +${others.length}` : ''}`)
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
  roles: 1,
  createdAt: 1,
  updatedAt: 1,
  version: 1,
  messagesVersion: 1,
  direct: 1,
  mutedBy: 1,
  pins: 1,
} as const

export const MESSAGE_FIELDS = {
  conversationId: 1,
  seq: 1,
  seqBlock: 1,
  senderId: 1,
  body: 1,
  clientMessageId: 1,
  createdAt: 1,
  editedAt: 1,
  deletedAt: 1,
  deletedBy: 1,
  version: 1,
  replyTo: 1,
  thread: 1,
  mentions: 1,
  attachments: 1,
} as const

/** What a page needs of a reaction. */
export const REACTION_FIELDS = { messageId: 1, emoji: 1, userId: 1 } as const

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
    ...(doc.roles && { roles: doc.roles }),
    ...(doc.direct && { direct: doc.direct }),
    ...(doc.mutedBy && { mutedBy: doc.mutedBy }),
    ...(doc.pins && { pins: doc.pins }),
    createdAt,
    updatedAt,
    version: doc.version,
    messagesVersion: doc.messagesVersion,
  }
}
