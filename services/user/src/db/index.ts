import { type Database, migrateService, type Transaction as TransactionOf } from '@parley/common/postgres'
import { INDEXES } from './indexes'
import type * as schema from './schema'

export type UserDatabase = Database<typeof schema>
export type Transaction = TransactionOf<typeof schema>

/** The committed drizzle-kit migrations of this service. */
export const MIGRATIONS = new URL('../../drizzle', import.meta.url)

export function migrate(config: { DATABASE_URL: string; MIGRATIONS_DIR?: string }): Promise<void> {
  return migrateService(config, MIGRATIONS, INDEXES)
}
