import { GroupCommit, type Metrics, newId, problems } from '@parley/common'
import { buildEvent } from '@parley/common/events'
import {
  BULK_WRITE_CHUNK,
  insertEach,
  isDuplicateKeyError,
  type MongoOutbox,
  outboxChangeUpdate,
} from '@parley/common/mongo'
import type { CloudEvent } from '@parley/contracts'
import type { Collection, UpdateFilter } from 'mongodb'
import { type ChatCache, LATEST_PAGE_SIZE, type LatestPage, type PageReaction } from '../../cache'
import {
  blockOf,
  type ConversationDoc,
  type LastMessageDoc,
  lastMessageOf,
  MESSAGE_FIELDS,
  type MessageAttachmentDoc,
  type MessageDoc,
  messagePreview,
  previewOf,
  readSeqRange,
  THREAD_RECENT_REPLIERS,
  type ThreadDoc,
} from '../../db'
import type { MessageAttachment } from '../attachments/model'
import type { AttachmentService } from '../attachments/service'
import { EVENT_SOURCE } from '../conversations/service'
import { type ConversationStore, isMuted, readMarkerPath, roleOf } from '../conversations/store'
import type { PinService } from '../pins/service'
import type { Reaction } from '../reactions/model'
import { type ReactionService, summarize } from '../reactions/service'
import {
  type EditMessageBody,
  MAX_BODY_LENGTH,
  type Message,
  type MessagePage,
  type MessagePageQuery,
  type ReadReceipt,
  type RepliesQuery,
  type SendMessageBody,
} from './model'

export { previewOf }

/** The mentioned ids, each once in the order given; 422 naming `body.mentions.<index>` of each non-participant. */
function mentionsOf(participantIds: readonly string[], requested: readonly string[] = []): string[] {
  const outsiders = requested.flatMap((userId, index) =>
    participantIds.includes(userId)
      ? []
      : [{ field: `body.mentions.${index}`, message: `User ${userId} is not in this conversation` }],
  )
  if (outsiders.length > 0) throw problems.validation(outsiders)
  return [...new Set(requested)]
}

/** Inserts tried for one send before giving up (each collision moves past every seq seen taken). */
const SEQ_ATTEMPTS = 200

const SEQ_CURSOR = /^(?:0|[1-9][0-9]*)$/

/** Versioned updates of one message retried after a concurrent one moved its version. */
const CHANGE_ATTEMPTS = 10

export function toMessage(
  doc: MessageDoc,
  reactions: readonly Reaction[] = [],
  attachments: readonly MessageAttachment[] = [],
): Message {
  return {
    id: doc._id,
    conversationId: doc.conversationId,
    seq: doc.seq,
    senderId: doc.senderId,
    body: doc.body,
    clientMessageId: doc.clientMessageId ?? null,
    createdAt: doc.createdAt.toISOString(),
    editedAt: doc.editedAt?.toISOString() ?? null,
    deletedAt: doc.deletedAt?.toISOString() ?? null,
    // A reaction that raced with the deletion is not shown on the tombstone.
    reactions: doc.deletedAt ? [] : [...reactions],
    replyTo: doc.replyTo ?? null,
    thread: doc.thread
      ? {
          replyCount: doc.thread.replyCount,
          lastReplyAt: doc.thread.lastReplyAt.toISOString(),
          recentReplierIds: doc.thread.recentReplierIds,
        }
      : null,
    mentions: doc.mentions ?? [],
    attachments: doc.deletedAt ? [] : [...attachments],
  }
}

/** The thread summary after `reply` joined it. */
function threadWith(thread: ThreadDoc | undefined, reply: MessageDoc): ThreadDoc {
  const before = thread?.lastReplyAt.getTime() ?? 0
  return {
    replyCount: (thread?.replyCount ?? 0) + 1,
    lastReplyAt: new Date(Math.max(before, reply.createdAt.getTime())),
    recentReplierIds: [
      reply.senderId,
      ...(thread?.recentReplierIds ?? []).filter((userId) => userId !== reply.senderId),
    ].slice(0, THREAD_RECENT_REPLIERS),
  }
}

/**
 * The trimmed body, or 422 naming `body.body` unless it is 1 to MAX_BODY_LENGTH characters (0
 * allowed when the message has attachments).
 */
