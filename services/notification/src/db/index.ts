import { type Database, migrateService, type Transaction as TransactionOf } from '@parley/common/postgres'
import { INDEXES } from './indexes'
import type { Schema } from './schema'

export type Db = Database<Schema>
export type Transaction = TransactionOf<Schema>
/** The database or a transaction on it. */
export type Queryable = Db | Transaction

/** The committed drizzle-kit migrations of this service. */
export const MIGRATIONS = new URL('../../drizzle', import.meta.url)

export function migrate(config: { DATABASE_URL: string; MIGRATIONS_DIR?: string }): Promise<void> {
  return migrateService(config, MIGRATIONS, INDEXES)
}
