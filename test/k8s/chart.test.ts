/**
 * charts/parley against a real Kubernetes API server (test/k8s/cluster.ts: kube-apiserver and
 * kube-controller-manager built from the Go module proxy by scripts/k8s-cluster.sh, etcd from
 * Debian). Each value set of charts/parley/ci, and a 53-character release name, is installed into
 * its own namespace enforcing Pod Security "restricted".
 *
 * There is no node, so no pod ever runs: "admitted" means the API server created the pod past
 * every admission plugin (PodSecurity, ServiceAccount) and the controllers reported no
 * FailedCreate. Helm waits for hook Jobs to complete, which they cannot here, so:
 *  - the hook phase installs WITH hooks and a migration deadline of a few seconds, once per
 *    migration Job (helm runs hooks one by one and stops at the first failure): the Job
 *    controller creates the migration pod (checked while it exists: its ServiceAccount and every
 *    Secret it references exist), then fails the Job at the deadline; helm must report the Job's
 *    failure (not its own timeout), and after `helm uninstall` nothing may be left (the failed Job
 *    goes with ttlSecondsAfterFinished);
 *  - the release phase installs the same values with --no-hooks (the ordinary resources: every
 *    Deployment's pods created, HPA/PDB/NetworkPolicy/ServiceMonitor/PrometheusRule accepted),
 *    creates the `helm test` pod (helm times out waiting for it to finish), then upgrades, rolls
 *    back and uninstalls, and checks the namespace holds nothing of the release afterwards.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { YAML } from 'bun'
import { type Cluster, type KubeObject, k8sTools, startCluster, waitUntil } from './cluster'

const root = join(import.meta.dir, '../..')
const chart = join(root, 'charts/parley')
let cluster: Cluster | undefined
let startedAt = 0

/** Namespaced kinds the chart can create (plus what their controllers create), as list paths. */
const KINDS: Record<string, string> = {
  Pod: '/api/v1/namespaces/NS/pods',
  Service: '/api/v1/namespaces/NS/services',
  Secret: '/api/v1/namespaces/NS/secrets',
  ConfigMap: '/api/v1/namespaces/NS/configmaps',
  ServiceAccount: '/api/v1/namespaces/NS/serviceaccounts',
  Deployment: '/apis/apps/v1/namespaces/NS/deployments',
  ReplicaSet: '/apis/apps/v1/namespaces/NS/replicasets',
  Job: '/apis/batch/v1/namespaces/NS/jobs',
  HorizontalPodAutoscaler: '/apis/autoscaling/v2/namespaces/NS/horizontalpodautoscalers',
  PodDisruptionBudget: '/apis/policy/v1/namespaces/NS/poddisruptionbudgets',
  NetworkPolicy: '/apis/networking.k8s.io/v1/namespaces/NS/networkpolicies',
  Ingress: '/apis/networking.k8s.io/v1/namespaces/NS/ingresses',
  ServiceMonitor: '/apis/monitoring.coreos.com/v1/namespaces/NS/servicemonitors',
  PrometheusRule: '/apis/monitoring.coreos.com/v1/namespaces/NS/prometheusrules',
}

/** What a new namespace holds before anything is installed. */
const isNamespaceDefault = (kind: string, o: KubeObject) =>
  (kind === 'ServiceAccount' && o.metadata.name === 'default') ||
  (kind === 'ConfigMap' && o.metadata.name === 'kube-root-ca.crt')

type Case = { name: string; release: string; args: string[] }
const cases: Case[] = [
  ...readdirSync(join(chart, 'ci'))
    .filter((f) => f.endsWith('-values.yaml'))
    .sort()
    .map((f) => ({
      name: f.replace(/-values\.yaml$/, ''),
      release: 'parley',
      args: ['-f', join(chart, 'ci', f)],
    })),
  // defaults (hook migrations with the chart's Secrets) under the longest release name helm allows
  { name: 'long-release-name', release: 'a-release-name-of-fifty-three-characters-for-the-test', args: [] },
]

