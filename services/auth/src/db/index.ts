import { fileURLToPath } from 'node:url'
import { type Database, runMigrations } from '@parley/common/postgres'
import type * as schema from './schema'

export type Db = Database<typeof schema>
export type Transaction = Parameters<Parameters<Db['transaction']>[0]>[0]
/** The database or a transaction on it. */
export type Queryable = Db | Transaction

/** Committed drizzle-kit migrations: MIGRATIONS_DIR in the container, the service's drizzle/ folder otherwise. */
export function migrationsFolder(config: { MIGRATIONS_DIR?: string }): string {
  return config.MIGRATIONS_DIR ?? fileURLToPath(new URL('../../drizzle', import.meta.url))
}

export async function migrate(config: { DATABASE_URL: string; MIGRATIONS_DIR?: string }): Promise<void> {
  await runMigrations(config.DATABASE_URL, migrationsFolder(config))
}
