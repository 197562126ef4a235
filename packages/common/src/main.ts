import type { Static, TObject } from '@sinclair/typebox'
import type { AnyElysia } from 'elysia'
import { ConfigError, loadConfig } from './config'
import { opsApp, type ReadinessCheck, serve } from './http'
import { createRuntime, type Runtime } from './runtime'
import { countSpanExports, startTracing, stopTracing, tracingEnabled } from './tracing'

type BaseConfig = {
  HOST: string
  PORT: number
  OPS_PORT: number
  LOG_LEVEL: string
  BODY_LIMIT_BYTES: number
  SHUTDOWN_GRACE_MS: number
  SHUTDOWN_DELAY_MS: number
  OTEL_EXPORTER_OTLP_ENDPOINT?: string
  OTEL_TRACES_SAMPLER_ARG: number
  OTEL_SERVICE_NAME?: string
}

/** What runService reads from a service's deps: the checks behind the ops port's /ready. */
type OpsDeps = { readiness: readonly ReadinessCheck[] }

export type ServiceDefinition<S extends TObject, D extends OpsDeps> = {
  service: string
  env: S
  /** Opens clients, starts consumers and relays, registers lifecycle steps. */
  connect: (config: Static<S>, runtime: Runtime) => Promise<D>
  buildApp: (deps: D) => AnyElysia
  /** Applies schema migrations / indexes; `<binary> migrate` runs only this and exits. */
  migrate?: (config: Static<S>, runtime: Runtime) => Promise<void>
}

/**
 * `<binary> healthcheck`: asks the running server's ops port on this container's loopback whether
 * it is ready (distroless images have no curl for compose/Docker health checks). Exit 0 or 1.
 */
async function healthcheck(opsPort: number): Promise<number> {
  try {
    const response = await fetch(`http://127.0.0.1:${opsPort}/ready`, { signal: AbortSignal.timeout(2000) })
    return response.ok ? 0 : 1
  } catch {
    return 1
  }
}

/**
 * A setting checked only where its client is built (e.g. REDIS_URL outside development) stops
 * start-up like loadConfig does: one line naming the variable, exit 78, nothing reported ready.
 */
async function connectOrExit<S extends TObject, D extends OpsDeps>(
  definition: ServiceDefinition<S, D>,
  config: Static<S>,
  runtime: Runtime,
): Promise<D> {
  try {
    return await definition.connect(config, runtime)
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    process.stderr.write(`${error.message}\n`)
    process.exit(78)
  }
}

/** The whole of a service's index.ts: config, then `migrate` or connect + listen (service and ops ports). */
export async function runService<S extends TObject, D extends OpsDeps>(
  definition: ServiceDefinition<S, D>,
): Promise<void> {
  const config = loadConfig(definition.env) as Static<S> & BaseConfig
  const command = process.argv[2]
  if (command === 'healthcheck') process.exit(await healthcheck(config.OPS_PORT))
  if (command !== undefined && command !== 'migrate') {
    process.stderr.write(`unknown command ${command}: expected no argument, migrate or healthcheck\n`)
    process.exit(64)
  }
  // Before the runtime: its logger and the apps look once at whether the process traces.
  if (command === undefined && config.OTEL_EXPORTER_OTLP_ENDPOINT)
    await startTracing({
      service: config.OTEL_SERVICE_NAME ?? definition.service,
      endpoint: config.OTEL_EXPORTER_OTLP_ENDPOINT,
      samplingRatio: config.OTEL_TRACES_SAMPLER_ARG,
    })
  const runtime = createRuntime(definition.service, config.LOG_LEVEL)
  // Last, once the drain's spans (consumers, relays, in-flight requests) have ended.
  if (tracingEnabled()) {
    countSpanExports(runtime.metrics)
    runtime.lifecycle.onFinal('tracing', stopTracing)
  }
  if (command === 'migrate') {
    try {
      await definition.migrate?.(config, runtime)
      runtime.logger.info('migrations applied')
      process.exit(0)
    } catch (error) {
      runtime.logger.fatal({ err: error }, 'migrations failed')
      process.exit(1)
    }
  }
  const deps = await connectOrExit(definition, config, runtime)
  serve(definition.buildApp(deps), opsApp(runtime, deps.readiness), {
    port: config.PORT,
    opsPort: config.OPS_PORT,
    host: config.HOST,
    bodyLimitBytes: config.BODY_LIMIT_BYTES,
    graceMs: config.SHUTDOWN_GRACE_MS,
    delayMs: config.SHUTDOWN_DELAY_MS,
    lifecycle: runtime.lifecycle,
    logger: runtime.logger,
  })
}
