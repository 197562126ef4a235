import { join } from 'node:path'
import { freePort, waitFor } from '@parley/testkit'

const ROOT = join(import.meta.dir, '..', '..')

/** A span as Jaeger's query API returns it (`/api/traces/<id>`), with its service resolved. */
export type JaegerSpan = {
  spanID: string
  operationName: string
  /** The CHILD_OF reference's span id, if any. */
  parentSpanID?: string
  service: string
  kind?: string
  tags: Record<string, unknown>
}

type RawTrace = {
  spans: {
    spanID: string
    operationName: string
    processID: string
    references?: { refType: string; spanID: string }[]
    tags?: { key: string; value: unknown }[]
  }[]
  processes: Record<string, { serviceName: string }>
}

/**
 * The Jaeger v1 all-in-one binary, built from the Go module proxy by scripts/jaeger.sh on first
 * use (minutes, then cached in .cache/bin).
 */
export function jaegerBinary(): string {
  const install = Bun.spawnSync(['bash', join(ROOT, 'scripts/jaeger.sh')], {
    stdout: 'pipe',
    stderr: 'inherit',
    timeout: 2_500_000,
  })
  const path = install.stdout.toString().trim()
  if (install.exitCode !== 0 || !path) throw new Error(`scripts/jaeger.sh failed (exit ${install.exitCode})`)
  return path
}

/** Jaeger all-in-one on 127.0.0.1 with free ports and in-memory storage; `stop` ends it by PID. */
export async function startJaeger() {
  const binary = jaegerBinary()
  const [otlpHttp, otlpGrpc, collectorHttp, collectorGrpc, queryHttp, queryGrpc, admin] = await Promise.all(
    Array.from({ length: 7 }, () => freePort()),
  )
  const at = (port: number | undefined) => `127.0.0.1:${port}`
  const child = Bun.spawn(
    [
      binary,
      `--collector.otlp.http.host-port=${at(otlpHttp)}`,
      `--collector.otlp.grpc.host-port=${at(otlpGrpc)}`,
      `--collector.http-server.host-port=${at(collectorHttp)}`,
      `--collector.grpc-server.host-port=${at(collectorGrpc)}`,
      `--query.http-server.host-port=${at(queryHttp)}`,
      `--query.grpc-server.host-port=${at(queryGrpc)}`,
      `--admin.http.host-port=${at(admin)}`,
    ],
    {
      env: {
        PATH: process.env.PATH ?? '',
        SPAN_STORAGE_TYPE: 'memory',
        MEMORY_MAX_TRACES: '10000',
        // Jaeger traces itself to OTLP gRPC on localhost:4317 by default: not a port of ours.
        OTEL_TRACES_SAMPLER: 'always_off',
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://${at(otlpGrpc)}`,
      },
      stdout: 'ignore',
      stderr: process.env.TEST_LOG_LEVEL && process.env.TEST_LOG_LEVEL !== 'silent' ? 'inherit' : 'ignore',
    },
  )
  const queryUrl = `http://${at(queryHttp)}`
  await waitFor(async () => (await fetch(`${queryUrl}/api/services`).catch(() => undefined))?.ok, {
    timeoutMs: 30_000,
    intervalMs: 100,
    what: 'Jaeger query API',
  })
  return {
    /** OTEL_EXPORTER_OTLP_ENDPOINT of the services (OTLP/HTTP receiver). */
    otlpUrl: `http://${at(otlpHttp)}`,
    queryUrl,
    /** The spans Jaeger holds for a trace (empty while it has none). */
    async trace(traceId: string): Promise<JaegerSpan[]> {
      const response = await fetch(`${queryUrl}/api/traces/${traceId}`)
      if (response.status === 404) return []
      if (!response.ok) throw new Error(`Jaeger answered ${response.status} for trace ${traceId}`)
      const { data } = (await response.json()) as { data: RawTrace[] }
      return (data ?? []).flatMap(({ spans, processes }) =>
        spans.map((span) => {
          const tags = Object.fromEntries((span.tags ?? []).map(({ key, value }) => [key, value]))
          return {
            spanID: span.spanID,
            operationName: span.operationName,
            parentSpanID: span.references?.find((reference) => reference.refType === 'CHILD_OF')?.spanID,
            service: processes[span.processID]?.serviceName ?? '?',
            kind: typeof tags['span.kind'] === 'string' ? tags['span.kind'] : undefined,
            tags,
          }
        }),
      )
    },
    async stop(): Promise<void> {
      child.kill('SIGTERM')
      await child.exited
    },
  }
}

export type Jaeger = Awaited<ReturnType<typeof startJaeger>>
