import { type Metrics, newId, problems } from '@parley/common'
import { buildEvent } from '@parley/common/events'
import { consumeOnce, enqueueEvents } from '@parley/common/postgres'
import type { CloudEvent } from '@parley/contracts'
import { and, count, desc, eq, isNotNull, isNull, lt, type SQL, sql } from 'drizzle-orm'
import type { Db, Transaction } from '../../db'
import { notifications } from '../../db/schema'
import type { UserDirectory } from '../users/service'
import {
  type ConversationAddedPayload,
  type ListQuery,
  type MessageReceivedPayload,
  type Notification,
  type NotificationPage,
  type NotificationType,
  UNREAD_COUNT_CAP,
  type UnreadCount,
} from './model'

export const EVENT_SOURCE = 'parley/notification'

/** The notification types that quote a message (and lose its text once it is deleted). */
const QUOTING_TYPES = ['message.received', 'mention'] as const satisfies readonly NotificationType[]

/** Consumer name of the in-app queue, also its processed-events key. */
export const INBOX_QUEUE = 'notification.inbox'

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

function encodeCursor(id: string): string {
  return Buffer.from(id, 'utf8').toString('base64url')
}

function decodeCursor(cursor: string): string {
  const id = Buffer.from(cursor, 'base64url').toString('utf8')
  if (!UUID_PATTERN.test(id))
    throw problems.validation([{ field: 'query.cursor', message: 'Not a cursor returned by this API' }])
  return id
}

type NotificationRow = typeof notifications.$inferSelect

function toNotification(row: NotificationRow): Notification {
  return {
    id: row.id,
    type: row.type as NotificationType,
    payload: row.payload as Notification['payload'],
    createdAt: row.createdAt.toISOString(),
    readAt: row.readAt?.toISOString() ?? null,
  }
}

/** Recipients of a fan-out: each once, never the actor. */
function recipientsOf(userIds: readonly string[], actorId: string): string[] {
  return [...new Set(userIds)].filter((userId) => userId !== actorId)
}

/** In-app notifications: created from events, read and marked read by their owner. */
export class NotificationService {
  private readonly created
  private readonly redacted

  constructor(
    private readonly db: Db,
    private readonly directory: UserDirectory,
    metrics: Metrics,
  ) {
    this.created = metrics.counter('notifications_created_total', 'In-app notifications created', ['type'])
    this.redacted = metrics.counter(
      'notifications_redacted_total',
      'In-app notifications whose message preview was cleared because the message was deleted',
    )
  }

  async list(userId: string, query: ListQuery): Promise<NotificationPage> {
    const limit = query.limit ?? 20
    const conditions: SQL[] = [eq(notifications.userId, userId)]
    if (query.unread === true) conditions.push(isNull(notifications.readAt))
    if (query.unread === false) conditions.push(isNotNull(notifications.readAt))
    if (query.cursor !== undefined) conditions.push(lt(notifications.id, decodeCursor(query.cursor)))
    const rows = await this.db
      .select()
      .from(notifications)
      .where(and(...conditions))
      .orderBy(desc(notifications.id))
      .limit(limit + 1)
    const page = rows.slice(0, limit)
    const last = page.at(-1)
    return {
      items: page.map(toNotification),
      nextCursor: rows.length > limit && last ? encodeCursor(last.id) : null,
    }
  }

  /** Marks one of the caller's notifications read (idempotent: keeps the first read time); 404 otherwise. */
  async markRead(userId: string, id: string): Promise<Notification> {
    const [row] = await this.db
      .update(notifications)
      .set({ readAt: sql`coalesce(${notifications.readAt}, now())` })
      .where(and(eq(notifications.id, id), eq(notifications.userId, userId)))
      .returning()
    if (!row) throw problems.notFound('No such notification')
    return toNotification(row)
  }

  async markAllRead(userId: string): Promise<number> {
    const result = await this.db
      .update(notifications)
      .set({ readAt: sql`now()` })
      .where(and(eq(notifications.userId, userId), isNull(notifications.readAt)))
    return result.count
  }

  async unreadCount(userId: string): Promise<UnreadCount> {
    const unread = this.db
      .select({ id: notifications.id })
      .from(notifications)
      .where(and(eq(notifications.userId, userId), isNull(notifications.readAt)))
      // The order makes the planner count from the unread index instead of scanning the table.
      .orderBy(desc(notifications.id))
      .limit(UNREAD_COUNT_CAP + 1)
      .as('unread')
    const [row] = await this.db.select({ total: count() }).from(unread)
    const total = row?.total ?? 0
    return { unread: Math.min(total, UNREAD_COUNT_CAP), capped: total > UNREAD_COUNT_CAP }
  }

