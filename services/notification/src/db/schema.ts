import { outbox, outboxDead, processedEvents } from '@parley/common/postgres'
import { sql } from 'drizzle-orm'
import { index, jsonb, pgTable, primaryKey, text, timestamp, uuid } from 'drizzle-orm/pg-core'

// `notification.created` goes out through the outbox, in the transaction that stores the notification.
export { outbox, outboxDead, processedEvents }

/**
 * In-app notifications. Every read is per user, so the primary key is (user_id, id): it is
 * the `(user_id, id desc)` index (scanned backwards) and leaves the planner no id-only index to
 * walk backwards through everyone's rows. ids are UUIDv7, so `id desc` is newest first and
 * doubles as the page cursor.
 */
export const notifications = pgTable(
  'notifications',
  {
    id: uuid('id').notNull(),
    userId: uuid('user_id').notNull(),
    type: text('type').notNull(),
    payload: jsonb('payload').$type<Record<string, unknown>>().notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    readAt: timestamp('read_at', { withTimezone: true }),
  },
  (table) => [
    primaryKey({ name: 'notifications_pkey', columns: [table.userId, table.id] }),
    // nullsFirst(): PostgreSQL's own `id DESC`, so the index yields `order by id desc` directly.
    index('notifications_unread_idx')
      .on(table.userId, table.id.desc().nullsFirst())
      .where(sql`${table.readAt} is null`),
  ],
)

/**
 * Projection of users from `user.registered` / `user.profile_updated` / `user.email_verified`, to
 * address and greet recipients. `updatedAt` is the event's own timestamp, so an older event never
 * overwrites a newer one.
 */
export const users = pgTable('users', {
  id: uuid('id').primaryKey(),
  email: text('email'),
  displayName: text('display_name').notNull(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull(),
  /**
   * The address the user proved they own. Kept as the address rather than a flag: verification
   * is per address, so it counts only while it equals `email`, and applying verification and
   * registration in either order gives the same row.
   */
  verifiedEmail: text('verified_email'),
})

export type EmailDeliveryStatus = 'sending' | 'sent' | 'skipped' | 'rejected'

/**
 * One row per (event, recipient) email: a retry after a partial failure mails only the
 * recipients not yet done. A `sending` row is a claim that lapses at `claimedUntil`, so a
 * crashed attempt is taken over and a concurrent duplicate delivery waits its turn.
 */
export const emailDeliveries = pgTable(
  'email_deliveries',
  {
    eventId: text('event_id').notNull(),
    recipientId: uuid('recipient_id').notNull(),
    template: text('template').notNull(),
    status: text('status').$type<EmailDeliveryStatus>().notNull(),
    /** Why a row is `skipped` or `rejected`. */
    reason: text('reason'),
    claimedUntil: timestamp('claimed_until', { withTimezone: true }).notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    completedAt: timestamp('completed_at', { withTimezone: true }),
  },
  (table) => [primaryKey({ columns: [table.eventId, table.recipientId] })],
)

export const schema = { notifications, users, emailDeliveries, processedEvents, outbox, outboxDead }
export type Schema = typeof schema