/** Helm must not print Pod Security warnings (the namespaces also warn on "restricted"). */
const expectNoWarnings = (where: string, stderr: string) =>
  expect({
    where,
    warnings: stderr.split('\n').filter((l) => /PodSecurity|forbidden|violate/i.test(l)),
  }).toEqual({
    where,
    warnings: [],
  })

async function leftovers(c: Cluster, ns: string): Promise<string[]> {
  const left: string[] = []
  for (const [kind, path] of Object.entries(KINDS))
    for (const o of await c.list(path.replace('NS', ns)))
      if (!isNamespaceDefault(kind, o)) left.push(`${kind}/${o.metadata.name}`)
  return left.sort()
}

async function refusals(c: Cluster, ns: string): Promise<string[]> {
  return (await c.list(`/api/v1/namespaces/${ns}/events`))
    .filter((e) => e.reason === 'FailedCreate' || /PodSecurity|forbidden/.test(String(e.message)))
    .map(
      (e) =>
        `${(e.involvedObject as { kind: string; name: string }).kind}/${(e.involvedObject as { name: string }).name}: ${e.reason}: ${e.message}`,
    )
}

describe('charts/parley on a real API server (Pod Security restricted)', () => {
  beforeAll(async () => {
    startedAt = performance.now()
    const tools = await k8sTools()
    console.error(`[k8s] tools ready in ${tools.seconds.toFixed(0)} s`)
    const up = performance.now()
    cluster = await startCluster(tools)
    console.error(
      `[k8s] control plane up in ${((performance.now() - up) / 1000).toFixed(0)} s at ${cluster.server}`,
    )
  }, 50 * 60_000)

  afterAll(async () => {
    await cluster?.stop()
    console.error(`[k8s] cluster tests took ${((performance.now() - startedAt) / 1000).toFixed(0)} s in all`)
  }, 60_000)

  for (const { name, release, args } of cases) {
    test.concurrent(`${name}: hook Jobs and every pod admitted; upgrade, rollback and uninstall leave nothing`, async () => {
      const c = cluster as Cluster
      const ns = `chart-${name}-${crypto.randomUUID().slice(0, 6)}`
      const labels = Object.fromEntries(
        ['enforce', 'warn', 'audit'].flatMap((mode) => [
          [`pod-security.kubernetes.io/${mode}`, 'restricted'],
          [`pod-security.kubernetes.io/${mode}-version`, 'latest'],
        ]),
      )
      const created = await c.api('POST', '/api/v1/namespaces', { metadata: { name: ns, labels } })
      expect(created.status).toBe(201)
      // pods naming no ServiceAccount (serviceAccount.create=false) need `default`
      await waitUntil(
        `ServiceAccount ${ns}/default`,
        async () => (await c.api('GET', `/api/v1/namespaces/${ns}/serviceaccounts/default`)).status === 200,
        60_000,
      )

      // What the chart renders for these values (helm template, the same flags).
      const rendered = await c.helm(['template', release, chart, '-n', ns, ...args])
      expect(rendered.code).toBe(0)
      const manifests = (YAML.parse(rendered.stdout) as (KubeObject | null)[]).filter(
        (m): m is KubeObject => m !== null,
      )
      // the migration hook Jobs, with the service each migrates (app.kubernetes.io/component <service>-migrate)
      const migrations = manifests
        .filter((m) => m.kind === 'Job' && m.metadata.annotations?.['helm.sh/hook'])
        .map((m) => ({
          job: m.metadata.name,
          service: m.metadata.labels?.['app.kubernetes.io/component']?.replace(/-migrate$/, '') ?? '',
        }))
      const deployments = manifests.filter((m) => m.kind === 'Deployment')
      // Secrets the values say exist outside the chart (existingSecret), which nothing creates here
      const values = (args[0] === '-f' ? YAML.parse(readFileSync(args[1] as string, 'utf8')) : {}) as {
        global?: { existingSecret?: string }
        services?: Record<string, { existingSecret?: string }>
      }
      const external = new Set(
        [
          values.global?.existingSecret,
          ...Object.values(values.services ?? {}).map((s) => s.existingSecret),
        ].filter((n): n is string => Boolean(n)),
      )
      expect(deployments.length).toBeGreaterThan(0)

      // ------------------------------------------------------------------------ hook phase
      // Helm runs hooks one after another and stops at the first failure, so each migration gets
      // an install of its own (the other services' migrate=false). A deadline the Job controller
      // enforces on Pending pods makes the migration fail for real.
      for (const { job, service } of migrations) {
        const others = migrations
          .filter((m) => m.service !== service)
          .flatMap((m) => ['--set', `services.${m.service}.migrate=false`])
        const hookArgs = [
          ...others,
          '--set',
          'migrations.activeDeadlineSeconds=4',
          '--set',
          'migrations.ttlSecondsAfterFinished=1',
        ]
        const installing = c.helm(
          ['install', release, chart, '-n', ns, ...args, ...hookArgs, '--timeout', '90s'],
          150_000,
        )
        // While the migration pod exists, everything it references must exist too (a Secret name
        // cut differently from the Secret it means is CreateContainerConfigError on a node).
        let pod: KubeObject | undefined
        const missing: string[] = []
        const until = Date.now() + 60_000
        while (!pod && Date.now() < until) {
          pod = (
            await c.list(`/api/v1/namespaces/${ns}/pods?labelSelector=batch.kubernetes.io/job-name=${job}`)
          )[0]
          if (!pod) {
            await Bun.sleep(100)
            continue
          }
          const secrets = new Set(
            (await c.list(`/api/v1/namespaces/${ns}/secrets`)).map((o) => o.metadata.name),
          )
          const accounts = new Set(
            (await c.list(`/api/v1/namespaces/${ns}/serviceaccounts`)).map((o) => o.metadata.name),
          )
          if (!accounts.has(pod.spec.serviceAccountName))
            missing.push(`ServiceAccount ${pod.spec.serviceAccountName}`)
          for (const container of pod.spec.containers as {
            env?: { valueFrom?: { secretKeyRef?: { name: string } } }[]
          }[])
            for (const env of container.env ?? []) {
              const ref = env.valueFrom?.secretKeyRef?.name
              if (ref && !secrets.has(ref) && !external.has(ref)) missing.push(`Secret ${ref}`)
            }
        }
        const install = await installing
        expectNoWarnings(`${name} install (${job})`, install.stderr)
        expect({ name, job, admitted: pod !== undefined, missing }).toEqual({
          name,
          job,
          admitted: true,
          missing: [],
        })
        // helm reports the Job's own failure, well before its --timeout
        expect({ job, code: install.code, deadline: install.stderr.includes('DeadlineExceeded') }).toEqual({
          job,
          code: 1,
          deadline: true,
        })
        expect(install.seconds).toBeLessThan(60)
        const uninstall = await c.helm(['uninstall', release, '-n', ns, '--wait', '--timeout', '60s'])
        expect(uninstall.code).toBe(0)
        // Helm never deletes a failed hook Job, uninstall or not; its TTL removes it and its pods.
        await waitUntil(
          `nothing left of the failed ${job} in ${ns}`,
          async () => (await leftovers(c, ns)).length === 0,
          60_000,
        )
        expect(await leftovers(c, ns)).toEqual([])
      }
      expect(await refusals(c, ns)).toEqual([])

      // --------------------------------------------------------------------- release phase
      // The hooks that cannot complete here were exercised above; without any, install as is.
      const noHooks = migrations.length > 0 ? ['--no-hooks'] : []
      const first = await c.helm([
        'install',
        release,
        chart,
        '-n',
        ns,
        ...args,
        ...noHooks,
        '--timeout',
        '60s',
      ])
      expect({ name, code: first.code, stderr: first.stderr }).toEqual({ name, code: 0, stderr: '' })
      // Every Deployment gets its pods (HPA-scaled ones included), created past PodSecurity.
      await waitUntil(
        `pods of every Deployment in ${ns}`,
        async () => {
          const pods = await c.list(`/api/v1/namespaces/${ns}/pods`)
          return deployments.every((d) =>
            pods.some((p) =>
              Object.entries(d.spec.selector.matchLabels as Record<string, string>).every(
                ([k, v]) => p.metadata.labels?.[k] === v,
              ),
            ),
          )
        },
        90_000,
      )
      for (const kind of [
        'HorizontalPodAutoscaler',
        'PodDisruptionBudget',
        'NetworkPolicy',
        'ServiceMonitor',
        'PrometheusRule',
        'Ingress',
        'ConfigMap',
      ]) {
        const want = manifests
          .filter((m) => m.kind === kind)
          .map((m) => m.metadata.name)
          .sort()
        const have = (await c.list((KINDS[kind] as string).replace('NS', ns)))
          .filter((o) => !isNamespaceDefault(kind, o))
          .map((o) => o.metadata.name)
          .sort()
        expect({ name, kind, have }).toEqual({ name, kind, have: want })
      }

      // `helm test`: the pod is admitted; with no node it never finishes, so helm times out.
      const testPod = manifests.find((m) => m.kind === 'Pod')?.metadata.name as string
      const tested = await c.helm(['test', release, '-n', ns, '--timeout', '5s'])
      expectNoWarnings(`${name} helm test`, tested.stderr)
      expect((await c.api('GET', `/api/v1/namespaces/${ns}/pods/${testPod}`)).status).toBe(200)
      expect(await refusals(c, ns)).toEqual([])

      // upgrade (a changed value reaches the Deployment), rollback (it is back)
      const logLevel = async () =>
        (
          (await c.api('GET', `/apis/apps/v1/namespaces/${ns}/deployments/${deployments[0]?.metadata.name}`))
            .body as KubeObject
        ).spec.template.spec.containers[0].env.find((e: { name: string }) => e.name === 'LOG_LEVEL')?.value
      const before = await logLevel()
      const upgrade = await c.helm([
        'upgrade',
        release,
        chart,
        '-n',
        ns,
        ...args,
        ...noHooks,
        '--set',
        'global.logLevel=warn',
      ])
      expect({ name, code: upgrade.code, stderr: upgrade.stderr }).toEqual({ name, code: 0, stderr: '' })
      expect(await logLevel()).toBe('warn')
      const rollback = await c.helm(['rollback', release, '1', '-n', ns, ...noHooks])
      expect({ name, code: rollback.code, stderr: rollback.stderr }).toEqual({ name, code: 0, stderr: '' })
      expect(await logLevel()).toBe(before)
      expect(before).not.toBe('warn')
      expect(await refusals(c, ns)).toEqual([])

      // uninstall: the release's objects, what their controllers made, the test pod: all gone
      const uninstall = await c.helm(['uninstall', release, '-n', ns, '--wait', '--timeout', '60s'])
      expect({ name, code: uninstall.code, stderr: uninstall.stderr }).toEqual({ name, code: 0, stderr: '' })
      // the `helm test` pod is a hook: helm leaves it, and deletes it with the next `helm test`
      await c.api('DELETE', `/api/v1/namespaces/${ns}/pods/${testPod}`)
      await waitUntil(`an empty ${ns}`, async () => (await leftovers(c, ns)).length === 0, 60_000)
      expect(await leftovers(c, ns)).toEqual([])

      expect((await c.api('DELETE', `/api/v1/namespaces/${ns}`)).status).toBe(200)
      await waitUntil(
        `namespace ${ns} deleted`,
        async () => (await c.api('GET', `/api/v1/namespaces/${ns}`)).status === 404,
        60_000,
      )
    }, 300_000)
  }
})
