import { fileURLToPath } from 'node:url'
import { createPostgres, type Database, runMigrations } from '@parley/common/postgres'
import * as schema from './schema'

export type UserDatabase = Database<typeof schema>

export function openDatabase(url: string, poolMax: number) {
  return createPostgres(url, { schema, max: poolMax, applicationName: 'parley-user' })
}

/** Committed drizzle-kit migrations: MIGRATIONS_DIR in the container, else next to the source. */
export function migrationsFolder(): string {
  return process.env.MIGRATIONS_DIR ?? fileURLToPath(new URL('../../drizzle', import.meta.url))
}

export function migrate(config: { DATABASE_URL: string }): Promise<void> {
  return runMigrations(config.DATABASE_URL, migrationsFolder())
}