function validBody(raw: string, emptyAllowed = false): string {
  const body = raw.trim()
  const length = [...body].length
  if ((length === 0 && !emptyAllowed) || length > MAX_BODY_LENGTH)
    throw problems.validation([
      { field: 'body.body', message: `Must be 1 to ${MAX_BODY_LENGTH} characters after trimming` },
    ])
  return body
}

/** The edit window as people say it: whole hours when it is, else seconds. */
function windowText(ms: number): string {
  return ms % 3_600_000 === 0 ? `${ms / 3_600_000} h` : `${Math.round(ms / 1000)} s`
}

/** What an edit or delete writes to a message, and the event published if and only if it is written. */
type MessageChange = { set: Partial<MessageDoc>; event: CloudEvent }

export type MessageRules = {
  /** How long after sending its author may edit a message. */
  editWindowMs: number
}

export const DEFAULT_MESSAGE_RULES: MessageRules = { editWindowMs: 172_800_000 }

export type SendResult = { created: boolean; message: Message }

export class MessageService {
  private readonly sent
  private readonly seqCollisions
  private readonly changes
  private readonly replies
  private readonly mentions
  /** Per conversation: the tail of this replica's queue of sends, and the last seq it assigned. */
  private readonly queues = new Map<string, Promise<void>>()
  private readonly assigned = new Map<string, number>()
  /** Inserts of concurrent sends (of different conversations) share one insertMany. */
  private readonly inserts: GroupCommit<MessageDoc>

  constructor(
    private readonly messages: Collection<MessageDoc>,
    private readonly conversations: Collection<ConversationDoc>,
    private readonly store: ConversationStore,
    private readonly cache: ChatCache,
    private readonly outbox: MongoOutbox,
    metrics: Metrics,
    /** Read for pages; its routes are mounted next to the message routes. */
    readonly reactions: ReactionService,
    /** Its routes are mounted next to the message routes. */
    readonly pins: PinService,
    private readonly rules: MessageRules = DEFAULT_MESSAGE_RULES,
    /** Files in messages; without it (benchmarks of text only) `attachmentIds` is refused. */
    readonly attachments?: AttachmentService,
  ) {
    this.changes = metrics.counter('chat_message_changes_total', 'Message edits and deletes applied', [
      'action',
    ])
    this.replies = metrics.counter('chat_thread_replies_total', 'Replies sent (messages with replyTo)')
    this.mentions = metrics.counter(
      'chat_mentions_total',
      'Users mentioned in sent messages (the sender excluded)',
    )
    this.inserts = new GroupCommit((docs) => insertEach(messages, docs), BULK_WRITE_CHUNK)
    this.sent = metrics.counter('chat_messages_sent_total', 'Message sends by outcome', ['outcome'])
    this.seqCollisions = metrics.counter(
      'chat_message_seq_collisions_total',
      'Message inserts that lost their sequence number to a concurrent send and were retried with the next one',
    )
  }

