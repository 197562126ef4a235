import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, waitFor } from '@parley/testkit'

const ROOT = join(import.meta.dir, '..', '..')

export type ScrapeJob = {
  job: string
  targets: string[]
  labels?: Record<string, string>
  metricsPath?: string
  params?: Record<string, string>
}

export type Sample = { metric: Record<string, string>; value?: [number, string]; values?: [number, string][] }
export type QueryResult = { resultType: string; result: Sample[] }
export type RuleState = {
  name: string
  type: 'alerting' | 'recording'
  query: string
  health: string
  lastError?: string
  lastEvaluation: string
  state?: 'inactive' | 'pending' | 'firing'
}

/**
 * Prometheus from the Debian package, installed the way the repo installs its other Debian tools
 * (scripts/lib.sh need_tools; scripts/setup.sh lists it too) when missing.
 */
export function ensurePrometheus(): string {
  const found = Bun.which('prometheus')
  if (found) return found
  const install = spawnSync('bash', ['-c', 'source scripts/lib.sh && need_tools prometheus:prometheus'], {
    cwd: ROOT,
    stdio: 'inherit',
  })
  const installed = Bun.which('prometheus')
  if (install.status !== 0 || !installed)
    throw new Error('prometheus is not installed (apt package `prometheus`)')
  return installed
}

/** A throwaway Prometheus on a free loopback port that scrapes `jobs` every second and evaluates `ruleFiles`. */
export async function startPrometheus(options: { jobs: ScrapeJob[]; ruleFiles: string[] }) {
  const binary = ensurePrometheus()
  const dir = mkdtempSync(join(tmpdir(), 'parley-prometheus-'))
  const port = await freePort()
  const config = {
    global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
    rule_files: options.ruleFiles,
    scrape_configs: options.jobs.map((job) => ({
      job_name: job.job,
      metrics_path: job.metricsPath ?? '/metrics',
      ...(job.params
        ? { params: Object.fromEntries(Object.entries(job.params).map(([k, v]) => [k, [v]])) }
        : {}),
      static_configs: [{ targets: job.targets, labels: job.labels ?? {} }],
    })),
  }
  // JSON is YAML: no YAML writer needed.
  writeFileSync(join(dir, 'prometheus.yml'), JSON.stringify(config, null, 2))
  const child = Bun.spawn(
    [
      binary,
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdout: 'ignore', stderr: process.env.TEST_LOG_LEVEL === 'silent' ? 'ignore' : 'inherit' },
  )
  const url = `http://127.0.0.1:${port}`
  await waitFor(async () => (await fetch(`${url}/-/ready`).catch(() => undefined))?.ok, {
    timeoutMs: 30_000,
    what: 'Prometheus ready',
  })

  async function api<T>(path: string, params: Record<string, string | number>): Promise<T> {
    const query = new URLSearchParams(
      Object.entries(params).map(([k, v]): [string, string] => [k, String(v)]),
    )
    const response = await fetch(`${url}/api/v1/${path}?${query}`)
    const body = (await response.json()) as { status: string; data: T; error?: string }
    if (body.status !== 'success') throw new Error(`${path} ${JSON.stringify(params)}: ${body.error}`)
    return body.data
  }

  return {
    url,
    api,
    /** An instant query at `time` (seconds), as Grafana runs a stat or table target. */
    query: (expr: string, time: number) => api<QueryResult>('query', { query: expr, time }),
    /** A range query, as Grafana runs a time series target. */
    queryRange: (expr: string, start: number, end: number, step: number) =>
      api<QueryResult>('query_range', { query: expr, start, end, step }),
    labelValues: (label: string, match: string, start: number, end: number) =>
      api<string[]>(`label/${label}/values`, { 'match[]': match, start, end }),
    rules: async () =>
      (await api<{ groups: { rules: RuleState[] }[] }>('rules', {})).groups.flatMap((group) => group.rules),
    targets: async () =>
      (
        await api<{ activeTargets: { scrapeUrl: string; health: string; lastError: string }[] }>(
          'targets',
          {},
        )
      ).activeTargets,
    async stop() {
      child.kill('SIGTERM')
      await child.exited
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

export type Prometheus = Awaited<ReturnType<typeof startPrometheus>>
