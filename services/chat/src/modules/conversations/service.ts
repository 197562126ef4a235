import { type Metrics, newId, problems } from '@parley/common'
import { buildEvent } from '@parley/common/events'
import { isDuplicateKeyError, type MongoOutbox } from '@parley/common/mongo'
import type { CloudEvent } from '@parley/contracts'
import type { Collection } from 'mongodb'
import { CONVERSATION_FIELDS, type ConversationDoc, type Role } from '../../db'
import type { BlockService } from '../blocks/service'
import type { UserDirectory } from '../users/service'
import {
  type Conversation,
  type ConversationPage,
  type CreateConversationBody,
  MAX_PARTICIPANTS,
} from './model'
import {
  type ConversationChange,
  type ConversationStore,
  isMuted,
  mutePath,
  readMarkerPath,
  requireManager,
  roleOf,
  rolesOf,
  rolesUpdate,
} from './store'

export const EVENT_SOURCE = 'parley/chat'

type ListCursor = { updatedAt: Date; id: string }

function encodeCursor({ updatedAt, id }: ListCursor): string {
  return Buffer.from(JSON.stringify([updatedAt.getTime(), id])).toString('base64url')
}

const CURSOR_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** Decodes a list cursor into typed values (never an object that could reach a query), or 422. */
function decodeCursor(cursor: string): ListCursor {
  try {
    const value: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'))
    if (Array.isArray(value) && value.length === 2) {
      const [time, id] = value as unknown[]
      if (Number.isSafeInteger(time) && typeof id === 'string' && CURSOR_ID.test(id))
        return { updatedAt: new Date(time as number), id }
    }
  } catch {}
  throw problems.validation([{ field: 'query.cursor', message: 'Invalid cursor' }])
}

function normalizeTitle(title: string | null | undefined): string | null {
  const trimmed = title?.trim()
  return trimmed ? trimmed : null
}

function unknownUsersProblem(field: string, requested: readonly string[], unknown: readonly string[]) {
  return problems.validation(
    unknown.map((id) => ({ field: `${field}.${requested.indexOf(id)}`, message: `Unknown user ${id}` })),
    `Unknown users: ${unknown.join(', ')}`,
  )
}

/** The unique key of a direct conversation: the pair, sorted. */
export function directKeyOf(a: string, b: string): string {
  return [a, b].sort().join(':')
}

export type CreateResult = { created: boolean; conversation: Conversation }

export class ConversationService {
  private readonly directs
  private readonly mutes

  constructor(
    private readonly conversations: Collection<ConversationDoc>,
    private readonly store: ConversationStore,
    private readonly users: UserDirectory,
    private readonly outbox: MongoOutbox,
    /** Checked on creation and additions; its routes are mounted next to the conversation routes. */
    readonly blocks: BlockService,
    metrics: Metrics,
  ) {
    this.directs = metrics.counter(
      'chat_direct_conversations_total',
      'Direct conversation requests: a new one created, or the existing one of the pair returned',
      ['outcome'],
    )
    this.mutes = metrics.counter(
      'chat_mutes_total',
      'Mutes and unmutes that changed something (repeats are not counted)',
      ['action'],
    )
  }

  /** A group conversation, or (`direct`) the one of the pair, created if there is none (see createDirect). */
  async create(
    callerId: string,
    input: CreateConversationBody,
    correlationId?: string,
  ): Promise<CreateResult> {
    if (input.direct === true) return this.createDirect(callerId, input, correlationId)
    const participantIds = [...new Set([callerId, ...input.participantIds])]
    if (participantIds.length > MAX_PARTICIPANTS)
      throw problems.validation([
        {
          field: 'body.participantIds',
          message: `A conversation has at most ${MAX_PARTICIPANTS} participants, the caller included`,
        },
      ])
    const others = participantIds.filter((id) => id !== callerId)
    const unknown = await this.users.unknownIds(others)
    if (unknown.length > 0) throw unknownUsersProblem('body.participantIds', input.participantIds, unknown)
    await this.blocks.requireNotBlockedBy(callerId, others, 'body.participantIds', input.participantIds)
    const doc = await this.insert(this.newConversation(callerId, participantIds, input.title), correlationId)
    return { created: true, conversation: await this.view(callerId, doc) }
  }

