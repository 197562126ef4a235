import { runService } from '@parley/common'
import { buildApp } from './app'
import { Env } from './config'
import { migrate } from './db'
import { connect } from './deps'

await runService({ service: 'user', env: Env, connect, buildApp, migrate })
