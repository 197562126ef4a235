import { fileURLToPath } from 'node:url'
import type { CloudEvent } from '@parley/contracts'
import { sql as drizzleSql } from 'drizzle-orm'
import { index, integer, jsonb, pgTable, primaryKey, text, timestamp, uuid } from 'drizzle-orm/pg-core'
import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js'
import { migrate } from 'drizzle-orm/postgres-js/migrator'
import postgres, { type Sql } from 'postgres'
import type { EventBus } from './events/bus'
import type { Logger } from './logger'
import type { Metrics } from './metrics'
import { RelayLoop, type RelayOptions } from './outbox'
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
    attempts: integer('attempts').notNull().default(0),
  },
  (table) => [index('outbox_created_at_idx').on(table.createdAt)],
)

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
 * own drizzle/ folder, given relative to the caller (`new URL('../../drizzle', import.meta.url)`).
 */
export function migrateService(
  config: { DATABASE_URL: string; MIGRATIONS_DIR?: string },
  serviceFolder: URL,
): Promise<void> {
  return runMigrations(config.DATABASE_URL, config.MIGRATIONS_DIR ?? fileURLToPath(serviceFolder))
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
export async function startOutboxRelay(sql: Sql, bus: EventBus, runtime: Runtime): Promise<PgOutboxRelay> {
  const relay = new PgOutboxRelay(sql, bus, runtime.logger, runtime.metrics)
  await relay.start()
  runtime.lifecycle.onDrain('outbox relay', () => relay.stop())
  return relay
}

/**
 * Applies committed drizzle-kit migrations over one dedicated connection. Deliberately not a
 * createPostgres pool: a migration (an index build, a backfill) may run far longer than any
 * request, so this connection has no statement timeout.
 */
export async function runMigrations(url: string, migrationsFolder: string): Promise<void> {
  const sql = postgres(url, { max: 1, onnotice: () => undefined })
  try {
    await migrate(drizzle(sql), { migrationsFolder })
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

/**
 * Publishes outbox rows with publisher confirms and deletes them once confirmed. Rows are
 * claimed with FOR UPDATE SKIP LOCKED so replicas share the work; a failed publish rolls
 * back and is retried with backoff, so nothing is lost while the broker is down. Commits
 * wake it through LISTEN/NOTIFY; polling covers a lost notification.
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
      async () => {
        const [row] = await sql<{ count: number }[]>`select count(*)::int as count from outbox`
        return row?.count ?? 0
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

  /** Publishes one batch; returns how many rows were relayed. */
  async relayBatch(): Promise<number> {
    if (!this.bus.isConnected) throw new Error('broker not connected')
    const limit = this.options.batchSize ?? 100
    return this.sql.begin(async (tx) => {
      const rows = await tx<{ id: string; event: CloudEvent }[]>`
        select id, event from outbox order by created_at, id limit ${limit} for update skip locked`
      if (rows.length === 0) return 0
      await Promise.all(rows.map((row) => this.bus.publishEvent(row.event)))
      await tx`delete from outbox where id = any(${rows.map((row) => row.id)}::uuid[])`
      return rows.length
    })
  }
}
