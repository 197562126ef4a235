import type { Static, TObject } from '@sinclair/typebox'
import type { AnyElysia } from 'elysia'
import { loadConfig } from './config'
import { serve } from './http'
import { createRuntime, type Runtime } from './runtime'

type BaseConfig = {
  HOST: string
  PORT: number
  LOG_LEVEL: string
  BODY_LIMIT_BYTES: number
  SHUTDOWN_GRACE_MS: number
  SHUTDOWN_DELAY_MS: number
}

export type ServiceDefinition<S extends TObject, D> = {
  service: string
  env: S
  /** Opens clients, starts consumers and relays, registers lifecycle steps. */
  connect: (config: Static<S>, runtime: Runtime) => Promise<D>
  buildApp: (deps: D) => AnyElysia
  /** Applies schema migrations / indexes; `<binary> migrate` runs only this and exits. */
  migrate?: (config: Static<S>, runtime: Runtime) => Promise<void>
}

/** The whole of a service's index.ts: config, then `migrate` or connect + listen. */
export async function runService<S extends TObject, D>(definition: ServiceDefinition<S, D>): Promise<void> {
  const config = loadConfig(definition.env) as Static<S> & BaseConfig
  const runtime = createRuntime(definition.service, config.LOG_LEVEL)
  if (process.argv[2] === 'migrate') {
    try {
      await definition.migrate?.(config, runtime)
      runtime.logger.info('migrations applied')
      process.exit(0)
    } catch (error) {
      runtime.logger.fatal({ err: error }, 'migrations failed')
      process.exit(1)
    }
  }
  const deps = await definition.connect(config, runtime)
  serve(definition.buildApp(deps), {
    port: config.PORT,
    host: config.HOST,
    bodyLimitBytes: config.BODY_LIMIT_BYTES,
    graceMs: config.SHUTDOWN_GRACE_MS,
    delayMs: config.SHUTDOWN_DELAY_MS,
    lifecycle: runtime.lifecycle,
    logger: runtime.logger,
  })
}
