import { expect, test } from 'bun:test'
import { GroupCommit } from '../src/group-commit'

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
