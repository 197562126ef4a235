import { fileURLToPath } from 'node:url'
import type { CloudEvent } from '@parley/contracts'
import { sql as drizzleSql } from 'drizzle-orm'
import { index, integer, jsonb, pgTable, primaryKey, text, timestamp, uuid } from 'drizzle-orm/pg-core'
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js'
import { migrate } from 'drizzle-orm/postgres-js/migrator'
import postgres, { type Sql, type TransactionSql } from 'postgres'
import { BrokerUnavailableError, type EventBus } from './events/bus'
import type { Logger } from './logger'
import type { Metrics } from './metrics'
import {
  DEFAULT_OUTBOX_MAX_ATTEMPTS,
  type PublishFault,
  publishEach,
  RelayLoop,
  type RelayOptions,
  retryDelayMs,
} from './outbox'
import type { Runtime } from './runtime'

export type { Sql }

/** Events waiting to be published, written in the same transaction as the state change. */
export const outbox = pgTable(
  'outbox',
  {
    id: uuid('id').primaryKey(),
    type: text('type').notNull(),
    event: jsonb('event').$type<CloudEvent>().notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    /** Failed publishes so far; at OUTBOX_MAX_ATTEMPTS the row moves to `outbox_dead`. */
    attempts: integer('attempts').notNull().default(0),
    /** Set after a failed publish: the relay leaves the row alone until then (null: now). */
    nextAttemptAt: timestamp('next_attempt_at', { withTimezone: true }),
  },
  (table) => [index('outbox_created_at_idx').on(table.createdAt)],
)

/**
 * Events the relay gave up on after OUTBOX_MAX_ATTEMPTS failed publishes, so they no longer
 * hold up the others. `reason` is `invalid` or `rejected` (see PublishFault), `error` the error's
 * class and code. Replay: insert (id, type, event, created_at) back into `outbox`, delete here.
 */
export const outboxDead = pgTable('outbox_dead', {
  id: uuid('id').primaryKey(),
  type: text('type').notNull(),
  event: jsonb('event').$type<CloudEvent>().notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
  attempts: integer('attempts').notNull(),
  reason: text('reason').notNull(),
  error: text('error').notNull(),
  deadAt: timestamp('dead_at', { withTimezone: true }).notNull().defaultNow(),
})

