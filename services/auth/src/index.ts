import { runService } from '@parley/common'
import { buildApp } from './app'
import { Env } from './config'
import { connect, migrate } from './deps'

await runService({ service: 'auth', env: Env, connect, buildApp, migrate })