  /**
   * The direct conversation of the caller and the one other user: the existing one of the pair,
   * else a new one. Exactly one is ever created: the pair's sorted ids are a unique key
   * (`directKey`), so of concurrent inserts one wins and the others return its conversation.
   * 403 when the other user blocked the caller (an existing one is still returned).
   */
  private async createDirect(
    callerId: string,
    input: CreateConversationBody,
    correlationId: string | undefined,
  ): Promise<CreateResult> {
    const [otherId, ...more] = input.participantIds
    if (otherId === undefined || more.length > 0 || otherId === callerId)
      throw problems.validation([
        {
          field: 'body.participantIds',
          message: 'A direct conversation takes exactly one other user',
        },
      ])
    if ((await this.users.unknownIds([otherId])).length > 0)
      throw unknownUsersProblem('body.participantIds', input.participantIds, [otherId])
    const directKey = directKeyOf(callerId, otherId)
    const existing = await this.directOf(directKey)
    if (existing) return this.existingDirect(callerId, existing)
    await this.blocks.requireNotBlockedBy(callerId, [otherId], 'body.participantIds', input.participantIds)
    const doc: ConversationDoc = {
      ...this.newConversation(callerId, [callerId, otherId], input.title),
      // Both own it: there is nobody else to manage it.
      roles: { [callerId]: 'owner', [otherId]: 'owner' },
      direct: true,
      directKey,
    }
    try {
      const created = await this.insert(doc, correlationId)
      this.directs.inc({ outcome: 'created' })
      return { created: true, conversation: await this.view(callerId, created) }
    } catch (error) {
      if (!isDuplicateKeyError(error)) throw error
      // A concurrent request created it first.
      const winner = await this.directOf(directKey)
      if (!winner) throw problems.conflict('The direct conversation changed meanwhile, try again')
      return this.existingDirect(callerId, winner)
    }
  }

  private async existingDirect(callerId: string, doc: ConversationDoc): Promise<CreateResult> {
    this.directs.inc({ outcome: 'existing' })
    return { created: false, conversation: await this.view(callerId, doc) }
  }

  /** The direct conversation holding `directKey`: an equality on its unique index. */
  private async directOf(directKey: string): Promise<ConversationDoc | null> {
    const found = await this.conversations.findOne({ directKey }, { projection: { _id: 1 } })
    return found ? this.store.find(found._id) : null
  }

  private newConversation(
    callerId: string,
    participantIds: string[],
    title: string | null | undefined,
  ): ConversationDoc {
    const now = new Date()
    return {
      _id: newId(),
      title: normalizeTitle(title),
      createdBy: callerId,
      participantIds,
      readMarkers: {},
      lastMessage: null,
      lastSeq: 0,
      roles: { [callerId]: 'owner' },
      createdAt: now,
      updatedAt: now,
      version: 1,
      messagesVersion: 0,
    }
  }

  /** Inserts a new conversation with its `conversation.created` (published if and only if inserted). */
  private async insert(doc: ConversationDoc, correlationId: string | undefined): Promise<ConversationDoc> {
    const event = buildEvent(
      EVENT_SOURCE,
      'conversation.created',
      {
        conversationId: doc._id,
        title: doc.title,
        createdBy: doc.createdBy,
        participantIds: doc.participantIds,
        ...(doc.direct && { direct: true }),
        createdAt: doc.createdAt.toISOString(),
      },
      { correlationId },
    )
    await this.outbox.stage({ collection: this.conversations.collectionName, id: doc._id }, [event])
    await this.conversations.insertOne(doc).catch(async (error: unknown) => {
      await this.outbox.discard([event]).catch(() => undefined)
      throw error
    })
    this.outbox.committed([event])
    const { directKey: _key, ...state } = doc
    await this.store.remember(state)
    return state
  }

  /**
   * Mutes (or unmutes) the conversation for the caller: no email or in-app notification for it
   * (`message.sent` names the muted recipients); unread counts still move. Publishes
   * `conversation.muted` / `conversation.unmuted` (to the caller's devices) when it changed.
   */
  async setMuted(
    callerId: string,
    id: string,
    muted: boolean,
    correlationId?: string,
  ): Promise<Conversation> {
    const at = new Date()
    const { doc, event } = await this.store.change(id, callerId, (current) => {
      if (isMuted(current, callerId) === muted) return null
      return {
        update: muted ? { $set: { [mutePath(callerId)]: true } } : { $unset: { [mutePath(callerId)]: '' } },
        event: buildEvent(
          EVENT_SOURCE,
          muted ? 'conversation.muted' : 'conversation.unmuted',
          { conversationId: id, userId: callerId, at: at.toISOString() },
          { correlationId },
        ),
      }
    })
    if (event) this.mutes.inc({ action: muted ? 'mute' : 'unmute' })
    return this.view(callerId, doc)
  }

