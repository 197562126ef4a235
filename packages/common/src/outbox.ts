import type { CloudEvent } from '@parley/contracts'
import type { EventBus } from './events/bus'
import { EventContractError } from './events/envelope'
import { errorKind, type Logger } from './logger'
import type { Metrics } from './metrics'

/** Failed publishes of one event before its relay moves it to `outbox_dead` (OUTBOX_MAX_ATTEMPTS). */
export const DEFAULT_OUTBOX_MAX_ATTEMPTS = 10

export type RelayOptions = {
  /** Largest number of events published per batch (default 100). */
  batchSize?: number
  /** Time between polls when nothing woke the relay (default 1000 ms). */
  pollIntervalMs?: number
  /** Longest wait after failed batches (broker or database down), doubling from 200 ms (default 5000 ms). */
  maxBackoffMs?: number
  /** Failed publishes of one event before it is moved to `outbox_dead` (default 10). */
  maxAttempts?: number
  /** Wait before an event that failed is tried again, doubling per failure (default 1000 ms)… */
  retryDelayMs?: number
  /** …up to this (default 60 s: ten attempts take about four minutes). */
  maxRetryDelayMs?: number
}

/**
 * Why one event could not be published, as stored with it when it is dead-lettered: `invalid`
 * (the bus refused it, e.g. a type this version does not know or a malformed envelope) or
 * `rejected` (the broker refused it while it took the events after it), and the error's class
 * and code. Never the error's text: it can quote the event.
 */
export type PublishFault = { reason: 'invalid' | 'rejected'; error: string }

/** What became of one event of a batch; `unavailable`: the broker took nothing from it on. */
export type PublishOutcome =
  | { status: 'published' }
  | { status: 'failed'; fault: PublishFault }
  | { status: 'unavailable' }

/**
 * Publishes a batch in order, each event on its own, and says per event what happened. A broker
 * failure counts against an event only if the broker confirmed an event published after it on
 * the same channel: a dropped connection, a closed channel or a broker that stops confirming
 * fails everything from some point on, and that is no event's fault (the rows are kept, not
 * counted). An event the bus refuses before sending is always that event's fault.
 */
export async function publishEach(bus: EventBus, events: readonly CloudEvent[]): Promise<PublishOutcome[]> {
  const results = await Promise.allSettled(events.map((event) => bus.publishEvent(event)))
  const lastConfirmed = results.findLastIndex((result) => result.status === 'fulfilled')
  return results.map((result, index): PublishOutcome => {
    if (result.status === 'fulfilled') return { status: 'published' }
    const { name, code } = errorKind(result.reason)
    const error = code === undefined ? name : `${name}:${code}`
    if (result.reason instanceof EventContractError)
      return { status: 'failed', fault: { reason: 'invalid', error } }
    if (index < lastConfirmed) return { status: 'failed', fault: { reason: 'rejected', error } }
    return { status: 'unavailable' }
  })
}

/** Wait before the next try of an event that has failed `attempts` times. */
export function retryDelayMs(attempts: number, options: RelayOptions): number {
  const base = options.retryDelayMs ?? 1000
  return Math.min(base * 2 ** Math.max(attempts - 1, 0), options.maxRetryDelayMs ?? 60_000)
}

/** What the relay's gauges report, read from the store at each scrape. */
export type OutboxStats = {
  /** Events written but not yet published. */
  backlog: () => Promise<number>
  /** Age of the oldest of them, 0 when there is none. */
  oldestPendingSeconds: () => Promise<number>
  /** Events in the dead table or collection. */
  dead: () => Promise<number>
}

/**
 * The loop every outbox relay runs: publish a batch, go on at once while batches come back
 * non-empty, otherwise sleep until the next poll or a `kick`; back off on failure (broker or
 * database down), so nothing is lost and nothing spins. The store-specific part is `relayBatch`,
 * which isolates failing events itself (attempts, retry time, dead table) and throws only when
 * the broker or the store is unavailable.
 */
export class RelayLoop {
  private running = false
  private loop: Promise<void> | undefined
  private wake: (() => void) | undefined
  private readonly published
  private readonly deadLettered
  private readonly log: Logger

  constructor(
    private readonly relayBatch: () => Promise<number>,
    logger: Logger,
    metrics: Metrics,
    stats: OutboxStats,
    private readonly options: RelayOptions = {},
  ) {
    this.log = logger.child({ component: 'outbox' })
    this.published = metrics.counter('outbox_published_total', 'Outbox events published to the broker')
    this.deadLettered = metrics.counter(
      'outbox_dead_total',
      'Outbox events moved to outbox_dead after failing OUTBOX_MAX_ATTEMPTS times, by reason',
      ['reason'],
    )
    const log = this.log
    const gauge = (name: string, help: string, read: () => Promise<number>) =>
      metrics.gauge(name, help, [], async function () {
        // On a failed read the last value stays: a sentinel would break sums and derivatives.
        try {
          this.set(await read())
        } catch (error) {
          log.debug({ err: error, metric: name }, 'outbox gauge read failed')
        }
      })
    gauge('outbox_backlog', 'Events written but not yet published', stats.backlog)
    gauge(
      'outbox_oldest_pending_seconds',
      'Age of the oldest event waiting to be published (0: none)',
      stats.oldestPendingSeconds,
    )
    gauge('outbox_dead', 'Events in outbox_dead, waiting for someone to replay or delete them', stats.dead)
  }

  /** Records an event moved to the dead table or collection. */
  countDead(reason: PublishFault['reason']): void {
    this.deadLettered.inc({ reason })
  }

  start(): void {
    if (this.running) return
    this.running = true
    this.loop = this.run()
  }

  /** Wakes the relay now instead of at the next poll. */
  kick(): void {
    this.wake?.()
  }

  /** Finishes the batch in flight and returns. */
  async stop(): Promise<void> {
    this.running = false
    this.kick()
    await this.loop
  }

  private async run(): Promise<void> {
    const poll = this.options.pollIntervalMs ?? 1000
    let backoff = 0
    while (this.running) {
      let relayed = 0
      try {
        relayed = await this.relayBatch()
        this.published.inc(relayed)
        backoff = 0
      } catch (error) {
        backoff = Math.min(Math.max(backoff * 2, 200), this.options.maxBackoffMs ?? 5000)
        this.log.warn({ err: error, backoffMs: backoff }, 'relay failed')
      }
      if (relayed > 0 && backoff === 0) continue
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, backoff || poll)
        this.wake = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      this.wake = undefined
    }
  }
}
