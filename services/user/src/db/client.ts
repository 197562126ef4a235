import { type Database, migrateService } from '@parley/common/postgres'
import type * as schema from './schema'

export type UserDatabase = Database<typeof schema>

/** The committed drizzle-kit migrations of this service. */
export const MIGRATIONS = new URL('../../drizzle', import.meta.url)

export function migrate(config: { DATABASE_URL: string; MIGRATIONS_DIR?: string }): Promise<void> {
  return migrateService(config, MIGRATIONS)
}
