// User search (GET /users?q=): how fast is the indexed search at scale, against a plain ILIKE?
// Seeds BENCH_USER_ROWS profiles (default 100000; the goal is stated for 1000000) into a
// database of its own (created with the service's migrations, dropped at the end), then times
// the service's search function (all tiers + loading the page's rows, as the route runs it)
// for representative queries, and the same ranking done the unindexed way (ILIKE over a copy
// of the table without indexes) on the same data in the same run. Checks both return the
// same page. Goal: p99 <= 10 ms at 10^6 profiles and >= 50x faster than the baseline.
//   bun bench/user/search.ts            BENCH_USER_ROWS=1000000 bun bench/user/search.ts
//   BENCH_USER_ITERATIONS (default 200) and BENCH_USER_BASELINE_ITERATIONS (default 20, 5 at 10^6)

import { loadavg } from 'node:os'
import { createPostgres } from '../../packages/common/src/postgres.ts'
import { createTestDatabase } from '../../packages/testkit/src/index.ts'
import { MIGRATIONS } from '../../services/user/src/db/index.ts'
import * as schema from '../../services/user/src/db/schema.ts'
import {
  decodeCursor,
  MIN_SUBSTRING_LENGTH,
  type SearchKey,
  searchProfiles,
} from '../../services/user/src/modules/profiles/search.ts'
import { percentile } from '../lib.ts'

const rows = Number(process.env.BENCH_USER_ROWS ?? 100_000)
const iterations = Number(process.env.BENCH_USER_ITERATIONS ?? 200)
const baselineIterations = Number(process.env.BENCH_USER_BASELINE_ITERATIONS ?? (rows >= 500_000 ? 5 : 20))
const PAGE = 20

/** What people type into a user picker, and which tier answers it on the seeded data. */
const QUERIES: { q: string; kind: string; page2?: boolean }[] = [
  { q: 'ali', kind: 'first-name prefix' },
  { q: 'john', kind: 'first-name prefix' },
  { q: 'ali', kind: 'first-name prefix, page 2', page2: true },
  { q: 'olivia smith', kind: 'exact full name' },
  { q: 'smith', kind: 'common last name (substring)' },
  { q: 'smith', kind: 'common last name, page 2', page2: true },
  { q: 'kowalski', kind: 'last name (substring)' },
  { q: 'lex', kind: 'fragment (substring)' },
  { q: 'j', kind: 'one letter (prefix only)' },
  { q: 'ma', kind: 'two letters (prefix only)' },
  { q: 'dorro', kind: 'rare fragment' },
  { q: 'velri mar', kind: 'rare full-name fragment' },
  { q: 'zzqx', kind: 'no match' },
]

/**
 * Names with a realistic shape: two thirds of first names and half of last names come from
 * short lists with Zipf-like weights (many Smiths, few Hansens), the rest are made of random
 * syllables (a long tail of rare names). Emails follow common patterns. Deterministic (setseed).
 */