  /**
   * Inserts the message with the next sequence number: the unique (conversationId, seq) index
   * makes the insert itself the atomic assignment (FerretDB has no atomic `$inc`). A sender tries
   * seq N+1 only after seeing N taken (or recorded in `lastSeq`, written after its insert), so a
   * seq becomes visible only after every lower one: paging `after` a seq never skips, and there
   * are no holes. The `message.sent` event is staged before each attempt for that attempt's
   * message id (a lost attempt's event has no subject and is never published) and published
   * right after its insert, in the conversation's order on this replica. A repeated
   * (sender, clientMessageId) collides on the unique idempotency key and returns the stored
   * message instead, also when the sends race.
   */
  async send(
    senderId: string,
    conversationId: string,
    input: SendMessageBody,
    correlationId?: string,
  ): Promise<SendResult> {
    const attachmentIds = input.attachmentIds ?? []
    const body = validBody(input.body ?? '', attachmentIds.length > 0)
    const conversation = await this.store.forParticipant(conversationId, senderId)
    const { clientMessageId } = input
    const idempotencyKey =
      clientMessageId === undefined ? undefined : `${conversationId}:${senderId}:${clientMessageId}`
    const recipientIds = conversation.participantIds.filter((id) => id !== senderId)
    // Notification skips them: the state rides on the event, so no mute can race with it.
    const mutedUserIds = recipientIds.filter((id) => isMuted(conversation, id))
    const mentions = mentionsOf(conversation.participantIds, input.mentions)
    // The sender mentioning themself notifies nobody.
    const mentionedUserIds = mentions.filter((id) => id !== senderId)
    const replyTo =
      input.replyTo === undefined ? undefined : await this.threadOf(conversationId, input.replyTo)
    if (attachmentIds.length > 0 && idempotencyKey !== undefined) {
      // A resend: its attachments are already the first send's, so the claim below would refuse them.
      const existing = await this.messages.findOne({ idempotencyKey }, { projection: MESSAGE_FIELDS })
      if (existing) return this.duplicate(conversation, existing)
    }
    const attachments = await this.claimAttachments(senderId, attachmentIds, conversationId)
    const claimed = attachments.map((attachment) => attachment.id)
    const preview = messagePreview({ body, attachments })

    // Sends of one conversation on this replica go one after the other: concurrent ones would
    // all try the same seq and retry in turn (16 at once cost 3 msg/s on FerretDB). Sends from
    // other replicas still meet on the unique index.
    // Until the insert, a failure gives the claimed attachments back (after it, they are the message's).
    let inserted = false
    const sent = await this.serially(conversationId, async (): Promise<SendResult | MessageDoc> => {
      // After this replica's previous send of the conversation, which `conversation` may predate.
      let seq = Math.max(conversation.lastSeq, this.assigned.get(conversationId) ?? 0) + 1
      for (let attempt = 1; ; attempt++) {
        const createdAt = new Date()
        const message: MessageDoc = {
          _id: newId(),
          conversationId,
          seq,
          seqBlock: blockOf(seq),
          senderId,
          body,
          ...(idempotencyKey === undefined ? {} : { clientMessageId, idempotencyKey }),
          ...(replyTo === undefined ? {} : { replyTo }),
          ...(mentions.length > 0 && { mentions }),
          ...(attachments.length > 0 && { attachments }),
          createdAt,
        }
        const event = buildEvent(
          EVENT_SOURCE,
          'message.sent',
          {
            messageId: message._id,
            conversationId,
            seq,
            senderId,
            recipientIds,
            mutedUserIds,
            mentionedUserIds,
            ...(replyTo === undefined ? {} : { replyTo }),
            preview,
            ...(attachments.length > 0 && {
              attachments: attachments.map(({ id, contentType, size }) => ({ id, contentType, size })),
            }),
            createdAt: createdAt.toISOString(),
          },
          { correlationId },
        )
        await this.outbox.stage({ collection: this.messages.collectionName, id: message._id }, [event])
        try {
          await this.inserts.add([message])
        } catch (error) {
          // The staged event's message will never exist.
          await this.outbox.discard([event]).catch(() => undefined)
          if (!isDuplicateKeyError(error)) throw error
          const existing =
            idempotencyKey === undefined
              ? null
              : await this.messages.findOne({ idempotencyKey }, { projection: MESSAGE_FIELDS })
          if (existing) {
            await this.attachments?.release(claimed)
            return this.duplicate(conversation, existing)
          }
          // The seq was taken: move past it, and past whatever has been recorded since.
          this.seqCollisions.inc()
          if (attempt >= SEQ_ATTEMPTS)
            throw problems.serviceUnavailable('Too many concurrent messages, try again')
          const stored = await this.conversations.findOne(
            { _id: conversationId },
            { projection: { lastSeq: 1 } },
          )
          const recorded = stored?.lastSeq ?? 0
          if (recorded >= seq) seq = recorded + 1
          // Still behind after a few steps: lastSeq lags what is taken (e.g. a send died before
          // recording it). Ask the index, a scan of the conversation on FerretDB, so only then.
          else if (attempt % 4 === 0) seq = (await this.highestSeq(conversationId, seq)) + 1
          else seq += 1
          continue
        }
        this.assigned.set(conversationId, seq)
        this.outbox.committed([event])
        inserted = true
        // A failure here leaves the claims unbound: the sweep finds their message and binds them.
        if (claimed.length > 0) await this.attachments?.bind(claimed, message._id)
        // In the queue: concurrent updates of one document can lose one on FerretDB, so this
        // replica counts a thread's replies one at a time. Before record: its messagesVersion
        // bump retires a cached page showing the old summary.
        if (replyTo) await this.joinThread(replyTo, message)
        return message
      }
    }).catch(async (error: unknown) => {
      if (!inserted) await this.attachments?.release(claimed).catch(() => undefined)
      throw error
    })
    if ('created' in sent) return sent
    // Outside the queue: the next send needs only `assigned`, and `$max` takes records in any order.
    await this.record(sent)
    this.sent.inc({ outcome: 'created' })
    if (mentionedUserIds.length > 0) this.mentions.inc(mentionedUserIds.length)
    return { created: true, message: toMessage(sent, [], this.attachments?.views(sent.attachments)) }
  }

