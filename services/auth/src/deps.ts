import type { Runtime } from '@parley/common'
import type { AppDeps } from './app'
import type { Config } from './config'

/** Connects what the auth service needs and registers how to release it on shutdown. */
export async function connect(config: Config, runtime: Runtime): Promise<AppDeps> {
  return { runtime, config, readiness: [] }
}
