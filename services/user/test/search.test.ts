import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { newId } from '@parley/common'
import { type Harness, startUserService } from './harness'

let user: Harness
let token: string

type Fixture = { id: string; email: string; displayName: string }

/** Search fixtures: the rows and what each query must return, computed independently below. */
const named: Fixture[] = [
  ['Ann', 'ann.one@example.com'],
  ['ANN', 'second.ann@example.com'],
  ['Anna Smith', 'anna@example.com'],
  ['Anna Smith', 'anna.s@example.com'],
  ['annabel', 'bel@example.com'],
  ['Bob Stone', 'ann.bob@example.com'],
  ['Zed', 'ann@example.com'],
  ['Joanne', 'jo@example.com'],
  ['Dianne Ann', 'di@example.com'],
  ['Nobody', 'nobody@example.com'],
  ['100% Real', 'real@example.com'],
  ['under_score', 'us@example.com'],
  ['Émile Zola', 'emile@example.com'],
].map(([displayName, email]) => ({ id: newId(), displayName: displayName ?? '', email: email ?? '' }))

/** A seeded generator (mulberry32): the same fixtures on every run. */
function seededRandom(seed: number): () => number {
  let state = seed
  return () => {
    state = (state + 0x6d2b79f5) | 0
    let value = Math.imul(state ^ (state >>> 15), 1 | state)
    value = (value + Math.imul(value ^ (value >>> 7), 61 | value)) ^ value
    return ((value ^ (value >>> 14)) >>> 0) / 4294967296
  }
}

/** Pseudo-random names over a small alphabet: many ties, overlaps and every tier populated. */
function randomFixtures(count: number): Fixture[] {
  const random = seededRandom(42)
  const syllables = ['an', 'na', 'ma', 'ri', 'o', 'el', 'la', 'ka', ' ']
  const words = (min: number, spread: number) =>
    Array.from(
      { length: min + Math.floor(random() * spread) },
      () => syllables[Math.floor(random() * syllables.length)],
    ).join('')
  return Array.from({ length: count }, (_, index) => {
    const name = words(2, 4).trim() || 'x'
    return {
      id: newId(),
      displayName: name[0]?.toUpperCase() + name.slice(1),
      email: `${words(2, 3).replace(/ /g, '.')}${index}@example.com`,
    }
  })
}
const generated = randomFixtures(400)

/**
 * The ranking rule, restated: exact name, name prefix, then substring (from 3 characters);
 * then name, then id. Emails never match.
 */
function expected(rows: Fixture[], query: string): string[] {
  const q = query.trim().toLowerCase()
  const ranked = rows.flatMap((row) => {
    const name = row.displayName.toLowerCase()
    const rank =
      name === q ? 0 : name.startsWith(q) ? 1 : [...q].length >= 3 && name.includes(q) ? 2 : undefined
    return rank === undefined ? [] : [{ rank, name, id: row.id }]
  })
  const byBytes = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b))
  ranked.sort(
    (a, b) => a.rank - b.rank || byBytes(a.name, b.name) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  )
  return ranked.map((row) => row.id)
}

async function search(params: Record<string, string>) {
  return user.request('GET', `/users?${new URLSearchParams(params)}`, { token })
}

/** Follows the cursor to the end and returns every id served, in order. */
async function allPages(q: string, limit: number): Promise<string[]> {
  const ids: string[] = []
  let cursor: string | null = null
  for (let page = 0; page < 1000; page++) {
    const response = await search({ q, limit: String(limit), ...(cursor ? { cursor } : {}) })
    expect(response.status).toBe(200)
    expect(response.body.items.length).toBeLessThanOrEqual(limit)
    ids.push(...response.body.items.map((item: { id: string }) => item.id))
    cursor = response.body.nextCursor
    if (!cursor) return ids
    expect(response.body.items).toHaveLength(limit)
  }
  throw new Error('pagination did not end')
}

beforeAll(async () => {
  user = await startUserService()
  await user.insertProfiles([...named, ...generated])
  token = await user.token(newId())
})

afterAll(async () => {
  await user.stop()
})

