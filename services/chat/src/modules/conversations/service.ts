import { newId, problems } from '@parley/common'
import { buildEvent } from '@parley/common/events'
import type { MongoOutbox } from '@parley/common/mongo'
import type { Collection } from 'mongodb'
import { CONVERSATION_FIELDS, type ConversationDoc } from '../../db'
import type { UserDirectory } from '../users/service'
import {
  type Conversation,
  type ConversationPage,
  type CreateConversationBody,
  MAX_PARTICIPANTS,
} from './model'
import { type ConversationStore, readMarkerPath } from './store'

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

export class ConversationService {
  constructor(
    private readonly conversations: Collection<ConversationDoc>,
    private readonly store: ConversationStore,
    private readonly users: UserDirectory,
    private readonly outbox: MongoOutbox,
  ) {}

  async create(callerId: string, input: CreateConversationBody, correlationId?: string) {
    const participantIds = [...new Set([callerId, ...input.participantIds])]
    if (participantIds.length > MAX_PARTICIPANTS)
      throw problems.validation([
        {
          field: 'body.participantIds',
          message: `A conversation has at most ${MAX_PARTICIPANTS} participants, the caller included`,
        },
      ])
    const unknown = await this.users.unknownIds(participantIds.filter((id) => id !== callerId))
    if (unknown.length > 0) throw unknownUsersProblem('body.participantIds', input.participantIds, unknown)

    const now = new Date()
    const doc: ConversationDoc = {
      _id: newId(),
      title: normalizeTitle(input.title),
      createdBy: callerId,
      participantIds,
      readMarkers: {},
      lastMessage: null,
      lastSeq: 0,
      createdAt: now,
      updatedAt: now,
      version: 1,
      messagesVersion: 0,
    }
    const event = buildEvent(
      EVENT_SOURCE,
      'conversation.created',
      {
        conversationId: doc._id,
        title: doc.title,
        createdBy: callerId,
        participantIds,
        createdAt: now.toISOString(),
      },
      { correlationId },
    )
    await this.outbox.stage({ collection: this.conversations.collectionName, id: doc._id }, [event])
    await this.conversations.insertOne(doc).catch(async (error: unknown) => {
      await this.outbox.discard([event]).catch(() => undefined)
      throw error
    })
    this.outbox.committed([event])
    await this.store.remember(doc)
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
    const { doc } = await this.store.change(id, callerId, (current) => ({
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
    }))
    return this.view(callerId, doc)
  }

  /** Adds known users (ids already in the conversation are ignored); publishes `conversation.participants_added`. */
  async addParticipants(
    callerId: string,
    id: string,
    userIds: readonly string[],
    correlationId?: string,
  ): Promise<Conversation> {
    await this.store.forParticipant(id, callerId)
    const requested = [...new Set(userIds)]
    const unknown = await this.users.unknownIds(requested)
    if (unknown.length > 0) throw unknownUsersProblem('body.userIds', userIds, unknown)
    const tooMany = () =>
      problems.validation([
        { field: 'body.userIds', message: `A conversation has at most ${MAX_PARTICIPANTS} participants` },
      ])
    const addedAt = new Date()
    const { doc } = await this.store.change(
      id,
      callerId,
      (current) => {
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

  /** Removes the caller; publishes `conversation.participant_left`. */
  async leave(callerId: string, id: string, correlationId?: string): Promise<void> {
    const leftAt = new Date()
    await this.store.change(id, callerId, (current) => ({
      update: { $pullAll: { participantIds: [callerId] }, $unset: { [readMarkerPath(callerId)]: '' } },
      event: buildEvent(
        EVENT_SOURCE,
        'conversation.participant_left',
        {
          conversationId: id,
          userId: callerId,
          participantIds: current.participantIds.filter((userId) => userId !== callerId),
          leftAt: leftAt.toISOString(),
        },
        { correlationId },
      ),
    }))
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
        participants: doc.participantIds.map((userId) => ({
          userId,
          displayName: names.get(userId) ?? null,
          lastReadMessageId: doc.readMarkers[userId]?.id ?? null,
          lastReadSeq: doc.readMarkers[userId]?.seq ?? null,
        })),
        lastMessage: doc.lastMessage && {
          ...doc.lastMessage,
          createdAt: doc.lastMessage.createdAt.toISOString(),
        },
        unreadCount: await this.store.unreadCount(doc, callerId),
        createdAt: doc.createdAt.toISOString(),
        updatedAt: doc.updatedAt.toISOString(),
      })),
    )
  }
}
