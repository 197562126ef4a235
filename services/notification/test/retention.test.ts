import { afterAll, beforeAll, expect, setDefaultTimeout, test } from 'bun:test'
import { waitFor } from '@parley/testkit'
import { migrate } from '../src/db'
import { INDEXES } from '../src/db/indexes'
import { type Harness, newUserId, startHarness } from './harness'

// Real servers on a shared 2-core machine: give the pipelines time under load (Bun's default is 5 s).
setDefaultTimeout(30_000)

let h: Harness

beforeAll(async () => {
  h = await startHarness({
    RETENTION_INTERVAL_MS: '1000',
    NOTIFICATION_RETENTION_DAYS: '90',
    EMAIL_DELIVERY_RETENTION_DAYS: '30',
    PROCESSED_EVENTS_RETENTION_DAYS: '7',
  })
})

afterAll(async () => {
  await h?.close()
})

test('migrate builds the purge indexes, valid', async () => {
  await migrate({ DATABASE_URL: h.db.url })
  const rows = await h.sql<{ name: string; valid: boolean }[]>`
    select c.relname as name, i.indisvalid as valid from pg_index i join pg_class c on c.oid = i.indexrelid
    where c.relname = any(${INDEXES.map((index) => index.name)}) order by 1`
  expect([...rows]).toEqual(
    INDEXES.map((index) => ({ name: index.name, valid: true })).sort((a, b) => a.name.localeCompare(b.name)),
  )
})

test('the running service purges expired notifications, deliveries and event ids, and nothing else', async () => {
  const userId = newUserId()
  const days = (n: number) => h.sql`now() - make_interval(days => ${n}::int)`
  await h.sql`insert into notifications (id, user_id, type, payload, created_at, read_at) values
    (${Bun.randomUUIDv7()}, ${userId}, 'message.received', '{}', ${days(100)}, null),
    (${Bun.randomUUIDv7()}, ${userId}, 'message.received', '{}', ${days(100)}, now()),
    (${Bun.randomUUIDv7()}, ${userId}, 'message.received', '{"kept":true}', ${days(10)}, null)`
  await h.sql`insert into email_deliveries (event_id, recipient_id, template, status, claimed_until, created_at, completed_at) values
    ('old-sent', ${userId}, 'new_message', 'sent', ${days(40)}, ${days(40)}, ${days(40)}),
    ('old-skipped', ${userId}, 'new_message', 'skipped', ${days(40)}, ${days(40)}, ${days(40)}),
    ('old-claim', ${userId}, 'new_message', 'sending', now() + interval '1 minute', ${days(40)}, null),
    ('recent', ${userId}, 'new_message', 'sent', ${days(1)}, ${days(1)}, ${days(1)})`
  await h.sql`insert into processed_events (consumer, event_id, processed_at) values
    ('test', ${`old-${userId}`}, ${days(8)}), ('test', ${`new-${userId}`}, ${days(1)})`

  await waitFor(
    async () => {
      const [row] = await h.sql<{ left: number }[]>`
        select (select count(*) from notifications where user_id = ${userId})::int
             + (select count(*) from email_deliveries where recipient_id = ${userId})::int
             + (select count(*) from processed_events where event_id like ${`%-${userId}`})::int as left`
      return row?.left === 4 || undefined
    },
    { what: 'a retention pass' },
  )
  expect(
    (await h.sql`select payload from notifications where user_id = ${userId}`).map((row) => row.payload),
  ).toEqual([{ kept: true }])
  // The live claim (completed_at null) is never purged, however old.
  expect(
    (await h.sql`select event_id from email_deliveries where recipient_id = ${userId} order by event_id`).map(
      (row) => row.event_id,
    ),
  ).toEqual(['old-claim', 'recent'])
  expect(
    (await h.sql`select event_id from processed_events where consumer = 'test'`).map((row) => row.event_id),
  ).toEqual([`new-${userId}`])
  expect(await h.metric('retention_purged_total', { table: 'notifications' })).toBe(2)
  expect(await h.metric('retention_purged_total', { table: 'email_deliveries' })).toBe(2)
  expect(await h.metric('retention_failures_total')).toBe(0)
})
