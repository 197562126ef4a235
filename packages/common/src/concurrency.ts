type Waiter<T> = { items: readonly T[]; resolve: () => void; reject: (error: unknown) => void }

/**
 * What a flush says per item when items can fail on their own (e.g. a duplicate key in an
 * unordered insertMany): the error of item i, or undefined. A flush that throws fails them all.
 */
export type ItemErrors = readonly unknown[]

/**
 * One write for what many callers add at about the same time: a caller's items go into the next
 * flush, which starts at once when none is running (an idle caller never waits for company) and
 * otherwise right after the running one, with everything added meanwhile (up to `maxItems`).
 * Each caller's promise settles with the flush that wrote its items: rejected with the first
 * error among its items when the flush reports per-item errors.
 */
export class GroupCommit<T> {
  private waiting: Waiter<T>[] = []
  private flushing = false

  constructor(
    private readonly flush: (items: T[]) => Promise<ItemErrors> | Promise<void>,
    private readonly maxItems: number,
  ) {}

  add(items: readonly T[]): Promise<void> {
    if (items.length === 0) return Promise.resolve()
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ items, resolve, reject })
      void this.drain()
    })
  }

  private async drain(): Promise<void> {
    if (this.flushing) return
    this.flushing = true
    while (this.waiting.length > 0) {
      // Whole callers only, so one caller's items are written (or fail) together.
      let count = 0
      let taken = 0
      while (taken < this.waiting.length) {
        const size = this.waiting[taken]?.items.length ?? 0
        if (taken > 0 && count + size > this.maxItems) break
        count += size
        taken++
      }
      const group = this.waiting.splice(0, taken)
      try {
        const errors = await this.flush(group.flatMap((waiter) => waiter.items))
        let index = 0
        for (const waiter of group) {
          const mine = errors?.slice(index, index + waiter.items.length).find((error) => error !== undefined)
          index += waiter.items.length
          if (mine === undefined) waiter.resolve()
          else waiter.reject(mine)
        }
      } catch (error) {
        for (const waiter of group) waiter.reject(error)
      }
    }
    this.flushing = false
  }
}

/**
 * At most `limit` tasks at a time; the others wait in arrival order. Protects a dependency from
 * bursts (e.g. every socket of a restarted replica reconnecting at once).
 */
export class ConcurrencyLimit {
  private running = 0
  private readonly queue: (() => void)[] = []

  constructor(private readonly limit: number) {}

  /** Tasks waiting for a slot. */
  get waiting(): number {
    return this.queue.length
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) await new Promise<void>((resolve) => this.queue.push(resolve))
    else this.running++
    try {
      return await task()
    } finally {
      // The slot passes straight to the next waiter, so `running` stays counted.
      const next = this.queue.shift()
      if (next) next()
      else this.running--
    }
  }
}
