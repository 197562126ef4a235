import { HttpProblem, problems } from '@parley/common'
import { buildEvent } from '@parley/common/events'
import { enqueueEvents } from '@parley/common/postgres'
import { eq, sql } from 'drizzle-orm'
import type { UserDatabase } from '../../db'
import { type ProfileRow, profiles } from '../../db/schema'
import type { ProfileArrivals } from './arrivals'
import type { ProfileCache } from './cache'
import {
  MAX_BATCH_IDS,
  type OwnProfile,
  type ProfileUpdate,
  type PublicProfile,
  type PublicProfilePage,
  type UserListQuery,
} from './model'
import { decodeCursor, searchProfiles } from './search'

export const EVENT_SOURCE = 'parley/user'
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

export function toPublicProfile(row: ProfileRow): PublicProfile {
  return {
    id: row.id,
    displayName: row.displayName,
    bio: row.bio,
    avatarUrl: row.avatarUrl,
    createdAt: row.createdAt.toISOString(),
  }
}

export function toOwnProfile(row: ProfileRow): OwnProfile {
  return {
    ...toPublicProfile(row),
    email: row.email,
    emailVerified: row.emailVerified,
    updatedAt: row.updatedAt.toISOString(),
  }
}

/** The answer while a just-registered user's profile has not been projected yet. */
function profilePending(): HttpProblem {
  return new HttpProblem(
    503,
    'Profile Not Ready',
    'Your profile is still being created; retry shortly',
    'profile-pending',
    undefined,
    { 'retry-after': '1' },
  )
}

/** avatarUrl beyond what the schema checks: a parseable https URL with a host and no credentials. */
function checkAvatarUrl(url: string | null | undefined): void {
  if (url === null || url === undefined) return
  const parsed = URL.parse(url)
  if (parsed?.protocol !== 'https:' || !parsed.hostname || parsed.username || parsed.password)
    throw problems.validation([{ field: 'body.avatarUrl', message: 'Expected an https URL with a host' }])
}

function parseIds(ids: string): string[] {
  const list = [...new Set(ids.split(',').map((id) => id.trim().toLowerCase()))]
  if (list.length > MAX_BATCH_IDS)
    throw problems.validation([{ field: 'query.ids', message: `At most ${MAX_BATCH_IDS} ids` }])
  if (!list.every((id) => UUID.test(id)))
    throw problems.validation([{ field: 'query.ids', message: 'Expected comma-separated user ids' }])
  return list
}

export type ProfileServiceOptions = {
  db: UserDatabase
  cache: ProfileCache
  arrivals: ProfileArrivals
  /** How long a caller's own profile is awaited when its registration is still being projected. */
  projectionWaitMs: number
}

export class ProfileService {
  constructor(private readonly options: ProfileServiceOptions) {}

  /** Rows by id through the cache; rows not found anywhere are left out. */
  private async load(ids: string[]): Promise<Map<string, ProfileRow>> {
    const { db, cache } = this.options
    const found = await cache.getMany(ids)
    const missing = ids.filter((id) => !found.has(id))
    if (missing.length > 0) {
      const rows = await db.query.profiles.findMany({
        where: (table, { inArray }) => inArray(table.id, missing),
      })
      await cache.put(rows)
      for (const row of rows) found.set(row.id, row)
    }
    return found
  }

  /**
   * The caller's row. Right after registration the `user.registered` event may not have
   * been applied yet: wait for it (boundedly) rather than answer 404 for an account that exists.
   */
  private async ownRow(userId: string): Promise<ProfileRow> {
    const { arrivals, projectionWaitMs } = this.options
    const row = await arrivals.waitFor(userId, async () => (await this.load([userId])).get(userId), {
      timeoutMs: projectionWaitMs,
      pollMs: 200,
    })
    if (!row) throw profilePending()
    return row
  }

  async own(userId: string): Promise<OwnProfile> {
    return toOwnProfile(await this.ownRow(userId))
  }

  async publicProfile(id: string): Promise<PublicProfile> {
    const row = (await this.load([id])).get(id)
    if (!row) throw problems.notFound('No user with this id')
    return toPublicProfile(row)
  }

  /**
   * Applies the changes and, in the same transaction, writes `user.profile_updated` to the
   * outbox. A request that changes nothing writes nothing and publishes nothing.
   */
  async update(userId: string, changes: ProfileUpdate, correlationId?: string): Promise<OwnProfile> {
    checkAvatarUrl(changes.avatarUrl)
    await this.ownRow(userId)
    const { db, cache } = this.options
    const updated = await db.transaction(async (tx) => {
      const [current] = await tx.select().from(profiles).where(eq(profiles.id, userId)).for('update')
      if (!current) throw profilePending()
      const unchanged = (Object.keys(changes) as (keyof ProfileUpdate)[]).every(
        (field) => changes[field] === current[field],
      )
      if (unchanged) return current
      const [row] = await tx
        .update(profiles)
        .set({
          ...changes,
          version: sql`${profiles.version} + 1`,
          // Strictly increasing per profile (consumers may order updates by it), at the
          // millisecond precision the event carries.
          updatedAt: sql`date_trunc('milliseconds', greatest(clock_timestamp(), ${profiles.updatedAt} + interval '1 millisecond'))`,
        })
        .where(eq(profiles.id, userId))
        .returning()
      if (!row) throw profilePending()
      const event = buildEvent(
        EVENT_SOURCE,
        'user.profile_updated',
        {
          userId: row.id,
          displayName: row.displayName,
          bio: row.bio,
          avatarUrl: row.avatarUrl,
          updatedAt: row.updatedAt.toISOString(),
        },
        correlationId ? { correlationId } : {},
      )
      await enqueueEvents(tx, [event])
      return row
    })
    await cache.put([updated])
    return toOwnProfile(updated)
  }

  /** Search (`q`) or batch lookup (`ids`): exactly one of them. */
  async list(query: UserListQuery): Promise<PublicProfilePage> {
    const { q, ids, limit = 20, cursor } = query
    if ((q === undefined) === (ids === undefined))
      throw problems.validation([{ field: 'query', message: 'Pass either q (search) or ids (batch lookup)' }])
    if (ids !== undefined) {
      if (cursor !== undefined)
        throw problems.validation([{ field: 'query.cursor', message: 'A batch lookup has a single page' }])
      const wanted = parseIds(ids)
      const rows = await this.load(wanted)
      return { items: wanted.flatMap((id) => rows.get(id) ?? []).map(toPublicProfile), nextCursor: null }
    }
    const after = cursor === undefined ? undefined : decodeCursor(cursor)
    if (cursor !== undefined && !after)
      throw problems.validation([{ field: 'query.cursor', message: 'Not a cursor from this search' }])
    const page = await searchProfiles(this.options.db, q ?? '', limit, after)
    return { items: page.rows.map(toPublicProfile), nextCursor: page.nextCursor }
  }
}
