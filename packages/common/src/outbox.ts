import type { Logger } from './logger'
import type { Metrics } from './metrics'

export type RelayOptions = {
  /** Largest number of events published per batch (default 100). */
  batchSize?: number
  /** Time between polls when nothing woke the relay (default 1000 ms). */
  pollIntervalMs?: number
  /** Longest wait after failed batches, doubling from 200 ms (default 5000 ms). */
  maxBackoffMs?: number
}

/**
 * The loop every outbox relay runs: publish a batch, go on at once while batches come back
 * non-empty, otherwise sleep until the next poll or a `kick`; back off on failure (broker or
 * database down), so nothing is lost and nothing spins. The store-specific part is `relayBatch`.
 */
export class RelayLoop {
  private running = false
  private loop: Promise<void> | undefined
  private wake: (() => void) | undefined
  private readonly published
  private readonly log: Logger

  constructor(
    private readonly relayBatch: () => Promise<number>,
    logger: Logger,
    metrics: Metrics,
    countBacklog: () => Promise<number>,
    private readonly options: RelayOptions = {},
  ) {
    this.log = logger.child({ component: 'outbox' })
    this.published = metrics.counter('outbox_published_total', 'Outbox events relayed to the broker')
    const log = this.log
    metrics.gauge('outbox_backlog', 'Events written but not yet published', [], async function () {
      // On a failed count the last value stays: a sentinel would break sums and derivatives.
      try {
        this.set(await countBacklog())
      } catch (error) {
        log.debug({ err: error }, 'backlog count failed')
      }
    })
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