const SEED_SQL = (count: number) => `
select setseed(0.42);
with words as (
  select
    array['James','Mary','John','Patricia','Robert','Jennifer','Michael','Linda','William','Elizabeth','David','Barbara','Richard','Susan','Joseph','Jessica','Thomas','Sarah','Charles','Karen','Mohammed','Fatima','Ali','Aisha','Wei','Mei','Hiroshi','Yuki','Carlos','Maria','Jose','Ana','Luca','Giulia','Pierre','Chloe','Hans','Anna','Ivan','Olga','Raj','Priya','Kwame','Amara','Sven','Ingrid','Liam','Emma','Noah','Olivia','Alex','Alexander','Alexandra','Sofia','Mateo','Lucas','Ethan','Hannah','Zoe','Leo'] first_names,
    array['Smith','Johnson','Williams','Brown','Jones','Garcia','Miller','Davis','Rodriguez','Martinez','Hernandez','Lopez','Gonzalez','Wilson','Anderson','Thomas','Taylor','Moore','Jackson','Martin','Lee','Perez','Thompson','White','Harris','Sanchez','Clark','Ramirez','Lewis','Robinson','Walker','Young','Allen','King','Wright','Scott','Torres','Nguyen','Hill','Flores','Wang','Li','Zhang','Liu','Chen','Kim','Park','Tanaka','Suzuki','Sato','Kowalski','Nowak','Muller','Schmidt','Rossi','Russo','Dubois','Martin','Silva','Santos','Ivanov','Petrov','Singh','Kumar','Patel','Khan','Okafor','Mensah','Larsen','Hansen'] last_names,
    array['ka','ri','mo','vel','an','to','lu','sa','mi','ren','da','el','or','is','na','bo','te','ju','li','ve','ro','ha','ne','qu','zi','fa','go','per','tal','sun','mar','kin','dor','bel','ash','wen','ith','ox','ul','yan'] syl
),
people as (
  select i, syl,
    case when random() < 0.65 then first_names[1 + floor(60 * power(random(), 2.2))::int]
         else initcap(syl[1 + floor(random() * 40)::int] || syl[1 + floor(random() * 40)::int]
              || case when random() < 0.5 then syl[1 + floor(random() * 40)::int] else '' end) end as first_name,
    case when random() < 0.5 then last_names[1 + floor(70 * power(random(), 2.2))::int]
         else initcap(syl[1 + floor(random() * 40)::int] || syl[1 + floor(random() * 40)::int] || syl[1 + floor(random() * 40)::int]
              || case when random() < 0.5 then syl[1 + floor(random() * 40)::int] else '' end) end as last_name,
    floor(random() * 4)::int as pattern,
    (array['example.com','mail.test','corp.example','inbox.test'])[1 + floor(random() * 4)::int] as domain
  from generate_series(1, ${count}) i, words
)
insert into profiles (id, email, display_name, created_at)
select gen_random_uuid(),
  lower(case pattern when 0 then first_name || '.' || last_name || i
                     when 1 then first_name || i
                     when 2 then left(first_name, 1) || last_name || i
                     else syl[1 + (i % 40)] || syl[1 + ((i / 40) % 40)] || last_name || i end) || '@' || domain,
  first_name || ' ' || last_name,
  now() - (i || ' seconds')::interval
from people;
`

/**
 * The same ranking without the search indexes: ILIKE over an index-less copy of the table
 * (substrings only from MIN_SUBSTRING_LENGTH characters, as the service matches them). The
 * queries hold no LIKE wildcards, so they need no escaping here.
 */
function baselineQuery(q: string, offset: number) {
  const pattern = [...q].length >= MIN_SUBSTRING_LENGTH ? `%${q}%` : `${q}%`
  return postgres.sql<{ id: string }[]>`
    select id from profiles_baseline
    where display_name ilike ${pattern}
    order by
      case when lower(display_name) = lower(${q}) then 0
           when lower(display_name) like lower(${q}) || '%' then 1
           else 2 end,
      lower(display_name) collate "C", id
    limit ${PAGE} offset ${offset}`
}

async function time(runs: number, fn: () => Promise<unknown>): Promise<number[]> {
  const samples: number[] = []
  for (let run = 0; run < runs; run++) {
    const started = performance.now()
    await fn()
    samples.push(performance.now() - started)
  }
  return samples.sort((a, b) => a - b)
}

const ms = (value: number) => value.toFixed(value < 10 ? 2 : 1).padStart(8)

