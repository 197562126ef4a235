import { sql } from 'drizzle-orm'
import { boolean, check, index, pgTable, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core'

export { outbox, outboxDead, processedEvents } from '@parley/common/postgres'

const timestampTz = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' })

/** One account: its login email (stored trimmed and lower-cased, unique) and argon2id hash. */
export const credentials = pgTable(
  'credentials',
  {
    id: uuid('id').primaryKey(),
    email: text('email').notNull(),
    /** Copied into verification mails; kept current from `user.profile_updated`. */
    displayName: text('display_name').notNull(),
    displayNameUpdatedAt: timestampTz('display_name_updated_at').notNull().defaultNow(),
    passwordHash: text('password_hash').notNull(),
    emailVerified: boolean('email_verified').notNull().default(false),
    emailVerifiedAt: timestampTz('email_verified_at'),
    roles: text('roles').array().notNull().default(sql`'{user}'::text[]`),
    createdAt: timestampTz('created_at').notNull().defaultNow(),
    updatedAt: timestampTz('updated_at').notNull().defaultNow(),
  },
  (table) => [
    uniqueIndex('credentials_email_key').on(table.email),
    // The application normalises; the database refuses anything that slipped past it.
    check('credentials_email_normalised', sql`${table.email} = lower(btrim(${table.email}))`),
  ],
)

/**
 * Refresh tokens. Every login starts a family (its id is the access token's `sid`); every
 * rotation adds a row whose parent is the token it replaced. Only a SHA-256 hash of each
 * token is stored.
 */
export const sessions = pgTable(
  'sessions',
  {
    id: uuid('id').primaryKey(),
    familyId: uuid('family_id').notNull(),
    parentId: uuid('parent_id'),
    userId: uuid('user_id')
      .notNull()
      .references(() => credentials.id, { onDelete: 'cascade' }),
    tokenHash: text('token_hash').notNull(),
    createdAt: timestampTz('created_at').notNull().defaultNow(),
    expiresAt: timestampTz('expires_at').notNull(),
    /** Set when this token was exchanged for its successor; presenting it again is reuse. */
    rotatedAt: timestampTz('rotated_at'),
    revokedAt: timestampTz('revoked_at'),
    revokedReason: text('revoked_reason'),
  },
  (table) => [
    uniqueIndex('sessions_token_hash_key').on(table.tokenHash),
    index('sessions_family_id_idx').on(table.familyId),
    index('sessions_user_active_idx').on(table.userId).where(sql`${table.revokedAt} is null`),
    index('sessions_expires_at_idx').on(table.expiresAt),
  ],
)
