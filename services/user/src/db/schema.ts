import { outbox, outboxDead, processedEvents } from '@parley/common/postgres'
import { sql } from 'drizzle-orm'
import { boolean, customType, integer, pgTable, text, timestamp, uuid } from 'drizzle-orm/pg-core'

export { outbox, outboxDead, processedEvents }

/**
 * Text compared byte-wise (COLLATE "C") whatever the database locale: btree indexes on it
 * serve prefix LIKE, and the search order (and so the cursor) is the same everywhere.
 */
const byteOrderedText = customType<{ data: string; driverData: string }>({
  dataType: () => 'text collate "C"',
})

/**
 * The user projection, built from auth's events. The search indexes (pg_trgm, covering
 * btrees) live in the custom migration `drizzle/0001_search_indexes.sql`: drizzle cannot
 * express INCLUDE columns or operator classes on expressions.
 */
export const profiles = pgTable('profiles', {
  /** The auth user id. */
  id: uuid('id').primaryKey(),
  /** Private: only its owner sees it. Stored lower-case. */
  email: byteOrderedText('email').notNull(),
  displayName: text('display_name').notNull(),
  /** What search compares against: the display name, lower-cased by PostgreSQL. */
  searchName: byteOrderedText('search_name').notNull().generatedAlwaysAs(sql`lower(display_name)`),
  bio: text('bio'),
  avatarUrl: text('avatar_url'),
  emailVerified: boolean('email_verified').notNull().default(false),
  /** Incremented on every change; the cache never replaces a newer version with an older one. */
  version: integer('version').notNull().default(1),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
})

/**
 * `user.email_verified` events that arrived before their `user.registered`: applied (and
 * deleted) when the profile is created, so the flag is never lost to reordering.
 */
export const pendingEmailVerifications = pgTable('pending_email_verifications', {
  userId: uuid('user_id').primaryKey(),
  verifiedAt: timestamp('verified_at', { withTimezone: true }).notNull(),
})

export type ProfileRow = typeof profiles.$inferSelect
