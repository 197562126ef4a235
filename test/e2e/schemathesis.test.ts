import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DEFAULT_POLICIES } from '../../services/gateway/src/modules/rate-limit/model'
import { undescribed } from './openapi-descriptions'
import { type Stack, startStack } from './stack'

/**
 * Schemathesis (pinned; scripts/setup.sh installs it into .cache/schemathesis) fuzzes the merged
 * OpenAPI document against the whole stack through the gateway: every check in every phase
 * (examples, coverage, fuzzing, stateful). What the document says must be what the gateway
 * does: 0 failures.
 */
const ROOT = join(import.meta.dir, '..', '..')
const ST = join(ROOT, '.cache/schemathesis/bin/st')
const HOOKS_DIR = join(import.meta.dir, 'schemathesis')

/**
 * Left out by name: the WebSocket upgrade. OpenAPI describes its handshake (101) but not the
 * protocol, and a plain GET, which is all schemathesis sends, is not an upgrade (404).
 */
const EXCLUDED_PATHS = ['/api/v1/ws']

/** Fixed, so a run is repeatable; bounded, so it takes a few minutes on two cores. */
const SEED = '20261201'
const MAX_EXAMPLES = '10'

// The run registers a user per test case and sends thousands of requests from one address:
// every policy is raised, for this stack only.
const UNLIMITED = { limit: 1_000_000, windowSeconds: 60 }

let stack: Stack

beforeAll(async () => {
  stack = await startStack({
    gatewayEnv: {
      RATE_LIMIT_POLICIES: JSON.stringify(
        Object.fromEntries(Object.keys(DEFAULT_POLICIES).map((name) => [name, UNLIMITED])),
      ),
    },
  })
}, 120_000)

afterAll(async () => {
  await stack?.stop()
}, 60_000)

describe('the merged document', () => {
  test('describes every operation, parameter, response and field', async () => {
    const document = (await (await fetch(`${stack.gateway.url}/docs/json`)).json()) as Record<string, unknown>
    expect(undescribed(document)).toEqual([])
  })
})

describe('schemathesis against the gateway', () => {
  test(
    'every check in every phase finds no failure',
    async () => {
      expect(existsSync(ST)).toBe(true)
      const url = stack.gateway.url
      // Its caches (.schemathesis, .hypothesis) go to a directory of the run's own.
      const workDir = mkdtempSync(join(tmpdir(), 'parley-schemathesis-'))
      // spawnSync: it waits for the exit itself. An awaited Bun.spawn once never saw schemathesis
      // exit (left a zombie, the test hung) on a clean-clone run. Nothing in this process needs
      // its event loop meanwhile: the stack runs in processes of its own.
      const run = Bun.spawnSync(
        [
          ST,
          '--config-file',
          join(HOOKS_DIR, 'schemathesis.toml'),
          'run',
          `${url}/docs/json`,
          '--url',
          url,
          '--checks',
          'all',
          // Every phase, named so that none is dropped unseen: the coverage phase sends the
          // schema's edge values and undeclared methods (with bodies) on every path.
          '--phases',
          'examples,coverage,fuzzing,stateful',
          ...EXCLUDED_PATHS.flatMap((path) => ['--exclude-path', path]),
          '--seed',
          SEED,
          '--max-examples',
          MAX_EXAMPLES,
          // One worker: hypothesis on Python 3.11 can crash describing strategies from two threads
          // (SystemError: AST constructor recursion depth mismatch).
          '--workers',
          '1',
          '--request-timeout',
          '30',
        ],
        {
          cwd: workDir,
          env: {
            ...process.env,
            PARLEY_GATEWAY_URL: url,
            PARLEY_MAIL_API_URL: process.env.TEST_MAIL_API_URL ?? 'http://127.0.0.1:8025',
            SCHEMATHESIS_HOOKS: 'hooks',
            PYTHONPATH: HOOKS_DIR,
            NO_COLOR: '1',
          },
          stdout: 'pipe',
          stderr: 'pipe',
          timeout: 12 * 60_000,
        },
      )
      rmSync(workDir, { recursive: true, force: true })
      const output = run.stdout.toString()
      const errors = run.stderr.toString()
      const code = run.exitCode
      // The closing line, e.g. "==== 0 failures in 212.3s ====" or "==== 1280 passed … ====".
      const summary = output.trim().split('\n').at(-1) ?? ''
      console.log(`schemathesis: ${summary}`)
      // Lines cut at 400 characters: a generated 4,000-character body would push the rest out.
      const readable = (text: string) =>
        text
          .split('\n')
          .map((line) => (line.length > 400 ? `${line.slice(0, 400)} …` : line))
          .join('\n')
      if (code !== 0) console.log(readable(output).slice(-30_000), readable(errors).slice(-4_000))
      expect(output).toContain('Stateful')
      expect(summary).not.toMatch(/\d+ failures?/)
      expect(summary).not.toMatch(/\d+ errors?/)
      expect(code).toBe(0)
    },
    15 * 60_000,
  )
})