  async list(callerId: string, { limit = 20, cursor }: { limit?: number; cursor?: string }) {
    const after = cursor === undefined ? undefined : decodeCursor(cursor)
    const docs = await this.conversations
      .find(
        {
          participantIds: callerId,
          ...(after && {
            $or: [
              { updatedAt: { $lt: after.updatedAt } },
              { updatedAt: after.updatedAt, _id: { $lt: after.id } },
            ],
          }),
        },
        { projection: CONVERSATION_FIELDS },
      )
      .sort({ updatedAt: -1, _id: -1 })
      .limit(limit + 1)
      .toArray()
    const page = docs.slice(0, limit)
    const last = page.at(-1)
    return {
      items: await this.views(callerId, page),
      nextCursor:
        docs.length > limit && last ? encodeCursor({ updatedAt: last.updatedAt, id: last._id }) : null,
    } satisfies ConversationPage
  }

  async get(callerId: string, id: string): Promise<Conversation> {
    return this.view(callerId, await this.store.forParticipant(id, callerId))
  }

  /** Renames (null clears the title); publishes `conversation.updated`. */
  async rename(callerId: string, id: string, title: string | null, correlationId?: string) {
    const updatedAt = new Date()
    const { doc } = await this.store.change(id, callerId, (current) => {
      requireManager(current, callerId, 'rename the conversation')
      return {
        update: { $set: { title: normalizeTitle(title) }, $max: { updatedAt } },
        event: buildEvent(
          EVENT_SOURCE,
          'conversation.updated',
          {
            conversationId: id,
            title: normalizeTitle(title),
            updatedBy: callerId,
            participantIds: current.participantIds,
            updatedAt: updatedAt.toISOString(),
          },
          { correlationId },
        ),
      }
    })
    return this.view(callerId, doc)
  }

  /** Adds known users (ids already in the conversation are ignored); publishes `conversation.participants_added`. */
  async addParticipants(
    callerId: string,
    id: string,
    userIds: readonly string[],
    correlationId?: string,
  ): Promise<Conversation> {
    requireManager(await this.store.forParticipant(id, callerId), callerId, 'add participants')
    const requested = [...new Set(userIds)]
    const unknown = await this.users.unknownIds(requested)
    if (unknown.length > 0) throw unknownUsersProblem('body.userIds', userIds, unknown)
    await this.blocks.requireNotBlockedBy(callerId, requested, 'body.userIds', userIds)
    const tooMany = () =>
      problems.validation([
        { field: 'body.userIds', message: `A conversation has at most ${MAX_PARTICIPANTS} participants` },
      ])
    const addedAt = new Date()
    const { doc } = await this.store.change(
      id,
      callerId,
      (current) => {
        if (current.direct) throw problems.conflict('A direct conversation cannot gain participants')
        requireManager(current, callerId, 'add participants')
        const added = requested.filter((userId) => !current.participantIds.includes(userId))
        if (added.length === 0) return null
        if (current.participantIds.length + added.length > MAX_PARTICIPANTS) throw tooMany()
        // Newcomers start with the history read, so it does not show up as unread.
        const last = current.lastMessage
        const markers = last
          ? Object.fromEntries(
              added.map((userId) => [readMarkerPath(userId), { seq: last.seq, id: last.id }]),
            )
          : {}
        return {
          // Room for every newcomer: no element at that index (the version check already rules out
          // concurrent additions on MongoDB; this keeps the limit where updates are not atomic).
          filter: { [`participantIds.${MAX_PARTICIPANTS - added.length}`]: { $exists: false } },
          update: {
            $addToSet: { participantIds: { $each: added } },
            $max: { updatedAt: addedAt, ...markers },
          },
          event: buildEvent(
            EVENT_SOURCE,
            'conversation.participants_added',
            {
              conversationId: id,
              addedBy: callerId,
              userIds: added,
              participantIds: [...current.participantIds, ...added],
              addedAt: addedAt.toISOString(),
            },
            { correlationId },
          ),
        }
      },
      tooMany,
    )
    return this.view(callerId, doc)
  }

  /**
   * Removes the caller; publishes `conversation.participant_left`. The last owner leaving makes
   * the oldest admin (or, without admins, the oldest member) the owner: `conversation.role_changed`.
   */
  async leave(callerId: string, id: string, correlationId?: string): Promise<void> {
    await this.store.change(id, callerId, (current) =>
      this.departure(current, callerId, undefined, correlationId),
    )
  }

  /**
   * Removes another participant: owners remove anyone, admins remove members. The caller
   * removing themselves is leaving. 404 when `userId` is not a participant.
   */
  async removeParticipant(
    callerId: string,
    id: string,
    userId: string,
    correlationId?: string,
  ): Promise<void> {
    if (userId === callerId) return this.leave(callerId, id, correlationId)
    await this.store.change(id, callerId, (current) => {
      requireManager(current, callerId, 'remove participants')
      if (!current.participantIds.includes(userId)) throw problems.notFound('No such participant')
      if (roleOf(current, callerId) !== 'owner' && roleOf(current, userId) !== 'member')
        throw problems.forbidden('Only owners may remove owners and admins')
      return this.departure(current, userId, callerId, correlationId)
    })
  }

