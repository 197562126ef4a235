import { expect, test } from 'bun:test'
import { ConcurrencyLimit, GroupCommit } from '../src/concurrency'

test('an idle caller is flushed at once; callers arriving meanwhile share the next flush', async () => {
  const flushes: number[][] = []
  let release: () => void = () => undefined
  const group = new GroupCommit<number>(async (items) => {
    flushes.push(items)
    if (flushes.length === 1) await new Promise<void>((resolve) => (release = resolve))
  }, 100)
  const first = group.add([1])
  expect(flushes).toEqual([[1]])
  const later = [group.add([2, 3]), group.add([4]), group.add([5])]
  release()
  await Promise.all([first, ...later])
  expect(flushes).toEqual([[1], [2, 3, 4, 5]])
})

test('a flush takes whole callers up to maxItems, and a failed flush fails only its own callers', async () => {
  const flushes: number[][] = []
  let release: () => void = () => undefined
  const group = new GroupCommit<number>(async (items) => {
    flushes.push(items)
    if (flushes.length === 1) await new Promise<void>((resolve) => (release = resolve))
    if (items.includes(4)) throw new Error('write failed')
  }, 2)
  const results = [group.add([1]), group.add([2, 3]), group.add([4]), group.add([5, 6, 7, 8])].map((added) =>
    added.then(
      () => 'ok',
      (error: Error) => error.message,
    ),
  )
  release()
  expect(await Promise.all(results)).toEqual(['ok', 'ok', 'write failed', 'ok'])
  // [4] does not fit beside [2, 3]; a caller larger than maxItems still goes whole, alone.
  expect(flushes).toEqual([[1], [2, 3], [4], [5, 6, 7, 8]])
  expect(await group.add([]).then(() => 'nothing to write')).toBe('nothing to write')
})

test('ConcurrencyLimit runs at most `limit` tasks at once, the rest in arrival order, also after failures', async () => {
  const limit = new ConcurrencyLimit(2)
  let running = 0
  let most = 0
  const order: number[] = []
  const results = await Promise.allSettled(
    Array.from({ length: 7 }, (_, n) =>
      limit.run(async () => {
        running++
        most = Math.max(most, running)
        order.push(n)
        await Bun.sleep(5)
        running--
        if (n % 3 === 0) throw new Error(`task ${n} failed`)
        return n
      }),
    ),
  )
  expect(most).toBe(2)
  expect(order).toEqual([0, 1, 2, 3, 4, 5, 6])
  expect(results.map((result) => result.status)).toEqual([
    'rejected',
    'fulfilled',
    'fulfilled',
    'rejected',
    'fulfilled',
    'fulfilled',
    'rejected',
  ])
  expect(limit.waiting).toBe(0)
  // Slots were all given back: two more run at once.
  const started: number[] = []
  await Promise.all([1, 2].map((n) => limit.run(async () => started.push(n))))
  expect(started).toEqual([1, 2])
})

test('per-item errors of a flush fail only the callers whose items failed', async () => {
  let release: () => void = () => undefined
  let flushes = 0
  const group = new GroupCommit<number>(async (items) => {
    if (++flushes === 1) await new Promise<void>((resolve) => (release = resolve))
    return items.map((item) => (item % 2 === 0 ? new Error(`item ${item} refused`) : undefined))
  }, 10)
  const outcome = (added: Promise<void>) =>
    added.then(
      () => 'ok',
      (error: Error) => error.message,
    )
  const first = outcome(group.add([1]))
  const later = [group.add([3, 5]), group.add([7, 8, 9]), group.add([11])].map(outcome)
  release()
  expect(await Promise.all([first, ...later])).toEqual(['ok', 'ok', 'item 8 refused', 'ok'])
  expect(flushes).toBe(2)
})
