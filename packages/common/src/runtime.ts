import { Lifecycle } from './lifecycle'
import { createLogger, type Logger } from './logger'
import { Metrics } from './metrics'

export type Runtime = { service: string; logger: Logger; metrics: Metrics; lifecycle: Lifecycle }

/** The per-process pieces every service wires first. */
export function createRuntime(
  service: string,
  logLevel: string,
  logger: Logger = createLogger(service, logLevel),
): Runtime {
  return { service, logger, metrics: new Metrics(service), lifecycle: new Lifecycle(logger) }
}
