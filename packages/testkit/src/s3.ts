import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort } from './rabbit-node'

/**
 * The shared S3 server (scripts/infra.sh: versitygw on 127.0.0.1:7070, bucket parley). Tests
 * share the bucket: every key they make holds a fresh id, so they never meet.
 */
export const testS3 = {
  endpoint: process.env.TEST_S3_ENDPOINT ?? 'http://127.0.0.1:7070',
  region: 'us-east-1',
  bucket: process.env.TEST_S3_BUCKET ?? 'parley',
  accessKeyId: process.env.TEST_S3_ACCESS_KEY ?? 'parley',
  secretAccessKey: process.env.TEST_S3_SECRET_KEY ?? 'parley-dev-secret',
}

/** The S3_* variables of a service using the shared server (or `endpoint`, e.g. a private one). */
export function testS3Env(endpoint = testS3.endpoint): Record<string, string> {
  return {
    S3_ENDPOINT: endpoint,
    S3_REGION: testS3.region,
    S3_BUCKET: testS3.bucket,
    S3_ACCESS_KEY_ID: testS3.accessKeyId,
    S3_SECRET_ACCESS_KEY: testS3.secretAccessKey,
  }
}

/** A client of the shared server, to look at objects behind a service's back. */
export function testS3Client(endpoint = testS3.endpoint): Bun.S3Client {
  return new Bun.S3Client({ ...testS3, endpoint })
}

const VERSITYGW =
  process.env.PARLEY_VERSITYGW_BIN ?? fileURLToPath(new URL('../../../.cache/bin/versitygw', import.meta.url))

export type PrivateS3 = { endpoint: string; env: Record<string, string>; stop: () => Promise<void> }

/**
 * A versitygw of the test's own on a free port (the binary scripts/infra.sh built), with the same
 * bucket and credentials: a test may stop it (by its PID) without touching the shared server.
 */
export async function startPrivateS3(): Promise<PrivateS3> {
  const data = await mkdtemp(join(tmpdir(), 'parley-s3-'))
  await mkdir(join(data, testS3.bucket))
  const port = await freePort()
  const endpoint = `http://127.0.0.1:${port}`
  const child = Bun.spawn(
    [
      VERSITYGW,
      '--port',
      `127.0.0.1:${port}`,
      '--health',
      '/health',
      '--keep-alive',
      '--quiet',
      'posix',
      data,
    ],
    {
      env: { ROOT_ACCESS_KEY_ID: testS3.accessKeyId, ROOT_SECRET_ACCESS_KEY: testS3.secretAccessKey },
      stdout: 'ignore',
      stderr: 'ignore',
    },
  )
  const deadline = Date.now() + 15_000
  for (;;) {
    const healthy = await fetch(`${endpoint}/health`).then(
      (response) => response.ok,
      () => false,
    )
    if (healthy) break
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill()
      throw new Error(`versitygw (${VERSITYGW}) did not start on ${endpoint}: run bash scripts/infra.sh up`)
    }
    await Bun.sleep(100)
  }
  let stopped = false
  return {
    endpoint,
    env: testS3Env(endpoint),
    async stop() {
      if (stopped) return
      stopped = true
      child.kill()
      await child.exited
      await rm(data, { recursive: true, force: true })
    },
  }
}
