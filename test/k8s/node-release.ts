/**
 * charts/parley installed for real on test/k8s/node.ts's node: the five local images, the dev
 * servers of scripts/infra.sh behind the node's forwarders, each run with its own PostgreSQL
 * databases, MongoDB database, RabbitMQ vhost and namespace (Pod Security "restricted"), all
 * removed afterwards. `helm install --wait` runs the migration hook Jobs to completion and waits
 * for every Deployment; then `helm test`, then one user registered and its profile read through
 * the gateway Service's ClusterIP (routed by kube-proxy).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  createTestDatabase,
  createTestMongo,
  createTestVhost,
  type TestDatabase,
  type TestMongo,
  type TestVhost,
} from '@parley/testkit'
import type { Cluster, KubeObject, Run } from './cluster'
import { run, waitUntil } from './cluster'
import { HOST_PORTS, NODE_IP, type NodeTools, STATE } from './node'

const root = join(import.meta.dir, '../..')
const RELEASE = 'parley'

export type Answer = { status: number; body: Record<string, unknown> }
export type Evidence = {
  namespace: string
  pods: { name: string; phase: string; ready: boolean; ip: string; node: string; restarts: number }[]
  /** user tables per PostgreSQL database, after the migration Jobs */
  tables: Record<string, number>
  install: Run
  test: Run
  /** the `helm test` pod's output, read while it existed */
  testLog: string
  gateway: string
  register: Answer
  profile: Answer
  seconds: Record<string, number>
}

async function psql(tools: NodeTools, url: string, sql: string): Promise<string> {
  const r = await run([tools.psql, url, '-v', 'ON_ERROR_STOP=1', '-Atqc', sql], 60_000)
  if (r.code !== 0) throw new Error(`psql ${sql}: ${r.stderr}`)
  return r.stdout.trim()
}

/** Fields that must never reach a log: the register answer's tokens. */
function redact(body: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(body)) out[k] = /Token$/.test(k) ? '<redacted>' : v
  return out
}

async function answer(res: Response): Promise<Answer> {
  const text = await res.text()
  try {
    return { status: res.status, body: JSON.parse(text) as Record<string, unknown> }
  } catch {
    return { status: res.status, body: { text } }
  }
}