describe('GET /users?q=', () => {
  test('ranks exact, name prefix, then substring; ties by name then id', async () => {
    const ids = await allPages('ann', 100)
    const namesOf = (list: string[]) => list.map((id) => named.find((row) => row.id === id)?.displayName)
    const ranked = namesOf(ids.filter((id) => named.some((row) => row.id === id)))
    expect(new Set(ranked.slice(0, 2))).toEqual(new Set(['Ann', 'ANN']))
    expect(ranked.slice(2)).toEqual(['Anna Smith', 'Anna Smith', 'annabel', 'Dianne Ann', 'Joanne'])
    expect(ids).toEqual(expected([...named, ...generated], 'ann'))
  })

  test('results never show the email', async () => {
    const response = await search({ q: 'zed' })
    expect(response.body.items[0].displayName).toBe('Zed')
    expect(JSON.stringify(response.body)).not.toContain('@example.com')
    expect(Object.keys(response.body.items[0]).sort()).toEqual([
      'avatarUrl',
      'bio',
      'createdAt',
      'displayName',
      'id',
    ])
  })

  test('another user’s exact email or an email prefix finds nothing; their display name does', async () => {
    const ids = async (q: string) => (await search({ q })).body.items.map((item: { id: string }) => item.id)
    // `Zed` is ann@example.com: neither its address nor any start of it may single it out.
    const zed = named.find((row) => row.displayName === 'Zed')?.id
    for (const q of ['ann@example.com', 'ANN@Example.com', 'ann@', 'ann@ex', 'second.ann', 'nobody@'])
      expect({ q, ids: await ids(q) }).toEqual({ q, ids: [] })
    expect(await ids('ann.')).not.toContain(named.find((row) => row.email === 'ann.one@example.com')?.id)
    expect(await ids('zed')).toEqual([zed])
    expect(await ids('ann')).not.toContain(zed)
  })

  test('the migrations leave no index on the email (nothing searches it)', async () => {
    const indexes = await user.sql<{ indexname: string; indexdef: string }[]>`
      select indexname, indexdef from pg_indexes where tablename = 'profiles'`
    expect(indexes.map((index) => index.indexname).sort()).toEqual([
      'profiles_pkey',
      'profiles_search_name_idx',
      'profiles_search_tail_trgm_idx',
    ])
  })

  test('1–2 characters match exact names and name prefixes only; from 3 on, substrings too', async () => {
    const names = async (q: string) =>
      (await allPages(q, 100)).flatMap((id) => named.find((row) => row.id === id)?.displayName ?? [])
    // "nn" is inside Ann, Joanne, Dianne Ann…, but starts no name.
    expect(await names('nn')).toEqual([])
    expect(await names('jo')).toEqual(['Joanne'])
    expect(await names('z')).toEqual(['Zed'])
    expect(await names('oan')).toEqual(['Joanne'])
    expect(await names('ann')).toContain('Dianne Ann')
  })

  test('every match exactly once across pages, for any page size', async () => {
    const all = [...named, ...generated]
    for (const q of ['an', 'a', 'ri', 'ka ', 'el', 'kao', 'oma', 'la ', 'aan']) {
      const want = expected(all, q)
      expect(want.length).toBeGreaterThan(0)
      for (const limit of [1, 3, 7, 50]) {
        if (limit === 1 && want.length > 40) continue
        const got = await allPages(q, limit)
        expect(new Set(got).size).toBe(got.length)
        expect(got).toEqual(want)
      }
    }
  }, 60_000)

  test('case-insensitive, trimmed, and wildcards match literally', async () => {
    const names = async (q: string) =>
      (await search({ q })).body.items.map((item: { displayName: string }) => item.displayName)
    expect(await names('  ÉMILE ')).toEqual(['Émile Zola'])
    expect(await names('0% r')).toEqual(['100% Real'])
    expect(await names('r_s')).toEqual(['under_score'])
    // As wildcards these would match "100% Real" and "under_score".
    expect(await names('1%l')).toEqual([])
    expect(await names('u_d')).toEqual([])
    expect(await names('nothing-matches-this')).toEqual([])
  })

  test.each([
    [{ q: '' }, 'query.q'],
    [{ q: '   ' }, 'query.q'],
    [{ q: 'x'.repeat(101) }, 'query.q'],
    [{ q: 'ann', limit: '0' }, 'query.limit'],
    [{ q: 'ann', limit: '101' }, 'query.limit'],
    [{ q: 'ann', cursor: 'not-a-cursor' }, 'query.cursor'],
    [{ q: 'ann', ids: newId() }, 'query'],
    [{}, 'query'],
  ])('422 naming the parameter: %j', async (params, field) => {
    const response = await search(params)
    expect(response.status).toBe(422)
    expect(response.body.errors.map((error: { field: string }) => error.field)).toContain(field)
  })

  test('401 without a token', async () => {
    expect((await user.request('GET', '/users?q=ann')).status).toBe(401)
  })
})

describe('GET /users?ids=', () => {
  test('public profiles in the order asked, unknown ids left out, no emails', async () => {
    const [first, second, third] = named
    const ids = [third?.id, newId(), first?.id, second?.id, first?.id].join(',')
    const response = await search({ ids })
    expect(response.status).toBe(200)
    expect(response.body.nextCursor).toBeNull()
    expect(response.body.items.map((item: { id: string }) => item.id)).toEqual([
      third?.id,
      first?.id,
      second?.id,
    ])
    expect(JSON.stringify(response.body)).not.toContain('@')
    // The second lookup is served from the cache, identically.
    expect((await search({ ids })).body).toEqual(response.body)
  })

  test.each([
    [{ ids: 'nope' }],
    [{ ids: `${newId()},,${newId()}` }],
    [{ ids: Array.from({ length: 101 }, () => newId()).join(',') }],
    [{ ids: newId(), cursor: 'x' }],
  ])('422 for bad ids: %#', async (params) => {
    const response = await search(params)
    expect(response.status).toBe(422)
    expect(response.body.errors[0].field).toMatch(/^query\.(ids|cursor)$/)
  })
})
