// What the benchmarks share: ports, waiting for a server, percentiles. Not a test helper.

/** A loopback port free at the time of asking. */
export function freePort(): number {
  const listener = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const { port } = listener
  listener.stop(true)
  return port
}

/** Resolves once `url` answers 2xx; throws after `timeoutMs`. */
export async function waitForHttp(
  url: string,
  options: { headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? 30_000)
  while (Date.now() < deadline) {
    try {
      const response = await fetch(url, { headers: options.headers ?? {} })
      await response.arrayBuffer()
      if (response.ok) return
    } catch {
      // not up yet
    }
    await Bun.sleep(100)
  }
  throw new Error(`${url} did not come up`)
}

/** The nearest-rank percentile `p` (0–100) of ascending `sorted` samples; NaN when there are none. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number
}
