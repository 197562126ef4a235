import { problems } from '@parley/common'
import { type MongoOutbox, type OutboxChange, outboxChangeUpdate } from '@parley/common/mongo'
import type { CloudEvent } from '@parley/contracts'
import type { Collection, Db, Filter, UpdateFilter } from 'mongodb'
import type { ChatCache } from '../../cache'
import {
  CONVERSATION_FIELDS,
  type ConversationDoc,
  conversationState,
  countSeqRange,
  type MessageDoc,
  numberConversation,
  type Role,
} from '../../db'
import { UNREAD_COUNT_CAP } from './model'

const USER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** How often a change is retried after a concurrent update moved the version under it. */
const CHANGE_ATTEMPTS = 20

/**
 * The document path of a participant's read marker. User ids become field names, so only
 * a lowercase UUID may (no `.` or `$` can reach an update as a path or operator).
 */
export function readMarkerPath(userId: string): `readMarkers.${string}` {
  if (!USER_ID.test(userId)) throw problems.unauthorized('The token subject is not a user id')
  return `readMarkers.${userId}`
}

/** The owners and admins; a conversation from before roles: its creator (else its oldest participant) owns it. */
export function rolesOf(conversation: ConversationDoc): Roles {
  if (conversation.roles) return conversation.roles
  const owner = conversation.participantIds.includes(conversation.createdBy)
    ? conversation.createdBy
    : conversation.participantIds[0]
  return owner === undefined ? {} : { [owner]: 'owner' }
}

export function roleOf(conversation: ConversationDoc, userId: string): Role {
  return rolesOf(conversation)[userId] ?? 'member'
}

export type Roles = Record<string, Exclude<Role, 'member'>>

/**
 * The `$set`/`$unset` of role paths that turn the conversation's roles into `next`. Key by key:
 * FerretDB 1.24 ignores a `$set` of the whole map when the new one has as many keys as the old.
 * A conversation from before roles gets every role of `next` written.
 */
export function rolesUpdate(
  current: ConversationDoc,
  next: Roles,
): { $set: Roles; $unset: Record<string, ''> } {
  const before: Roles = current.roles ?? {}
  const $set: Roles = {}
  const $unset: Record<string, ''> = {}
  for (const [userId, role] of Object.entries(next))
    if (before[userId] !== role) $set[rolePath(userId)] = role
  for (const userId of Object.keys(before)) if (!(userId in next)) $unset[rolePath(userId)] = ''
  return { $set, $unset }
}

function rolePath(userId: string): `roles.${string}` {
  if (!USER_ID.test(userId)) throw problems.unauthorized('The token subject is not a user id')
  return `roles.${userId}`
}

/** The document path of a participant's mute flag (user ids checked as for read markers). */
export function mutePath(userId: string): `mutedBy.${string}` {
  if (!USER_ID.test(userId)) throw problems.unauthorized('The token subject is not a user id')
  return `mutedBy.${userId}`
}

export function isMuted(conversation: ConversationDoc, userId: string): boolean {
  return conversation.mutedBy?.[userId] === true
}

/** 403 unless `userId` owns or administers the conversation. */
export function requireManager(conversation: ConversationDoc, userId: string, action: string): void {
  if (roleOf(conversation, userId) === 'member')
    throw problems.forbidden(`Only owners and admins may ${action}`)
}

/** What a change of a conversation writes, given its current state; null when there is nothing to do. */
export type ConversationChange = {
  /** Conditions beyond id, version and membership (e.g. room for newcomers); unmatched: `onUnmatched`. */
  filter?: Filter<ConversationDoc>
  update: UpdateFilter<ConversationDoc>
  /** Published if and only if the update is applied. */
  event: CloudEvent
  /** Published with it, under the same condition (e.g. the promotion that follows the last owner leaving). */
  also?: readonly CloudEvent[]
}

/**
 * Conversation documents behind the cache: every update goes through `update` or `change`, which
 * bump `version` and store the resulting document in the cache, so readers never need a delete.
 */
