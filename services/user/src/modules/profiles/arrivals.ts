import type { Logger } from '@parley/common'
import type { Sql } from '@parley/common/postgres'

/** NOTIFY channel on which the projection announces each profile it creates (payload: user id). */
export const PROFILE_CREATED_CHANNEL = 'user_profile_created'

/**
 * Wakes requests waiting for a profile the projection has not created yet (a client that
 * reads its profile right after registering). Every replica LISTENs, so whichever one
 * consumed the event, the waiting one hears of it; callers also re-check on a timer, so a
 * lost notification only costs a little latency.
 */
export class ProfileArrivals {
  private readonly waiters = new Map<string, Set<() => void>>()
  private unlisten: (() => Promise<void>) | undefined

  constructor(
    private readonly sql: Sql,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    try {
      const listener = await this.sql.listen(PROFILE_CREATED_CHANNEL, (userId) => this.announce(userId))
      this.unlisten = listener.unlisten
    } catch (error) {
      this.logger.warn({ err: error }, 'LISTEN failed; profile waits rely on polling')
    }
  }

  async stop(): Promise<void> {
    await this.unlisten?.().catch(() => undefined)
  }

  /**
   * Runs `load` until it finds the profile or `timeoutMs` has passed, re-running it when the
   * profile is announced or every `pollMs`. The waiter is registered before each `load`, so
   * an announcement that lands in between is not missed.
   */
  async waitFor<T>(
    userId: string,
    load: () => Promise<T | undefined>,
    { timeoutMs, pollMs }: { timeoutMs: number; pollMs: number },
  ): Promise<T | undefined> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      let wake = () => {}
      const announced = new Promise<void>((resolve) => {
        wake = resolve
      })
      const waiters = this.waiters.get(userId) ?? new Set()
      this.waiters.set(userId, waiters)
      waiters.add(wake)
      try {
        const found = await load()
        const remaining = deadline - Date.now()
        if (found !== undefined || remaining <= 0) return found
        await Promise.race([announced, Bun.sleep(Math.min(pollMs, remaining))])
      } finally {
        waiters.delete(wake)
        if (waiters.size === 0) this.waiters.delete(userId)
      }
    }
  }

  private announce(userId: string): void {
    for (const wake of this.waiters.get(userId) ?? []) wake()
  }
}