  /**
   * One `mention` per mentioned recipient (muted or not) and one `message.received` per other
   * recipient who did not mute the conversation; never the sender; once per event.
   */
  async onMessageSent(event: CloudEvent<'message.sent'>): Promise<void> {
    const { data } = event
    const muted = new Set(data.mutedUserIds)
    const everyone = recipientsOf(data.recipientIds, data.senderId)
    const mentioned = new Set(data.mentionedUserIds)
    const mentions = everyone.filter((userId) => mentioned.has(userId))
    const recipients = everyone.filter((userId) => !mentioned.has(userId) && !muted.has(userId))
    if (recipients.length === 0 && mentions.length === 0) return
    const applied = await consumeOnce(this.db, INBOX_QUEUE, event.id, async (tx) => {
      const sender = (await this.directory.find([data.senderId], tx)).get(data.senderId)
      const payload: MessageReceivedPayload = {
        conversationId: data.conversationId,
        messageId: data.messageId,
        senderId: data.senderId,
        senderName: sender?.displayName ?? null,
        preview: data.preview,
        sentAt: data.createdAt,
      }
      const correlationId = event.correlationid ?? event.id
      if (recipients.length > 0) await this.insert(tx, 'message.received', recipients, payload, correlationId)
      if (mentions.length > 0) await this.insert(tx, 'mention', mentions, payload, correlationId)
    })
    if (!applied) return
    if (recipients.length > 0) this.created.inc({ type: 'message.received' }, recipients.length)
    if (mentions.length > 0) this.created.inc({ type: 'mention' }, mentions.length)
  }

  /** The notifications quoting a deleted message stop showing its text (whoever received them); once per event. */
  async onMessageDeleted(event: CloudEvent<'message.deleted'>): Promise<void> {
    const { messageId } = event.data
    const cleared: Pick<MessageReceivedPayload, 'preview' | 'deleted'> = { preview: '', deleted: true }
    let redacted = 0
    const applied = await consumeOnce(this.db, INBOX_QUEUE, event.id, async (tx) => {
      redacted = 0
      // One update per type: each is answered by that type's partial index.
      for (const type of QUOTING_TYPES) {
        const result = await tx
          .update(notifications)
          .set({ payload: sql`${notifications.payload} || ${JSON.stringify(cleared)}::jsonb` })
          .where(
            and(eq(notifications.type, type), sql`${notifications.payload}->>'messageId' = ${messageId}`),
          )
        redacted += result.count
      }
    })
    if (applied && redacted > 0) this.redacted.inc(redacted)
  }

  /** One `conversation.added` per participant other than the creator; once per event. */
  async onConversationCreated(event: CloudEvent<'conversation.created'>): Promise<void> {
    const { data } = event
    const recipients = recipientsOf(data.participantIds, data.createdBy)
    if (recipients.length === 0) return
    const applied = await consumeOnce(this.db, INBOX_QUEUE, event.id, async (tx) => {
      const creator = (await this.directory.find([data.createdBy], tx)).get(data.createdBy)
      const payload: ConversationAddedPayload = {
        conversationId: data.conversationId,
        title: data.title,
        createdBy: data.createdBy,
        createdByName: creator?.displayName ?? null,
        participantCount: new Set([...data.participantIds, data.createdBy]).size,
      }
      await this.insert(tx, 'conversation.added', recipients, payload, event.correlationid ?? event.id)
    })
    if (applied) this.created.inc({ type: 'conversation.added' }, recipients.length)
  }

  /**
   * Stores one notification per recipient and, in the same transaction, a `notification.created`
   * for each, so every recipient's devices learn it live and on resume.
   */
  private async insert(
    tx: Transaction,
    type: NotificationType,
    recipients: readonly string[],
    payload: MessageReceivedPayload | ConversationAddedPayload,
    correlationId: string | undefined,
  ): Promise<void> {
    const stored = await tx
      .insert(notifications)
      .values(recipients.map((userId) => ({ id: newId(), userId, type, payload })))
      .returning({ id: notifications.id, userId: notifications.userId, createdAt: notifications.createdAt })
    await enqueueEvents(
      tx,
      stored.map((row) =>
        buildEvent(
          EVENT_SOURCE,
          'notification.created',
          {
            notificationId: row.id,
            userId: row.userId,
            type,
            payload,
            createdAt: row.createdAt.toISOString(),
          },
          { correlationId },
        ),
      ),
    )
  }
}
