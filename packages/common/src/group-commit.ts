type Waiter<T> = { items: readonly T[]; resolve: () => void; reject: (error: unknown) => void }

/**
 * One write for what many callers add at about the same time: a caller's items go into the next
 * flush, which starts at once when none is running (an idle caller never waits for company) and
 * otherwise right after the running one, with everything added meanwhile (up to `maxItems`).
 * Each caller's promise settles with the flush that wrote its items.
 */
export class GroupCommit<T> {
  private waiting: Waiter<T>[] = []
  private flushing = false

  constructor(
    private readonly flush: (items: T[]) => Promise<void>,
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
        await this.flush(group.flatMap((waiter) => waiter.items))
        for (const waiter of group) waiter.resolve()
      } catch (error) {
        for (const waiter of group) waiter.reject(error)
      }
    }
    this.flushing = false
  }
}
