import { problems } from '@parley/common'
import type { Collection, Filter, UpdateFilter } from 'mongodb'
import type { ChatCache } from '../../cache'
import { CONVERSATION_FIELDS, type ConversationDoc, conversationState, type MessageDoc } from '../../db'
import { UNREAD_COUNT_CAP } from './model'

const USER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/**
 * The document path of a participant's read marker. User ids become field names, so only
 * a lowercase UUID may (no `.` or `$` can reach an update as a path or operator).
 */
export function readMarkerPath(userId: string): `readMarkers.${string}` {
  if (!USER_ID.test(userId)) throw problems.unauthorized('The token subject is not a user id')
  return `readMarkers.${userId}`
}

/**
 * Conversation documents behind the cache: every update goes through `update`, which bumps
 * `version` and stores the resulting document in the cache, so readers never need a delete.
 */
export class ConversationStore {
  constructor(
    private readonly conversations: Collection<ConversationDoc>,
    private readonly messages: Collection<MessageDoc>,
    private readonly cache: ChatCache,
  ) {}

  async find(id: string): Promise<ConversationDoc | null> {
    const cached = await this.cache.conversation(id)
    if (cached) return cached
    const doc = await this.conversations.findOne({ _id: id }, { projection: CONVERSATION_FIELDS })
    if (doc) await this.cache.storeConversation(doc)
    return doc
  }

  /** The conversation, or a 404 problem when it does not exist or `userId` is not in it (no leak). */
  async forParticipant(id: string, userId: string): Promise<ConversationDoc> {
    const doc = await this.find(id)
    if (!doc?.participantIds.includes(userId)) throw problems.notFound('No such conversation')
    return doc
  }

  async remember(doc: ConversationDoc): Promise<void> {
    await this.cache.storeConversation(doc)
  }

  /** Applies `update` (plus a version bump) to the one document matching `filter`; null if none. */
  async update(
    filter: Filter<ConversationDoc> & { _id: string },
    update: UpdateFilter<ConversationDoc>,
  ): Promise<ConversationDoc | null> {
    const updated = await this.conversations.findOneAndUpdate(
      filter,
      { ...update, $inc: { ...update.$inc, version: 1 } },
      { returnDocument: 'after' },
    )
    if (!updated) return null
    const doc = conversationState(updated)
    await this.cache.storeConversation(doc)
    return doc
  }

  /**
   * Messages from others after the user's read marker, counted up to UNREAD_COUNT_CAP along
   * the (conversationId, _id) index. Most calls need no query: the marker is at the newest message.
   */
  async unreadCount(conversation: ConversationDoc, userId: string): Promise<number> {
    const { lastMessage } = conversation
    const marker = conversation.readMarkers[userId]
    if (!lastMessage || (marker !== undefined && marker >= lastMessage.id)) return 0
    return this.messages.countDocuments(
      {
        conversationId: conversation._id,
        senderId: { $ne: userId },
        ...(marker === undefined ? {} : { _id: { $gt: marker } }),
      },
      { limit: UNREAD_COUNT_CAP },
    )
  }
}