export class ConversationStore {
  constructor(
    private readonly db: Db,
    private readonly conversations: Collection<ConversationDoc>,
    private readonly messages: Collection<MessageDoc>,
    private readonly cache: ChatCache,
    private readonly outbox: MongoOutbox,
  ) {}

  async find(id: string): Promise<ConversationDoc | null> {
    const cached = await this.cache.conversation(id)
    // A copy cached by the previous version has no lastSeq: read (and number) the stored one.
    if (cached && typeof cached.lastSeq === 'number') return cached
    return this.load(id)
  }

  /** The stored conversation (cache bypassed and refreshed); numbers it first if the previous version wrote it. */
  async load(id: string): Promise<ConversationDoc | null> {
    let doc = await this.conversations.findOne({ _id: id }, { projection: CONVERSATION_FIELDS })
    if (doc && typeof doc.lastSeq !== 'number') {
      await numberConversation(this.db, id)
      doc = await this.conversations.findOne({ _id: id }, { projection: CONVERSATION_FIELDS })
    }
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
   * A change of the conversation `id` by its participant `userId` that publishes an event: the
   * update is conditional on the version it was computed from and creates the next one, recording
   * the event's id there (the outbox subject), so the event goes out if and only if the update
   * happened. A concurrent update in between: recomputed from the new state. Returns the state
   * after it (or the current one when `plan` has nothing to do); 404 for non-participants,
   * `onUnmatched` when the extra filter does not match.
   */
  async change(
    id: string,
    userId: string,
    plan: (current: ConversationDoc) => ConversationChange | null,
    onUnmatched: () => Error = () => problems.notFound('No such conversation'),
  ): Promise<{ doc: ConversationDoc; event: CloudEvent | null }> {
    let current = await this.forParticipant(id, userId)
    for (let attempt = 1; ; attempt++) {
      const change = plan(current)
      if (!change) return { doc: current, event: null }
      const outboxChange: OutboxChange = { version: current.version + 1, id: change.event.id }
      const recorded = outboxChangeUpdate(outboxChange)
      const events = [change.event, ...(change.also ?? [])]
      await this.outbox.stage(
        { collection: this.conversations.collectionName, id, change: outboxChange },
        events,
      )
      const { update } = change
      let doc: ConversationDoc | null
      try {
        doc = await this.update(
          { ...change.filter, _id: id, participantIds: userId, version: current.version },
          {
            ...update,
            $set: { ...update.$set, ...recorded.$set },
            ...(Object.keys(recorded.$unset).length > 0 && {
              $unset: { ...update.$unset, ...recorded.$unset },
            }),
          },
        )
      } catch (error) {
        await this.outbox.discard(events).catch(() => undefined)
        throw error
      }
      if (doc) {
        this.outbox.committed(events)
        return { doc, event: change.event }
      }
      await this.outbox.discard(events).catch(() => undefined)
      const stored = await this.load(id)
      if (!stored?.participantIds.includes(userId)) throw problems.notFound('No such conversation')
      // Same version: the extra filter did not match; otherwise someone else changed it first.
      if (stored.version === current.version) throw onUnmatched()
      if (attempt >= CHANGE_ATTEMPTS)
        throw problems.serviceUnavailable('The conversation is changing too fast, try again')
      current = stored
    }
  }

  /**
   * Messages from others after the user's read marker, counted up to UNREAD_COUNT_CAP block by
   * block (see countSeqRange). Most calls need no query: the marker is at the newest message.
   */
  async unreadCount(conversation: ConversationDoc, userId: string): Promise<number> {
    const read = conversation.readMarkers[userId]?.seq ?? 0
    if (read >= conversation.lastSeq) return 0
    return countSeqRange(
      this.messages,
      conversation._id,
      { after: read, before: conversation.lastSeq + 1, order: 1 },
      { senderId: { $ne: userId } },
      UNREAD_COUNT_CAP,
    )
  }
}