/** Ids of events a consumer has applied, for idempotent consumption. */
export const processedEvents = pgTable(
  'processed_events',
  {
    consumer: text('consumer').notNull(),
    eventId: text('event_id').notNull(),
    processedAt: timestamp('processed_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (table) => [primaryKey({ columns: [table.consumer, table.eventId] })],
)

const OUTBOX_CHANNEL = 'parley_outbox'

export type Database<S extends Record<string, unknown>> = PostgresJsDatabase<S> & { $client: Sql }
/** The transaction `db.transaction(tx => …)` hands its callback. */
export type Transaction<S extends Record<string, unknown>> = Parameters<
  Parameters<Database<S>['transaction']>[0]
>[0]
/** A transaction or the database itself: anything that can run a query. */
export type Queryable = Pick<PostgresJsDatabase<Record<string, unknown>>, 'insert' | 'execute'>

export type PostgresClient<S extends Record<string, unknown>> = {
  sql: Sql
  db: Database<S>
  check: () => Promise<void>
  close: () => Promise<void>
}

/**
 * How long one statement of a service's pool may run. Requests are answered within the
 * gateway's upstream timeouts anyway: a statement still running after this is a runaway plan
 * or a lock pile-up, and cancelling it gives the connection back instead of holding it.
 */
export const DEFAULT_STATEMENT_TIMEOUT_MS = 10_000

export function createPostgres<S extends Record<string, unknown>>(
  url: string,
  options: {
    schema: S
    max?: number
    applicationName?: string
    /** PostgreSQL's `statement_timeout` for every connection of the pool; 0 turns it off. */
    statementTimeoutMs?: number
  },
): PostgresClient<S> {
  const sql = postgres(url, {
    max: options.max ?? 10,
    idle_timeout: 30,
    connect_timeout: 5,
    onnotice: () => undefined,
    // Startup parameters: set by the server on each new connection, so no connection of the
    // pool ever runs without it (a `SET` per connection could be skipped or reset).
    connection: {
      application_name: options.applicationName ?? 'parley',
      statement_timeout: options.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS,
    },
  })
  const db = drizzle(sql, { schema: options.schema }) as Database<S>
  return {
    sql,
    db,
    check: async () => {
      await sql`select 1`
    },
    close: () => sql.end({ timeout: 5 }),
  }
}

/**
 * Applies a service's committed drizzle-kit migrations: from MIGRATIONS_DIR when set (a
 * compiled binary has no source folder; the image sets /app/drizzle), else from the service's
 * own drizzle/ folder, given relative to the caller (`new URL('../../drizzle', import.meta.url)`);
 * then builds its `indexes` (services/<name>/src/db/indexes.ts) concurrently.
 */
export function migrateService(
  config: { DATABASE_URL: string; MIGRATIONS_DIR?: string },
  serviceFolder: URL,
  indexes: readonly ConcurrentIndex[] = [],
): Promise<void> {
  return runMigrations(config.DATABASE_URL, config.MIGRATIONS_DIR ?? fileURLToPath(serviceFolder), indexes)
}

/** A PostgreSQL client for a service, closed at shutdown. */
export function postgresFor<S extends Record<string, unknown>>(
  config: { DATABASE_URL: string; DATABASE_POOL_MAX: number; DATABASE_STATEMENT_TIMEOUT_MS: number },
  runtime: Runtime,
  schema: S,
): PostgresClient<S> {
  const client = createPostgres(config.DATABASE_URL, {
    schema,
    max: config.DATABASE_POOL_MAX,
    applicationName: `parley-${runtime.service}`,
    statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS,
  })
  runtime.lifecycle.onClose('postgres', client.close)
  return client
}

/** Starts the outbox relay of a service; it stops (finishing its batch) when the process drains. */
export async function startOutboxRelay(
  sql: Sql,
  bus: EventBus,
  runtime: Runtime,
  options: RelayOptions = {},
): Promise<PgOutboxRelay> {
  const relay = new PgOutboxRelay(sql, bus, runtime.logger, runtime.metrics, options)
  await relay.start()
  runtime.lifecycle.onDrain('outbox relay', () => relay.stop())
  return relay
}

/**
 * An index built with CREATE INDEX CONCURRENTLY after the drizzle migrations, declared outside
 * drizzle's journal: drizzle runs all migrations in one transaction, where CONCURRENTLY is refused,
 * and a plain CREATE INDEX blocks every write to a large table for the whole build. A definition
 * never changes under the same name (an existing valid index is kept as is): give a new one a new name.
 */
export type ConcurrentIndex = {
  /** Unquoted lower-case identifier, unique in the schema. */
  name: string
  /** What follows `ON` in CREATE INDEX, from code: `table (columns) [where …]`. */
  on: string
  unique?: boolean
}

const INDEX_NAME = /^[a-z_][a-z0-9_]*$/
/** Advisory lock key: one migrator at a time builds the indexes of a database. */
const INDEX_BUILD_LOCK = 'parley:concurrent-indexes'

/**
 * Builds missing `indexes` concurrently. An interrupted or failed build leaves an INVALID index
 * (`pg_index.indisvalid` false) that IF NOT EXISTS would accept as done: it is dropped and rebuilt.
 * A failed build throws, so the migration fails and the next run repairs it.
 */
async function buildConcurrentIndexes(sql: Sql, indexes: readonly ConcurrentIndex[]): Promise<void> {
  // Polled try-lock on this session: a waiting pg_advisory_lock sits in a transaction that the
  // holder's CONCURRENTLY build must wait out, a deadlock.
  const tryLock = async () =>
    (
      await sql<{ locked: boolean }[]>`select pg_try_advisory_lock(hashtext(${INDEX_BUILD_LOCK})) as locked`
    )[0]?.locked === true
  while (!(await tryLock())) await Bun.sleep(250)
  try {
    for (const index of indexes) {
      if (!INDEX_NAME.test(index.name)) throw new Error(`invalid index name ${index.name}`)
      const [existing] = await sql<{ valid: boolean }[]>`
        select i.indisvalid as valid from pg_index i join pg_class c on c.oid = i.indexrelid
        where c.relname = ${index.name} and c.relnamespace = current_schema()::regnamespace`
      if (existing?.valid) continue
      if (existing) await sql.unsafe(`drop index concurrently if exists "${index.name}"`)
      await sql.unsafe(
        `create ${index.unique ? 'unique ' : ''}index concurrently if not exists "${index.name}" on ${index.on}`,
      )
    }
  } finally {
    await sql`select pg_advisory_unlock(hashtext(${INDEX_BUILD_LOCK}))`
  }
}

/**
 * Applies committed drizzle-kit migrations, then builds `indexes` concurrently, over one dedicated
 * connection. Deliberately not a createPostgres pool: a migration (an index build, a backfill) may
 * run far longer than any request, so this connection has no statement timeout.
 */
export async function runMigrations(
  url: string,
  migrationsFolder: string,
  indexes: readonly ConcurrentIndex[] = [],
): Promise<void> {
  const sql = postgres(url, { max: 1, onnotice: () => undefined })
  try {
    await migrate(drizzle(sql), { migrationsFolder })
    if (indexes.length > 0) await buildConcurrentIndexes(sql, indexes)
  } finally {
    await sql.end()
  }
}

/** Adds events to the outbox inside the caller's transaction; the relay is woken on commit. */
export async function enqueueEvents(tx: Queryable, events: CloudEvent[]): Promise<void> {
  if (events.length === 0) return
  await tx.insert(outbox).values(events.map((event) => ({ id: event.id, type: event.type, event })))
  // NOTIFY is delivered only if the transaction commits: no wake-up for rolled-back writes.
  await tx.execute(drizzleSql`select pg_notify(${OUTBOX_CHANNEL}, '')`)
}

/**
 * Runs `apply` at most once per (consumer, event id): the marker and the effect commit
 * together, so a redelivered event is skipped. Returns false for a duplicate.
 */
export async function consumeOnce<S extends Record<string, unknown>>(
  db: Database<S>,
  consumer: string,
  eventId: string,
  apply: (tx: Transaction<S>) => Promise<void>,
): Promise<boolean> {
  return db.transaction(async (tx) => {
    const inserted = await tx
      .insert(processedEvents)
      .values({ consumer, eventId })
      .onConflictDoNothing()
      .returning({ eventId: processedEvents.eventId })
    if (inserted.length === 0) return false
    await apply(tx)
    return true
  })
}

/** An outbox row as the relay reads it. */
type PendingRow = { id: string; type: string; event: CloudEvent; attempts: number }

/**
 * Publishes outbox rows with publisher confirms and deletes them once confirmed. Rows are
 * claimed with FOR UPDATE SKIP LOCKED so replicas share the work, and each row is settled on its
 * own: a row that fails gets its attempts counted and a later retry time, and after
 * `maxAttempts` it moves to `outbox_dead`, so it never blocks or republishes the others. While
 * the broker is unavailable nothing is counted: the batch is kept and retried with backoff.
 * Commits wake it through LISTEN/NOTIFY; polling covers a lost notification.
 */
export class PgOutboxRelay {
  private readonly loop: RelayLoop
  private unlisten: (() => Promise<void>) | undefined
  private readonly log: Logger

  constructor(
    private readonly sql: Sql,
    private readonly bus: EventBus,
    logger: Logger,
    metrics: Metrics,
    private readonly options: RelayOptions = {},
  ) {
    this.log = logger.child({ component: 'outbox' })
    this.loop = new RelayLoop(
      () => this.relayBatch(),
      logger,
      metrics,
      {
        backlog: async () => {
          const [row] = await sql<{ count: number }[]>`select count(*)::int as count from outbox`
          return row?.count ?? 0
        },
        oldestPendingSeconds: async () => {
          const [row] = await sql<{ age: number }[]>`
            select coalesce(extract(epoch from now() - min(created_at)), 0)::float8 as age from outbox`
          return row?.age ?? 0
        },
        dead: async () => {
          const [row] = await sql<{ count: number }[]>`select count(*)::int as count from outbox_dead`
          return row?.count ?? 0
        },
      },
      options,
    )
  }

  async start(): Promise<void> {
    try {
      const listener = await this.sql.listen(OUTBOX_CHANNEL, () => this.kick())
      this.unlisten = listener.unlisten
    } catch (error) {
      this.log.warn({ err: error }, 'LISTEN failed; relying on polling')
    }
    this.loop.start()
  }

  /** Wakes the relay now instead of at the next poll. */
  kick(): void {
    this.loop.kick()
  }

  async stop(): Promise<void> {
    await this.loop.stop()
    await this.unlisten?.().catch(() => undefined)
  }

  /** Publishes one batch; returns how many rows were relayed. Throws while the broker is unavailable. */
  async relayBatch(): Promise<number> {
    if (!this.bus.isConnected) throw new BrokerUnavailableError('broker not connected')
    const limit = this.options.batchSize ?? 100
    const { published, unavailable } = await this.sql.begin(async (tx) => {
      const rows = await tx<PendingRow[]>`
        select id, type, event, attempts from outbox
        where next_attempt_at is null or next_attempt_at <= now()
        order by created_at, id limit ${limit} for update skip locked`
      if (rows.length === 0) return { published: 0, unavailable: false }
      const outcomes = await publishEach(
        this.bus,
        rows.map((row) => row.event),
      )
      const done = rows.filter((_, index) => outcomes[index]?.status === 'published').map((row) => row.id)
      if (done.length > 0) await tx`delete from outbox where id = any(${done}::uuid[])`
      for (const [index, row] of rows.entries()) {
        const outcome = outcomes[index]
        if (outcome?.status === 'failed') await this.recordFailure(tx, row, outcome.fault)
      }
      return {
        published: done.length,
        unavailable: outcomes.some((outcome) => outcome.status === 'unavailable'),
      }
    })
    // Nothing got through: the broker's fault, so back off (the rows stay as they were).
    if (unavailable && published === 0) throw new BrokerUnavailableError('broker confirmed none of the batch')
    return published
  }

  /** Counts a failed publish of `row`: a later retry, or the dead table after the last attempt. */
  private async recordFailure(tx: TransactionSql, row: PendingRow, fault: PublishFault): Promise<void> {
    const attempts = row.attempts + 1
    const log = { eventId: row.id, type: row.type, attempts, ...fault }
    if (attempts >= (this.options.maxAttempts ?? DEFAULT_OUTBOX_MAX_ATTEMPTS)) {
      await tx`
        with moved as (delete from outbox where id = ${row.id} returning id, type, event, created_at)
        insert into outbox_dead (id, type, event, created_at, attempts, reason, error)
        select id, type, event, created_at, ${attempts}, ${fault.reason}, ${fault.error} from moved
        on conflict (id) do nothing`
      this.loop.countDead(fault.reason)
      this.log.error(log, 'outbox event moved to outbox_dead')
    } else {
      const delayMs = retryDelayMs(attempts, this.options)
      await tx`
        update outbox set attempts = ${attempts},
          next_attempt_at = now() + ${delayMs}::int * interval '1 millisecond'
        where id = ${row.id}`
      this.log.warn({ ...log, retryInMs: delayMs }, 'outbox event not published, retrying later')
    }
  }
}
