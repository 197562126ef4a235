import { inArray, type SQL, sql } from 'drizzle-orm'
import type { UserDatabase } from '../../db'
import { type ProfileRow, profiles } from '../../db/schema'

/**
 * Search matches the display name only, and ranks a profile by the best way it matches the
 * (case-folded) query:
 *   0 exact:      the display name equals it
 *   1 prefix:     the display name starts with it
 *   2 substring:  the display name contains it further in; only for queries of at least
 *                 MIN_SUBSTRING_LENGTH characters
 * and orders ties by the case-folded display name (byte order), then id. A cursor is the
 * last (rank, name, id) served; each tier excludes the earlier ones, so every match appears
 * exactly once across pages.
 *
 * Never the email: results do not show it, but which profile an address or the start of one
 * brings back would tell who owns it, and let anyone recover an address character by
 * character.
 *
 * Cost: tiers 0 and 1 read the name index in order within a range, so they never touch more
 * rows than the page; one statement runs both. Tier 2 runs only when those did not fill the
 * page, and is left to the planner, which weighs walking the name index in order until the
 * page is full (common substrings) against fetching every match through the trigram index and
 * sorting them (rare ones); it is written so its estimates hold. A pattern shorter than a
 * trigram gives the trigram index nothing to look up, so it would scan the whole index:
 * hence the minimum length.
 */
export type SearchRank = 0 | 1 | 2
export type SearchKey = { rank: SearchRank; name: string; id: string }

/** Shorter queries match exact names and name prefixes only (see above). */
export const MIN_SUBSTRING_LENGTH = 3

const RANKS: readonly SearchRank[] = [0, 1, 2]
const TIER_GROUPS: readonly (readonly SearchRank[])[] = [[0, 1], [2]]
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

export function encodeCursor(key: SearchKey): string {
  return Buffer.from(JSON.stringify([key.rank, key.name, key.id])).toString('base64url')
}

/** Returns the key a cursor stands for, or undefined if it is not one this service issued. */
export function decodeCursor(cursor: string): SearchKey | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'))
    if (!Array.isArray(value) || value.length !== 3) return undefined
    const [rank, name, id] = value
    if (!RANKS.includes(rank) || typeof name !== 'string' || typeof id !== 'string' || !UUID.test(id))
      return undefined
    return { rank, name, id }
  } catch {
    return undefined
  }
}

/** Escapes LIKE wildcards so the query matches literally. */
function likeLiteral(text: string): string {
  return text.replace(/[\\%_]/g, (char) => `\\${char}`)
}

type Candidate = { id: string; search_name: string }

/** The search order, as PostgreSQL sorts it: byte order of the names ("C"), then the ids. */
function compareKeys(a: SearchKey, b: SearchKey): number {
  if (a.rank !== b.rank) return a.rank - b.rank
  const byName = Buffer.compare(Buffer.from(a.name), Buffer.from(b.name))
  if (byName !== 0) return byName
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0
}

/** One tier's query: up to `limit` of its rows after `after`, in name order. */
function tierQuery(rank: SearchRank, query: string, after: SQL, limit: number): SQL {
  // Case-folded by PostgreSQL, exactly as `search_name` is.
  const folded = sql`lower(${query})`
  const inNameOrder = (where: SQL) =>
    sql`select id, search_name from profiles where ${where} ${after} order by search_name, id limit ${limit}`
  switch (rank) {
    case 0:
      return inNameOrder(sql`search_name = ${folded}`)
    case 1:
      return inNameOrder(sql`starts_with(search_name, ${folded}) and search_name <> ${folded}`)
    case 2:
      // `substr(search_name, 2)` holds every substring that does not start the name: its
      // trigram index yields this tier's candidates without the prefix matches.
      return inNameOrder(sql`
        substr(search_name, 2) like '%' || lower(${likeLiteral(query)}) || '%'
        and not starts_with(search_name, ${folded})`)
  }
}

export type SearchPage = { ids: string[]; next: SearchKey | undefined }

/**
 * Finds up to `limit` profile ids matching `query` after `cursor`, in rank order, and the
 * key to continue from when there are more.
 */
export async function searchProfileIds(
  db: UserDatabase,
  query: string,
  limit: number,
  cursor?: SearchKey,
): Promise<SearchPage> {
  const found: SearchKey[] = []
  // One more than the page tells whether another page follows.
  const wanted = limit + 1
  // Code points, as pg_trgm counts characters.
  const substrings = [...query].length >= MIN_SUBSTRING_LENGTH
  for (const group of TIER_GROUPS) {
    const ranks = group.filter((rank) => (!cursor || rank >= cursor.rank) && (rank !== 2 || substrings))
    if (ranks.length === 0) continue
    const tiers = ranks.map((rank) => {
      const after =
        cursor && rank === cursor.rank
          ? sql`and (search_name, id) > (${cursor.name}, ${cursor.id}::uuid)`
          : sql``
      return sql`select ${sql.raw(String(rank))} as rank, id, search_name
        from (${tierQuery(rank, query, after, wanted)}) tier_${sql.raw(String(rank))}`
    })
    const rows = await db.execute<Candidate & { rank: SearchRank }>(sql.join(tiers, sql` union all `))
    const keys = rows.map((row) => ({ rank: row.rank, name: row.search_name, id: row.id }))
    found.push(...keys.sort(compareKeys))
    if (found.length >= wanted) break
  }
  const page = found.slice(0, limit)
  return {
    ids: page.map((key) => key.id),
    next: found.length > limit ? page[page.length - 1] : undefined,
  }
}

/** Loads rows by id, in the order of `ids` (unknown ids are skipped). */
export async function profilesInOrder(db: UserDatabase, ids: string[]): Promise<ProfileRow[]> {
  if (ids.length === 0) return []
  const rows = await db.select().from(profiles).where(inArray(profiles.id, ids))
  const byId = new Map(rows.map((row) => [row.id, row]))
  return ids.flatMap((id) => byId.get(id) ?? [])
}

/** One page of search results and the cursor of the next, as GET /users?q= serves them. */
export async function searchProfiles(
  db: UserDatabase,
  query: string,
  limit: number,
  cursor?: SearchKey,
): Promise<{ rows: ProfileRow[]; nextCursor: string | null }> {
  const page = await searchProfileIds(db, query, limit, cursor)
  return {
    rows: await profilesInOrder(db, page.ids),
    nextCursor: page.next ? encodeCursor(page.next) : null,
  }
}