  /** The message's attachments, checked and claimed (see AttachmentService.claim). */
  private async claimAttachments(
    senderId: string,
    ids: readonly string[],
    conversationId: string,
  ): Promise<MessageAttachmentDoc[]> {
    if (ids.length === 0) return []
    if (!this.attachments)
      throw problems.validation([{ field: 'body.attachmentIds', message: 'Attachments are not enabled' }])
    return this.attachments.claim(senderId, ids, conversationId)
  }

  /** The thread a reply to `messageId` joins: that message's, or its own; 422 naming `body.replyTo` if not here. */
  private async threadOf(conversationId: string, messageId: string): Promise<string> {
    const parent = await this.messages.findOne(
      { _id: messageId, conversationId },
      { projection: { replyTo: 1 } },
    )
    if (!parent)
      throw problems.validation([{ field: 'body.replyTo', message: 'No such message in this conversation' }])
    return parent.replyTo ?? parent._id
  }

  /**
   * Counts `reply` into the summary on its thread's first message, by an update conditional on
   * the count it read (retried when a reply from another replica moved it), key by key (FerretDB
   * ignores a `$set` of a whole embedded document with as many keys).
   */
  private async joinThread(parentId: string, reply: MessageDoc): Promise<void> {
    this.replies.inc()
    for (let attempt = 1; attempt <= CHANGE_ATTEMPTS; attempt++) {
      const parent = await this.messages.findOne(
        { _id: parentId, conversationId: reply.conversationId },
        { projection: { thread: 1 } },
      )
      if (!parent) return
      const next = threadWith(parent.thread, reply)
      const result = await this.messages.updateOne(
        {
          _id: parentId,
          conversationId: reply.conversationId,
          'thread.replyCount': parent.thread ? parent.thread.replyCount : { $exists: false },
        },
        {
          $set: {
            'thread.replyCount': next.replyCount,
            'thread.lastReplyAt': next.lastReplyAt,
            'thread.recentReplierIds': next.recentReplierIds,
          },
        },
      )
      if (result.modifiedCount === 1) return
    }
    throw problems.serviceUnavailable('This thread is changing too fast, try again')
  }

  /**
   * A thread's replies, oldest first, after the `after` cursor: an equality on `replyTo` (its
   * index; FerretDB's lookup), then seq order. 404 for a message not in the conversation.
   */
  async repliesOf(
    callerId: string,
    conversationId: string,
    messageId: string,
    { limit = 50, after }: RepliesQuery,
  ): Promise<MessagePage> {
    const conversation = await this.store.forParticipant(conversationId, callerId)
    const parent = await this.messages.findOne({ _id: messageId, conversationId }, { projection: { _id: 1 } })
    if (!parent) throw problems.notFound('No such message')
    const from = after === undefined ? 0 : Number(after)
    const docs = await this.messages
      .find(
        // Up to the last recorded seq, as `after` pages: a reply not yet recorded is on the next page.
        { replyTo: messageId, conversationId, seq: { $gt: from, $lte: conversation.lastSeq } },
        { projection: MESSAGE_FIELDS },
      )
      .sort({ seq: 1 })
      .limit(limit + 1)
      .toArray()
    const items = docs.slice(0, limit)
    const last = items.at(-1)
    return {
      items: await this.views(items, callerId),
      nextCursor: docs.length > limit && last ? String(last.seq) : null,
    }
  }

