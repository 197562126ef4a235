import { GroupCommit, type Metrics, newId, problems } from '@parley/common'
import { buildEvent } from '@parley/common/events'
import { BULK_WRITE_CHUNK, insertEach, isDuplicateKeyError, type MongoOutbox } from '@parley/common/mongo'
import type { Collection } from 'mongodb'
import { type ChatCache, LATEST_PAGE_SIZE, type LatestPage } from '../../cache'
import {
  blockOf,
  type ConversationDoc,
  lastMessageOf,
  MESSAGE_FIELDS,
  type MessageDoc,
  previewOf,
  readSeqRange,
} from '../../db'
import { EVENT_SOURCE } from '../conversations/service'
import { type ConversationStore, readMarkerPath } from '../conversations/store'
import {
  MAX_BODY_LENGTH,
  type Message,
  type MessagePage,
  type MessagePageQuery,
  type ReadReceipt,
  type SendMessageBody,
} from './model'

export { previewOf }

/** Inserts tried for one send before giving up (each collision moves past every seq seen taken). */
const SEQ_ATTEMPTS = 200

const SEQ_CURSOR = /^(?:0|[1-9][0-9]*)$/

export function toMessage(doc: MessageDoc): Message {
  return {
    id: doc._id,
    conversationId: doc.conversationId,
    seq: doc.seq,
    senderId: doc.senderId,
    body: doc.body,
    clientMessageId: doc.clientMessageId ?? null,
    createdAt: doc.createdAt.toISOString(),
  }
}

export type SendResult = { created: boolean; message: Message }

export class MessageService {
  private readonly sent
  private readonly seqCollisions
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
  ) {
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
    const body = input.body.trim()
    const length = [...body].length
    if (length === 0 || length > MAX_BODY_LENGTH)
      throw problems.validation([
        { field: 'body.body', message: `Must be 1 to ${MAX_BODY_LENGTH} characters after trimming` },
      ])
    const conversation = await this.store.forParticipant(conversationId, senderId)
    const { clientMessageId } = input
    const idempotencyKey =
      clientMessageId === undefined ? undefined : `${conversationId}:${senderId}:${clientMessageId}`
    const recipientIds = conversation.participantIds.filter((id) => id !== senderId)

    // Sends of one conversation on this replica go one after the other: concurrent ones would
    // all try the same seq and retry in turn (16 at once cost 3 msg/s on FerretDB). Sends from
    // other replicas still meet on the unique index.
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
            preview: previewOf(body),
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
          if (existing) return this.duplicate(conversation, existing)
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
        return message
      }
    })
    if ('created' in sent) return sent
    // Outside the queue: the next send needs only `assigned`, and `$max` takes records in any order.
    await this.record(sent)
    this.sent.inc({ outcome: 'created' })
    return { created: true, message: toMessage(sent) }
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
    return { created: false, message: toMessage(existing) }
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
        items: items.map(toMessage),
        nextCursor: docs.length > limit && last ? String(last.seq) : null,
      }
    }

    let items: MessageDoc[]
    let hasOlder: boolean
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
    }
    const first = items[0]
    return { items: items.map(toMessage), nextCursor: hasOlder && first ? String(first.seq) : null }
  }

  private async loadLatest(conversation: ConversationDoc): Promise<LatestPage> {
    const range = { after: 0, before: conversation.lastSeq + 1, order: -1 } as const
    const docs = await readSeqRange(this.messages, conversation._id, range, LATEST_PAGE_SIZE + 1)
    const page: LatestPage = {
      messagesVersion: conversation.messagesVersion,
      messages: docs.slice(0, LATEST_PAGE_SIZE).reverse(),
      hasOlder: docs.length > LATEST_PAGE_SIZE,
    }
    await this.cache.storeLatestPage(conversation._id, page)
    return page
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
