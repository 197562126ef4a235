import { type Metrics, newId, problems } from '@parley/common'
import { buildEvent } from '@parley/common/events'
import { isDuplicateKeyError, type MongoOutbox } from '@parley/common/mongo'
import { MESSAGE_PREVIEW_LENGTH } from '@parley/contracts'
import type { Collection } from 'mongodb'
import { type ChatCache, LATEST_PAGE_SIZE, type LatestPage } from '../../cache'
import { type ConversationDoc, MESSAGE_FIELDS, type MessageDoc } from '../../db'
import { EVENT_SOURCE, type RelayKick } from '../conversations/service'
import { type ConversationStore, readMarkerPath } from '../conversations/store'
import {
  MAX_BODY_LENGTH,
  type Message,
  type MessagePage,
  type MessagePageQuery,
  type ReadReceipt,
  type SendMessageBody,
} from './model'

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

export function toMessage(doc: MessageDoc): Message {
  return {
    id: doc._id,
    conversationId: doc.conversationId,
    senderId: doc.senderId,
    body: doc.body,
    clientMessageId: doc.clientMessageId ?? null,
    createdAt: doc.createdAt.toISOString(),
  }
}

export type SendResult = { created: boolean; message: Message }

export class MessageService {
  private readonly sent

  constructor(
    private readonly messages: Collection<MessageDoc>,
    private readonly store: ConversationStore,
    private readonly cache: ChatCache,
    private readonly outbox: MongoOutbox,
    private readonly relay: RelayKick,
    metrics: Metrics,
  ) {
    this.sent = metrics.counter('chat_messages_sent_total', 'Message sends by outcome', ['outcome'])
  }

  /**
   * Stages the `message.sent` event for the message, then inserts it. A repeated
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

    const createdAt = new Date()
    const { clientMessageId } = input
    const idempotencyKey =
      clientMessageId === undefined ? undefined : `${conversationId}:${senderId}:${clientMessageId}`
    const message: MessageDoc = {
      _id: newId(),
      conversationId,
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
        senderId,
        recipientIds: conversation.participantIds.filter((id) => id !== senderId),
        preview: previewOf(body),
        createdAt: createdAt.toISOString(),
      },
      { correlationId },
    )
    await this.outbox.stage({ collection: this.messages.collectionName, id: message._id }, [event])
    try {
      await this.messages.insertOne(message)
    } catch (error) {
      // The staged event's message will never exist.
      await this.outbox.discard([event]).catch(() => undefined)
      if (idempotencyKey === undefined || !isDuplicateKeyError(error)) throw error
      const existing = await this.messages.findOne({ idempotencyKey }, { projection: MESSAGE_FIELDS })
      if (!existing) throw error
      // Recording is idempotent and repairs an update lost to a crash; both fields only move
      // forward, so a conversation copy that already shows the message proves it is recorded.
      const recorded =
        (conversation.lastMessage?.id ?? '') >= existing._id &&
        (conversation.readMarkers[senderId] ?? '') >= existing._id
      if (!recorded) await this.record(existing)
      this.sent.inc({ outcome: 'duplicate' })
      return { created: false, message: toMessage(existing) }
    }
    this.relay.kick()
    await this.record(message)
    this.sent.inc({ outcome: 'created' })
    return { created: true, message: toMessage(message) }
  }

  /**
   * Makes the message the conversation's last one unless a newer one is, moves the sender's
   * read marker to it (sending implies having read) and bumps `messagesVersion`.
   */
  private async record(message: MessageDoc): Promise<void> {
    await this.store.update(
      { _id: message.conversationId },
      {
        $max: {
          lastMessage: {
            id: message._id,
            senderId: message.senderId,
            preview: previewOf(message.body),
            createdAt: message.createdAt,
          },
          updatedAt: message.createdAt,
          [readMarkerPath(message.senderId)]: message._id,
        },
        $inc: { messagesVersion: 1 },
      },
    )
  }

  /** One page along the (conversationId, _id) index: cost independent of how deep the cursor is. */
  async page(callerId: string, conversationId: string, query: MessagePageQuery): Promise<MessagePage> {
    const { limit = 50, after, before } = query
    if (after !== undefined && before !== undefined)
      throw problems.validation([{ field: 'query.before', message: 'Use either after or before, not both' }])
    const conversation = await this.store.forParticipant(conversationId, callerId)

    if (after !== undefined) {
      const docs = await this.messages
        .find({ conversationId, _id: { $gt: after } }, { projection: MESSAGE_FIELDS })
        .sort({ _id: 1 })
        .limit(limit + 1)
        .toArray()
      const items = docs.slice(0, limit)
      return {
        items: items.map(toMessage),
        nextCursor: docs.length > limit ? (items.at(-1)?._id ?? null) : null,
      }
    }

    let items: MessageDoc[]
    let hasOlder: boolean
    if (before !== undefined) {
      const docs = await this.messages
        .find({ conversationId, _id: { $lt: before } }, { projection: MESSAGE_FIELDS })
        .sort({ _id: -1 })
        .limit(limit + 1)
        .toArray()
      items = docs.slice(0, limit).reverse()
      hasOlder = docs.length > limit
    } else {
      const latest = (await this.cache.latestPage(conversation)) ?? (await this.loadLatest(conversation))
      items = latest.messages.slice(-limit)
      hasOlder = latest.messages.length > limit || latest.hasOlder
    }
    return { items: items.map(toMessage), nextCursor: hasOlder ? (items[0]?._id ?? null) : null }
  }

  private async loadLatest(conversation: ConversationDoc): Promise<LatestPage> {
    const docs = await this.messages
      .find({ conversationId: conversation._id }, { projection: MESSAGE_FIELDS })
      .sort({ _id: -1 })
      .limit(LATEST_PAGE_SIZE + 1)
      .toArray()
    const page: LatestPage = {
      messagesVersion: conversation.messagesVersion,
      messages: docs.slice(0, LATEST_PAGE_SIZE).reverse(),
      hasOlder: docs.length > LATEST_PAGE_SIZE,
    }
    await this.cache.storeLatestPage(conversation._id, page)
    return page
  }

  /** Moves the caller's read marker forward to `messageId` (never back) and returns the unread count. */
  async markRead(callerId: string, conversationId: string, messageId: string): Promise<ReadReceipt> {
    await this.store.forParticipant(conversationId, callerId)
    const message = await this.messages.findOne({ _id: messageId }, { projection: { conversationId: 1 } })
    if (message?.conversationId !== conversationId)
      throw problems.validation([
        { field: 'body.messageId', message: 'No such message in this conversation' },
      ])
    const conversation = await this.store.update(
      { _id: conversationId, participantIds: callerId },
      { $max: { [readMarkerPath(callerId)]: messageId } },
    )
    if (!conversation) throw problems.notFound('No such conversation')
    return {
      conversationId,
      lastReadMessageId: conversation.readMarkers[callerId] ?? messageId,
      unreadCount: await this.store.unreadCount(conversation, callerId),
    }
  }
}