  /** `userId` leaves `current` (removed by `removedBy`, or of their own accord), with the promotion it may need. */
  private departure(
    current: ConversationDoc,
    userId: string,
    removedBy: string | undefined,
    correlationId: string | undefined,
  ): ConversationChange {
    const leftAt = new Date()
    const participantIds = current.participantIds.filter((participant) => participant !== userId)
    const roles = { ...rolesOf(current) }
    delete roles[userId]
    const also: CloudEvent[] = []
    if (participantIds.length > 0 && !Object.values(roles).includes('owner')) {
      const heir = participantIds.find((participant) => roles[participant] === 'admin') ?? participantIds[0]
      if (heir !== undefined) {
        roles[heir] = 'owner'
        also.push(
          buildEvent(
            EVENT_SOURCE,
            'conversation.role_changed',
            {
              conversationId: current._id,
              userId: heir,
              role: 'owner',
              participantIds,
              changedAt: leftAt.toISOString(),
            },
            { correlationId },
          ),
        )
      }
    }
    const roleChanges = rolesUpdate(current, roles)
    return {
      update: {
        $pullAll: { participantIds: [userId] },
        $unset: {
          [readMarkerPath(userId)]: '',
          ...(isMuted(current, userId) && { [mutePath(userId)]: '' }),
          // The pair may start a new direct conversation once one of them left this one.
          ...(current.direct && { directKey: '' }),
          ...roleChanges.$unset,
        },
        ...(Object.keys(roleChanges.$set).length > 0 && { $set: roleChanges.$set }),
      },
      event: buildEvent(
        EVENT_SOURCE,
        'conversation.participant_left',
        {
          conversationId: current._id,
          userId,
          participantIds,
          ...(removedBy && { removedBy }),
          leftAt: leftAt.toISOString(),
        },
        { correlationId },
      ),
      also,
    }
  }

  /**
   * Sets a participant's role (owners only); publishes `conversation.role_changed` when it
   * changed. 409 when it would leave the conversation without an owner.
   */
  async setRole(
    callerId: string,
    id: string,
    userId: string,
    role: Role,
    correlationId?: string,
  ): Promise<Conversation> {
    const changedAt = new Date()
    const { doc } = await this.store.change(id, callerId, (current) => {
      if (roleOf(current, callerId) !== 'owner') throw problems.forbidden('Only owners may change roles')
      if (!current.participantIds.includes(userId)) throw problems.notFound('No such participant')
      if (roleOf(current, userId) === role) return null
      const roles = { ...rolesOf(current) }
      if (role === 'member') delete roles[userId]
      else roles[userId] = role
      if (!Object.values(roles).includes('owner'))
        throw problems.conflict('The conversation needs an owner: make someone else owner first')
      const { $set, $unset } = rolesUpdate(current, roles)
      return {
        update: { $set, ...(Object.keys($unset).length > 0 && { $unset }) },
        event: buildEvent(
          EVENT_SOURCE,
          'conversation.role_changed',
          {
            conversationId: id,
            userId,
            role,
            changedBy: callerId,
            participantIds: current.participantIds,
            changedAt: changedAt.toISOString(),
          },
          { correlationId },
        ),
      }
    })
    return this.view(callerId, doc)
  }

  private async view(callerId: string, doc: ConversationDoc): Promise<Conversation> {
    const [view] = await this.views(callerId, [doc])
    return view as Conversation
  }

  /** API views of several conversations: one display-name query, unread counts in parallel. */
  private async views(callerId: string, docs: readonly ConversationDoc[]): Promise<Conversation[]> {
    const names = await this.users.displayNames(docs.flatMap((doc) => doc.participantIds))
    return Promise.all(
      docs.map(async (doc) => ({
        id: doc._id,
        title: doc.title,
        createdBy: doc.createdBy,
        direct: doc.direct === true,
        muted: isMuted(doc, callerId),
        participants: doc.participantIds.map((userId) => ({
          userId,
          displayName: names.get(userId) ?? null,
          lastReadMessageId: doc.readMarkers[userId]?.id ?? null,
          lastReadSeq: doc.readMarkers[userId]?.seq ?? null,
          role: roleOf(doc, userId),
        })),
        lastMessage: doc.lastMessage && {
          id: doc.lastMessage.id,
          seq: doc.lastMessage.seq,
          senderId: doc.lastMessage.senderId,
          preview: doc.lastMessage.preview,
          createdAt: doc.lastMessage.createdAt.toISOString(),
          deleted: doc.lastMessage.deleted === true,
        },
        unreadCount: await this.store.unreadCount(doc, callerId),
        createdAt: doc.createdAt.toISOString(),
        updatedAt: doc.updatedAt.toISOString(),
      })),
    )
  }
}