  /** Runs `task` after every earlier task of `key` on this replica has settled. */
  private serially<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.queues.get(key) ?? Promise.resolve()
    const run = previous.then(task, task)
    const settled = run.then(
      () => undefined,
      () => undefined,
    )
    this.queues.set(key, settled)
    // The last task of a key removes its queue, so idle conversations cost no memory.
    void settled.then(() => {
      if (this.queues.get(key) === settled) {
        this.queues.delete(key)
        this.assigned.delete(key)
      }
    })
    return run
  }

  /** The highest seq taken: from the block of `from` (taken) on, block by block, to the first empty one. */
  private async highestSeq(conversationId: string, from: number): Promise<number> {
    let highest = from
    for (let block = blockOf(from); ; block++) {
      const top = await this.messages.findOne(
        { conversationId, seqBlock: block },
        { sort: { seq: -1 }, projection: { seq: 1 } },
      )
      if (!top) return highest
      highest = Math.max(highest, top.seq)
    }
  }

  private async duplicate(conversation: ConversationDoc, existing: MessageDoc): Promise<SendResult> {
    // Recording is idempotent and repairs an update lost to a crash; both fields only move
    // forward, so a conversation copy that already shows the message proves it is recorded.
    const recorded =
      conversation.lastSeq >= existing.seq &&
      (conversation.readMarkers[existing.senderId]?.seq ?? 0) >= existing.seq
    if (!recorded) await this.record(existing)
    this.sent.inc({ outcome: 'duplicate' })
    return {
      created: false,
      message: toMessage(existing, [], this.attachments?.views(existing.attachments)),
    }
  }

  /**
   * Makes the message the conversation's last one unless a later one is, moves `lastSeq` and the
   * sender's read marker to it (sending implies having read) and bumps `messagesVersion`.
   */
  private async record(message: MessageDoc): Promise<void> {
    await this.store.update(
      { _id: message.conversationId },
      {
        $max: {
          lastMessage: lastMessageOf(message),
          lastSeq: message.seq,
          updatedAt: message.createdAt,
          [readMarkerPath(message.senderId)]: { seq: message.seq, id: message._id },
        },
        $inc: { messagesVersion: 1 },
      },
    )
  }

  /**
   * The seq a cursor stands for: a seq as such, or (cursors of the previous version) a message
   * id, looked up in this conversation.
   */
  private async cursorSeq(conversationId: string, cursor: string, field: string): Promise<number> {
    if (SEQ_CURSOR.test(cursor)) return Number(cursor)
    const message = await this.messages.findOne({ _id: cursor, conversationId }, { projection: { seq: 1 } })
    if (!message) throw problems.validation([{ field, message: 'No such message in this conversation' }])
    return message.seq
  }

  /**
   * One page, read block by block along the seq (see readSeqRange): its cost does not depend on
   * how deep the cursor is or how long the conversation is, on MongoDB or FerretDB.
   */
  async page(callerId: string, conversationId: string, query: MessagePageQuery): Promise<MessagePage> {
    const { limit = 50, after, before } = query
    if (after !== undefined && before !== undefined)
      throw problems.validation([{ field: 'query.before', message: 'Use either after or before, not both' }])
    const conversation = await this.store.forParticipant(conversationId, callerId)

    if (after !== undefined) {
      const from = await this.cursorSeq(conversationId, after, 'query.after')
      // Up to the last recorded seq: a message inserted but not yet recorded is on the next page.
      const range = { after: from, before: Math.max(conversation.lastSeq, from) + 1, order: 1 } as const
      const docs = await readSeqRange(this.messages, conversationId, range, limit + 1)
      const items = docs.slice(0, limit)
      const last = items.at(-1)
      return {
        items: await this.views(items, callerId),
        nextCursor: docs.length > limit && last ? String(last.seq) : null,
      }
    }

    let items: MessageDoc[]
    let hasOlder: boolean
    let reactions: PageReaction[] | undefined
    if (before !== undefined) {
      const to = await this.cursorSeq(conversationId, before, 'query.before')
      const docs = await readSeqRange(
        this.messages,
        conversationId,
        { after: 0, before: to, order: -1 },
        limit + 1,
      )
      items = docs.slice(0, limit).reverse()
      hasOlder = docs.length > limit
    } else {
      const latest = (await this.cache.latestPage(conversation)) ?? (await this.loadLatest(conversation))
      items = latest.messages.slice(-limit)
      hasOlder = latest.messages.length > limit || latest.hasOlder
      reactions = latest.reactions
    }
    const first = items[0]
    return {
      items: await this.views(items, callerId, reactions),
      nextCursor: hasOlder && first ? String(first.seq) : null,
    }
  }

  /** Message views with their reactions: given (the cached latest page), or read for the page's blocks. */
  private async views(
    docs: readonly MessageDoc[],
    callerId: string,
    known?: readonly PageReaction[],
  ): Promise<Message[]> {
    if (docs.length === 0) return []
    const reactions =
      known ??
      (await this.reactions.ofBlocks(
        docs[0]?.conversationId ?? '',
        docs.map((doc) => doc.seqBlock),
      ))
    const byMessage = summarize(reactions, callerId)
    return docs.map((doc) => toMessage(doc, byMessage.get(doc._id), this.attachments?.views(doc.attachments)))
  }

  private async loadLatest(conversation: ConversationDoc): Promise<LatestPage> {
    const range = { after: 0, before: conversation.lastSeq + 1, order: -1 } as const
    const docs = await readSeqRange(this.messages, conversation._id, range, LATEST_PAGE_SIZE + 1)
    const messages = docs.slice(0, LATEST_PAGE_SIZE).reverse()
    const page: LatestPage = {
      messagesVersion: conversation.messagesVersion,
      messages,
      hasOlder: docs.length > LATEST_PAGE_SIZE,
      reactions: await this.reactions.ofBlocks(
        conversation._id,
        messages.map((message) => message.seqBlock),
      ),
    }
    await this.cache.storeLatestPage(conversation._id, page)
    return page
  }

  /**
   * Replaces the body: the author only, within the edit window (403 otherwise), not on a deleted
   * message (409). The same body again changes nothing. Publishes `message.updated`; the
   * conversation's lastMessage preview follows.
   */
  async edit(
    callerId: string,
    conversationId: string,
    messageId: string,
    input: EditMessageBody,
    correlationId?: string,
  ): Promise<Message> {
    const conversation = await this.store.forParticipant(conversationId, callerId)
    const editedAt = new Date()
    let body = ''
    const { doc, changed } = await this.change(conversationId, messageId, (current) => {
      if (current.deletedAt) throw problems.conflict('The message was deleted')
      if (current.senderId !== callerId) throw problems.forbidden('Only its author may edit a message')
      if (editedAt.getTime() - current.createdAt.getTime() > this.rules.editWindowMs)
        throw problems.forbidden(
          `A message can be edited for ${windowText(this.rules.editWindowMs)} after it was sent`,
        )
      body = validBody(input.body, (current.attachments ?? []).length > 0)
      if (current.body === body) return null
      return {
        set: { body, editedAt },
        event: buildEvent(
          EVENT_SOURCE,
          'message.updated',
          {
            messageId,
            conversationId,
            seq: current.seq,
            senderId: current.senderId,
            participantIds: conversation.participantIds,
            preview: messagePreview({ body, attachments: current.attachments }),
            editedAt: editedAt.toISOString(),
          },
          { correlationId },
        ),
      }
    })
    if (changed) {
      this.changes.inc({ action: 'edit' })
      await this.touch(conversationId, messageId, { preview: messagePreview(doc) })
    }
    return (await this.views([doc], callerId))[0] as Message
  }

  /**
   * Leaves a tombstone (body emptied, reactions removed, seq kept, so pages and resume stay
   * consistent): the author, or an owner or admin (403 otherwise). Deleting a tombstone changes
   * nothing. Publishes `message.deleted`.
   */
  async delete(callerId: string, conversationId: string, messageId: string, correlationId?: string) {
    const conversation = await this.store.forParticipant(conversationId, callerId)
    const deletedAt = new Date()
    let attachments: MessageAttachmentDoc[] = []
    const { doc, changed } = await this.change(conversationId, messageId, (current) => {
      if (current.deletedAt) return null
      attachments = current.attachments ?? []
      if (current.senderId !== callerId && roleOf(conversation, callerId) === 'member')
        throw problems.forbidden('Only its author, owners and admins may delete a message')
      return {
        set: { body: '', deletedAt, deletedBy: callerId, ...(attachments.length > 0 && { attachments: [] }) },
        event: buildEvent(
          EVENT_SOURCE,
          'message.deleted',
          {
            messageId,
            conversationId,
            seq: current.seq,
            senderId: current.senderId,
            deletedBy: callerId,
            participantIds: conversation.participantIds,
            deletedAt: deletedAt.toISOString(),
          },
          { correlationId },
        ),
      }
    })
    if (!changed) return
    this.changes.inc({ action: 'delete' })
    await this.attachments?.removeOf({ _id: doc._id, attachments })
    await this.reactions.removeAll(doc)
    await this.touch(conversationId, messageId, { preview: '', deleted: true })
  }

  /**
   * Applies `plan`'s change to a message by an update conditional on the version it was planned
   * from, which records the event's id at the next version (the outbox subject): the event goes
   * out if and only if the update happened. 404 for a message not in the conversation.
   */
  private async change(
    conversationId: string,
    messageId: string,
    plan: (current: MessageDoc) => MessageChange | null,
  ): Promise<{ doc: MessageDoc; changed: boolean }> {
    for (let attempt = 1; attempt <= CHANGE_ATTEMPTS; attempt++) {
      const current = await this.messages.findOne(
        { _id: messageId, conversationId },
        { projection: MESSAGE_FIELDS },
      )
      if (!current) throw problems.notFound('No such message')
      const change = plan(current)
      if (!change) return { doc: current, changed: false }
      const version = (current.version ?? 0) + 1
      const outboxChange = { version, id: change.event.id }
      const recorded = outboxChangeUpdate(outboxChange)
      await this.outbox.stage(
        { collection: this.messages.collectionName, id: messageId, change: outboxChange },
        [change.event],
      )
      const update: UpdateFilter<MessageDoc> = {
        $set: { ...change.set, version, ...recorded.$set },
        ...(Object.keys(recorded.$unset).length > 0 && { $unset: recorded.$unset }),
      }
      let updated: MessageDoc | null
      try {
        updated = await this.messages.findOneAndUpdate(
          {
            _id: messageId,
            conversationId,
            version: current.version === undefined ? { $exists: false } : current.version,
          },
          update,
          { returnDocument: 'after' },
        )
      } catch (error) {
        await this.outbox.discard([change.event]).catch(() => undefined)
        throw error
      }
      if (updated) {
        this.outbox.committed([change.event])
        return { doc: updated, changed: true }
      }
      await this.outbox.discard([change.event]).catch(() => undefined)
    }
    throw problems.serviceUnavailable('The message is changing too fast, try again')
  }

  /**
   * After a change of a message: bumps `messagesVersion` (retires the cached latest page) and,
   * while it is the conversation's last message, updates that copy too.
   */
  private async touch(conversationId: string, messageId: string, last: Partial<LastMessageDoc>) {
    const set = Object.fromEntries(
      Object.entries(last).map(([field, value]) => [`lastMessage.${field}`, value]),
    )
    const updated = await this.store.update(
      { _id: conversationId, 'lastMessage.id': messageId },
      { $set: set, $inc: { messagesVersion: 1 } },
    )
    if (!updated) await this.store.update({ _id: conversationId }, { $inc: { messagesVersion: 1 } })
  }

  /**
   * Moves the caller's read marker forward to `messageId` by seq (never back) and returns the
   * unread count; publishes `conversation.read` only when the marker moved.
   */
  async markRead(
    callerId: string,
    conversationId: string,
    messageId: string,
    correlationId?: string,
  ): Promise<ReadReceipt> {
    await this.store.forParticipant(conversationId, callerId)
    const message = await this.messages.findOne(
      { _id: messageId, conversationId },
      { projection: { seq: 1 } },
    )
    if (!message)
      throw problems.validation([
        { field: 'body.messageId', message: 'No such message in this conversation' },
      ])
    const readAt = new Date()
    const { doc } = await this.store.change(conversationId, callerId, (current) => {
      if ((current.readMarkers[callerId]?.seq ?? 0) >= message.seq) return null
      return {
        update: { $max: { [readMarkerPath(callerId)]: { seq: message.seq, id: message._id } } },
        event: buildEvent(
          EVENT_SOURCE,
          'conversation.read',
          {
            conversationId,
            userId: callerId,
            seq: message.seq,
            messageId: message._id,
            participantIds: current.participantIds,
            readAt: readAt.toISOString(),
          },
          { correlationId },
        ),
      }
    })
    const marker = doc.readMarkers[callerId] ?? { seq: message.seq, id: message._id }
    return {
      conversationId,
      lastReadMessageId: marker.id,
      lastReadSeq: marker.seq,
      unreadCount: await this.store.unreadCount(doc, callerId),
    }
  }
}