const database = await createTestDatabase(MIGRATIONS)
// No statement timeout: seeding 10^6 rows, building the indexes and the unindexed baseline
// each take longer than a request ever may.
const postgres = createPostgres(database.url, { schema, max: 2, statementTimeoutMs: 0 })
const { db } = postgres
try {
  console.log(
    `user search benchmark: ${rows} profiles, load average ${loadavg()
      .map((v) => v.toFixed(1))
      .join(' ')}`,
  )
  let started = performance.now()
  // Build the search indexes after the bulk insert (as the migrations define them, statistics
  // targets included): faster than maintaining them row by row.
  const indexes = await postgres.sql<{ name: string; definition: string; statisticsTargets: string[] }[]>`
    select i.indexname as name, i.indexdef as definition,
      array(select format('alter index %I alter column %s set statistics %s', i.indexname, a.attnum, a.attstattarget)
            from pg_attribute a
            where a.attrelid = format('%I', i.indexname)::regclass and a.attstattarget > 0) as "statisticsTargets"
    from pg_indexes i
    where i.tablename = 'profiles' and i.indexname <> 'profiles_pkey'`
  for (const index of indexes) await postgres.sql.unsafe(`drop index "${index.name}"`)
  await postgres.sql.unsafe(SEED_SQL(rows))
  for (const index of indexes) {
    await postgres.sql.unsafe(index.definition)
    for (const statement of index.statisticsTargets) await postgres.sql.unsafe(statement)
  }
  await postgres.sql.unsafe('vacuum analyze profiles')
  await postgres.sql.unsafe(
    'create table profiles_baseline as select id, email, display_name, bio, avatar_url, created_at from profiles',
  )
  await postgres.sql.unsafe('vacuum analyze profiles_baseline')
  console.log(`seeded and indexed in ${((performance.now() - started) / 1000).toFixed(1)} s`)

  console.log(
    `\n${'query'.padEnd(14)}${'kind'.padEnd(32)}${'indexed p50'.padStart(12)}${'p99'.padStart(9)}${'ILIKE p50'.padStart(11)}${'p99'.padStart(9)}${'x p50'.padStart(8)}${'x p99'.padStart(8)}  same page`,
  )
  const indexedAll: number[] = []
  const baselineAll: number[] = []
  const ratios: number[] = []
  let worstP99 = 0
  started = performance.now()
  for (const { q, kind, page2 } of QUERIES) {
    let cursor: SearchKey | undefined
    let skip = 0
    if (page2) {
      const first = await searchProfiles(db, q, PAGE)
      cursor = first.nextCursor ? decodeCursor(first.nextCursor) : undefined
      skip = PAGE
    }
    const indexedPage = await searchProfiles(db, q, PAGE, cursor)
    const baselinePage = await baselineQuery(q, skip)
    const samePage =
      JSON.stringify(indexedPage.rows.map((row) => row.id)) ===
      JSON.stringify(baselinePage.map((row) => row.id))

    await time(5, () => searchProfiles(db, q, PAGE, cursor))
    const indexed = await time(iterations, () => searchProfiles(db, q, PAGE, cursor))
    // The baseline's page 2 is its page 1 query with an offset (it has no cursor to use).
    const baseline = await time(baselineIterations, () => baselineQuery(q, skip))
    indexedAll.push(...indexed)
    baselineAll.push(...baseline)
    const p99 = percentile(indexed, 99)
    worstP99 = Math.max(worstP99, p99)
    const ratio50 = percentile(baseline, 50) / percentile(indexed, 50)
    const ratio99 = percentile(baseline, 99) / p99
    ratios.push(ratio50)
    console.log(
      `${JSON.stringify(q).padEnd(14)}${kind.padEnd(32)}${ms(percentile(indexed, 50))}${ms(p99).padStart(9)}${ms(percentile(baseline, 50)).padStart(11)}${ms(percentile(baseline, 99)).padStart(9)}${ratio50.toFixed(0).padStart(7)}x${ratio99.toFixed(0).padStart(7)}x  ${samePage ? 'yes' : 'NO'}`,
    )
  }
  indexedAll.sort((a, b) => a - b)
  baselineAll.sort((a, b) => a - b)
  const minRatio = Math.min(...ratios)
  console.log(
    `\nall queries (ms): indexed p50 ${percentile(indexedAll, 50).toFixed(2)} p99 ${percentile(indexedAll, 99).toFixed(2)}; ILIKE baseline p50 ${percentile(baselineAll, 50).toFixed(1)} p99 ${percentile(baselineAll, 99).toFixed(1)}; ratio of p50s ${(percentile(baselineAll, 50) / percentile(indexedAll, 50)).toFixed(0)}x, of p99s ${(percentile(baselineAll, 99) / percentile(indexedAll, 99)).toFixed(0)}x`,
  )
  console.log(
    `goal at 10^6 (p99 <= 10 ms, >= 50x): worst per-query p99 ${worstP99.toFixed(2)} ms, smallest per-query p50 ratio ${minRatio.toFixed(0)}x (${rows} rows, ${iterations}/${baselineIterations} runs, measured in ${((performance.now() - started) / 1000).toFixed(0)} s, load average ${loadavg()[0]?.toFixed(1)})`,
  )
} finally {
  await postgres.close()
  await database.drop()
}