/** Installs, proves and uninstalls one release; every piece of its data is removed in the end. */
export async function exerciseRelease(
  cluster: Cluster,
  tools: NodeTools,
  /** e.g. to look around before the release goes (test/k8s/node-run.ts --hold) */
  beforeTeardown?: (namespace: string) => Promise<void>,
): Promise<Evidence> {
  const id = crypto.randomUUID().slice(0, 8)
  const namespace = `parley-node-${id}`
  const databases: Partial<Record<'auth' | 'user' | 'notification', TestDatabase>> = {}
  let vhost: TestVhost | undefined
  let mongo: TestMongo | undefined
  // under STATE: a killed run's values (a throwaway signing key) go with the node's cleanup
  const dir = mkdtempSync(join(STATE, 'release-'))
  const seconds: Record<string, number> = {}
  const timed = async <T>(phase: string, work: () => Promise<T>): Promise<T> => {
    const started = performance.now()
    try {
      return await work()
    } finally {
      seconds[phase] = Math.round((performance.now() - started) / 100) / 10
    }
  }
  const host = (port: number) => `${NODE_IP}:${port}`
  try {
    await timed('data', async () => {
      for (const name of ['auth', 'user', 'notification'] as const)
        databases[name] = await createTestDatabase()
      vhost = await createTestVhost()
      mongo = createTestMongo()
    })
    if (!vhost || !mongo) throw new Error('no test vhost or MongoDB database')
    const key = await run([tools.cluster.openssl, 'genpkey', '-algorithm', 'ed25519'], 30_000)
    if (key.code !== 0) throw new Error(`openssl genpkey: ${key.stderr}`)
    /** A test server's URL as the pods reach it: the forwarder on the node's bridge address. */
    const fromPods = (url: string, port: number) => {
      const u = new URL(url)
      u.host = host(port)
      return u.toString()
    }
    const pg = (db: TestDatabase | undefined) => fromPods(db?.url ?? '', HOST_PORTS.postgres)
    const values = {
      global: {
        image: { registry: 'localhost', tag: tools.imageTag, pullPolicy: 'Never' },
        secretEnv: {
          REDIS_URL: `redis://${host(HOST_PORTS.redis)}`,
          AMQP_URL: fromPods(vhost.url, HOST_PORTS.rabbitmq),
        },
      },
      services: {
        gateway: {
          replicas: 1,
          // Every run registers from the node's address (masquerade-all) against the same Redis:
          // the default 5 an hour would run out. Same window, so the stored GCRA state still fits.
          env: { RATE_LIMIT_POLICIES: JSON.stringify({ register: { limit: 10_000, windowSeconds: 3_600 } }) },
        },
        auth: {
          replicas: 1,
          env: { JWT_KEY_ID: `k8s-node-${id}` },
          secretEnv: { DATABASE_URL: pg(databases.auth), JWT_PRIVATE_KEY: key.stdout },
        },
        user: { replicas: 1, secretEnv: { DATABASE_URL: pg(databases.user) } },
        chat: {
          replicas: 1,
          env: { MONGO_DB: mongo.dbName, S3_BUCKET: 'parley' },
          secretEnv: {
            MONGO_URL: fromPods(mongo.url, HOST_PORTS.mongodb),
            S3_ENDPOINT: `http://${host(HOST_PORTS.s3)}`,
            S3_ACCESS_KEY_ID: 'parley',
            S3_SECRET_ACCESS_KEY: 'parley-dev-secret',
          },
        },
        notification: {
          replicas: 1,
          secretEnv: {
            DATABASE_URL: pg(databases.notification),
            SMTP_URL: `smtp://${host(HOST_PORTS.smtp)}`,
          },
        },
      },
      tests: { image: { repository: tools.curlImage.split(':')[0], tag: tools.curlImage.split(':')[1] } },
    }
    const valuesFile = join(dir, 'values.json')
    writeFileSync(valuesFile, JSON.stringify(values))

    const created = await cluster.api('POST', '/api/v1/namespaces', {
      metadata: {
        name: namespace,
        labels: {
          'pod-security.kubernetes.io/enforce': 'restricted',
          'pod-security.kubernetes.io/enforce-version': 'latest',
        },
      },
    })
    if (created.status !== 201)
      throw new Error(`namespace ${namespace}: ${created.status} ${JSON.stringify(created.body)}`)

    const install = await timed('install', () =>
      cluster.helm(
        [
          'install',
          RELEASE,
          join(root, 'charts/parley'),
          '-n',
          namespace,
          '-f',
          valuesFile,
          '--wait',
          '--timeout',
          '5m',
        ],
        6 * 60_000,
      ),
    )
    if (install.code !== 0) {
      const pods = await cluster.list(`/api/v1/namespaces/${namespace}/pods`).catch(() => [])
      const events = await cluster.list(`/api/v1/namespaces/${namespace}/events`).catch(() => [])
      throw new Error(
        `helm install failed (${install.code}):\n${install.stderr}\npods: ${JSON.stringify(pods.map((p) => [p.metadata.name, p.status?.phase, p.status?.containerStatuses]))}\nevents: ${events
          .slice(-30)
          .map((e) => `${e.reason}: ${e.message}`)
          .join('\n')}`,
      )
    }
    const pods = (await cluster.list(`/api/v1/namespaces/${namespace}/pods`)).map((p: KubeObject) => ({
      name: p.metadata.name,
      phase: String(p.status?.phase),
      ready: (p.status?.conditions ?? []).some(
        (c: { type: string; status: string }) => c.type === 'Ready' && c.status === 'True',
      ),
      ip: String(p.status?.podIP),
      node: String(p.spec?.nodeName),
      restarts: (p.status?.containerStatuses ?? []).reduce(
        (n: number, c: { restartCount: number }) => n + c.restartCount,
        0,
      ),
    }))
    const tables: Record<string, number> = {}
    for (const db of Object.values(databases))
      tables[db.name] = Number(
        await psql(
          tools,
          db.url,
          "SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
        ),
      )

    // `helm test --logs` cannot work with the chart's hook-delete-policy hook-succeeded (the pod
    // is gone when helm asks), so the log is read while the pod exists.
    let testLog = ''
    let testing = true
    const capture = (async () => {
      while (testing) {
        const got = await cluster
          .api('GET', `/api/v1/namespaces/${namespace}/pods/${RELEASE}-test/log`)
          .catch(() => undefined)
        const text = typeof got?.body.text === 'string' ? got.body.text : ''
        if (got?.status === 200 && text.length >= testLog.length) testLog = text
        await Bun.sleep(200)
      }
    })()
    const test = await timed('helm test', () =>
      cluster.helm(['test', RELEASE, '-n', namespace, '--timeout', '3m'], 4 * 60_000),
    ).finally(() => {
      testing = false
    })
    await capture

    const service = (await cluster.list(`/api/v1/namespaces/${namespace}/services`)).find(
      (s) => s.metadata.labels?.['app.kubernetes.io/component'] === 'gateway',
    )
    if (!service) throw new Error(`no gateway Service in ${namespace}`)
    const spec = service.spec as { clusterIP: string; ports: { port: number }[] }
    const gateway = `http://${spec.clusterIP}:${spec.ports[0]?.port}`
    const { register, profile } = await timed('request', async () => {
      const registered = await answer(
        await fetch(`${gateway}/api/v1/auth/register`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({
            email: `k8s-node-${id}@parley.test`,
            displayName: 'Node Test',
            password: `pw-${crypto.randomUUID()}`,
          }),
          signal: AbortSignal.timeout(15_000),
        }),
      )
      const token = String(registered.body.accessToken ?? '')
      let read: Answer = { status: 0, body: {} }
      // the profile exists once user.registered has crossed the broker
      await waitUntil(
        'GET /api/v1/users/me through the gateway',
        async () => {
          read = await answer(
            await fetch(`${gateway}/api/v1/users/me`, {
              headers: { Authorization: `Bearer ${token}` },
              signal: AbortSignal.timeout(15_000),
            }),
          )
          return read.status === 200
        },
        30_000,
      ).catch(() => {})
      return { register: { status: registered.status, body: redact(registered.body) }, profile: read }
    })
    return { namespace, pods, tables, install, test, testLog, gateway, register, profile, seconds }
  } finally {
    await beforeTeardown?.(namespace)
    await timed('teardown', async () => {
      await cluster
        .helm(['uninstall', RELEASE, '-n', namespace, '--wait', '--timeout', '2m'], 3 * 60_000)
        .catch(() => {})
      await cluster.api('DELETE', `/api/v1/namespaces/${namespace}`).catch(() => {})
      await waitUntil(
        `namespace ${namespace} gone`,
        async () => (await cluster.api('GET', `/api/v1/namespaces/${namespace}`)).status === 404,
        120_000,
      ).catch((error) => console.error(String(error)))
      for (const store of [...Object.values(databases), vhost, mongo])
        await store?.drop().catch((error) => console.error(String(error)))
      rmSync(dir, { recursive: true, force: true })
    })
  }
}

/** What the evidence shows wrong (empty: the release ran for real). */
export function problemsOf(e: Evidence): string[] {
  const problems: string[] = []
  if (e.pods.length === 0) problems.push('no pods')
  for (const p of e.pods)
    if (!p.ready || p.phase !== 'Running') problems.push(`pod ${p.name} not Ready (${p.phase})`)
  for (const [db, n] of Object.entries(e.tables))
    if (n === 0) problems.push(`no tables in ${db}: migrations did not run`)
  if (e.install.code !== 0) problems.push(`helm install exited ${e.install.code}`)
  if (e.test.code !== 0 || !/Phase:\s+Succeeded/.test(e.test.stdout))
    problems.push(`helm test exited ${e.test.code}: ${e.test.stderr.trim()}`)
  if (e.register.status !== 201) problems.push(`register answered ${e.register.status}`)
  if (e.profile.status !== 200) problems.push(`GET /users/me answered ${e.profile.status}`)
  return problems
}

/** The tail of a node component's log, for a failure message. */
export function tail(file: string, chars = 3000): string {
  try {
    return readFileSync(file, 'utf8').slice(-chars)
  } catch {
    return ''
  }
}
