/**
 * What each service costs standing still: time from process start to its first 200 from /ready,
 * resident memory after idling, and the size of its image with what bounds it (the Bun
 * executable inside). Goals (issue "Gateway overhead"): ≤ 500 ms to ready, ≤ 60 MB idle RSS,
 * images ≤ 110 MB.
 *
 * Run: `bun bench/services/footprint.ts` (infra up). The services run from source as `bun run dev`
 * runs them, started like the end-to-end stack: auth first, then the other four together, then
 * two gateways together, so the later start times include sharing 2 cores with each other.
 * Images are measured when `bun run images` (or the image test) built them; else they are skipped.
 * Env: BENCH_IDLE_S (default 5): idle time before reading RSS.
 */
import { readFileSync, realpathSync, statSync } from 'node:fs'
import { startStack } from '../../test/e2e/stack.ts'

const idleS = Number(process.env.BENCH_IDLE_S ?? 5)

function rssMiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((entry) => entry.startsWith('VmRSS:'))
  return Number(/(\d+)/.exec(line ?? '')?.[1] ?? 0) / 1024
}

function imageMB(name: string): number | undefined {
  const run = Bun.spawnSync(
    ['podman', 'image', 'inspect', '--format', '{{.Size}}', `localhost/parley-${name}:dev`],
    {
      stderr: 'ignore',
    },
  )
  const bytes = Number(run.stdout.toString().trim())
  return run.exitCode === 0 && bytes > 0 ? bytes / 1e6 : undefined
}

const stack = await startStack()
try {
  await Bun.sleep(idleS * 1000)
  const services = [
    ...Object.values(stack).filter((value) => typeof value === 'object' && value && 'readyMs' in value),
  ]
  const rows = services.map((service) => {
    const running = service as { name: string; readyMs: number; process: { pid: number } }
    const image = imageMB(running.name.replace(/-\d$/, ''))
    return { name: running.name, readyMs: running.readyMs, rss: rssMiB(running.process.pid), image }
  })
  const pad = (value: string, width: number) => value.padEnd(width)
  console.log(`\nservice        start → /ready   idle RSS (after ${idleS} s)   image`)
  for (const row of rows)
    console.log(
      `${pad(row.name, 15)}${pad(`${row.readyMs.toFixed(0)} ms`, 17)}${pad(`${row.rss.toFixed(1)} MiB`, 25)}${row.image === undefined ? 'not built' : `${row.image.toFixed(0)} MB`}`,
    )
  const bun = realpathSync(Bun.which('bun') ?? process.execPath)
  console.log(
    `\nthe Bun executable (${Bun.version}) every image carries (compiled into each binary): ${(statSync(bun).size / 1e6).toFixed(0)} MB`,
  )
  const worstRss = Math.max(...rows.map((row) => row.rss))
  const worstReady = Math.max(...rows.map((row) => row.readyMs))
  console.log(
    `worst idle RSS ${worstRss.toFixed(1)} MiB (goal ≤ 60: ${worstRss <= 60 ? 'met' : 'NOT met'}); ` +
      `worst start → ready ${worstReady.toFixed(0)} ms (goal ≤ 500: ${worstReady <= 500 ? 'met' : 'NOT met'})`,
  )
} finally {
  await stack.stop()
}
