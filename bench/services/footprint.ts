/**
 * What each service costs standing still: time from process start to its first 200 from /ready,
 * resident memory after idling, and the size of its image with what bounds it (the Bun
 * executable inside). Goals (issue "Gateway overhead"): ≤ 500 ms to ready, ≤ 60 MB idle RSS,
 * images ≤ 110 MB.
 *
 * Run: `bun bench/services/footprint.ts` (infra up). Twice: the services compiled as their images
 * run them (`bun build --compile --minify --bytecode`, the flags of docker/service.Dockerfile) and
 * from source as `bun run dev` runs them. Started like the end-to-end stack: auth first, then the
 * other four together, then two gateways together, so the later start times include sharing 2
 * cores with each other.
 * Images are measured when `bun run images` (or the image test) built them; else they are skipped.
 * Env: BENCH_IDLE_S (default 5): idle time before reading RSS.
 */
import { mkdtempSync, readFileSync, realpathSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ROSTER, type ServiceName } from '../../packages/contracts/src/index.ts'
import { startStack } from '../../test/e2e/stack.ts'

const root = join(import.meta.dir, '..', '..')

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

/** Each service compiled into `dir` with its image's flags (and chat's files beside it). */
async function compile(dir: string): Promise<Record<ServiceName, string>> {
  const binaries: Partial<Record<ServiceName, string>> = {}
  for (const { name } of ROSTER) {
    const out = join(dir, name)
    const build = Bun.spawn(
      [
        'bun',
        'build',
        '--compile',
        '--minify',
        '--bytecode',
        '--format=esm',
        '--no-compile-autoload-dotenv',
        '--no-compile-autoload-bunfig',
        `services/${name}/src/index.ts`,
        '--outfile',
        join(out, 'server'),
      ],
      { cwd: root, stdout: 'ignore', stderr: 'inherit' },
    )
    if ((await build.exited) !== 0) throw new Error(`bun build of ${name} failed`)
    const files = join(root, `services/${name}/scripts/image-files.sh`)
    if (await Bun.file(files).exists()) {
      const copy = Bun.spawn(['sh', files, out], { cwd: root, stdout: 'ignore', stderr: 'inherit' })
      if ((await copy.exited) !== 0) throw new Error(`image files of ${name} failed`)
    }
    binaries[name] = join(out, 'server')
  }
  return binaries as Record<ServiceName, string>
}

type Row = { name: string; readyMs: number; rss: number; image: number | undefined }

async function measure(binaries?: Record<ServiceName, string>): Promise<Row[]> {
  const stack = await startStack(binaries ? { binaries } : {})
  try {
    await Bun.sleep(idleS * 1000)
    return Object.values(stack)
      .filter(
        (value): value is typeof stack.gateway =>
          typeof value === 'object' && value !== null && 'readyMs' in value,
      )
      .map((service) => ({
        name: service.name,
        readyMs: service.readyMs,
        rss: rssMiB(service.process.pid),
        image: imageMB(service.name.replace(/-\d$/, '')),
      }))
  } finally {
    await stack.stop()
  }
}

const dir = mkdtempSync(join(tmpdir(), 'parley-footprint-'))
try {
  const compiled = await measure(await compile(dir))
  const source = await measure()
  const pad = (value: string, width: number) => value.padEnd(width)
  console.log(
    `\nservice        compiled: start → ready, idle RSS    from source: start → ready, idle RSS    image`,
  )
  for (const [index, row] of compiled.entries()) {
    const fromSource = source[index] as Row
    console.log(
      `${pad(row.name, 15)}${pad(`${row.readyMs.toFixed(0)} ms`, 10)}${pad(`${row.rss.toFixed(1)} MiB`, 27)}` +
        `${pad(`${fromSource.readyMs.toFixed(0)} ms`, 10)}${pad(`${fromSource.rss.toFixed(1)} MiB`, 30)}` +
        `${row.image === undefined ? 'not built' : `${row.image.toFixed(0)} MB`}`,
    )
  }
  const bun = realpathSync(Bun.which('bun') ?? process.execPath)
  console.log(
    `\nthe Bun executable (${Bun.version}), which every compiled service carries: ${(statSync(bun).size / 1e6).toFixed(0)} MB`,
  )
  const worstRss = Math.max(...compiled.map((row) => row.rss))
  const worstReady = Math.max(...compiled.map((row) => row.readyMs))
  console.log(
    `compiled: worst idle RSS ${worstRss.toFixed(1)} MiB (goal ≤ 60: ${worstRss <= 60 ? 'met' : 'NOT met'}); ` +
      `worst start → ready ${worstReady.toFixed(0)} ms (goal ≤ 500: ${worstReady <= 500 ? 'met' : 'NOT met'}); ` +
      `after idling ${idleS} s (BENCH_IDLE_S)`,
  )
} finally {
  rmSync(dir, { recursive: true, force: true })
}
