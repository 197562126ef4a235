/**
 * Deployment artefacts: the Helm chart, compose, skaffold, alert rules and dashboards.
 *
 * The first test runs scripts/validate-deploy.sh (it installs helm and kubeconform into .cache/bin
 * when missing), whose program scripts/validate-deploy.py owns every rule that holds for EVERY
 * render or deploy file: Pod Security and the hardened securityContext, requests and limits,
 * probes, no replicas under an HPA, PDBs only over more than one pod, every pod under a
 * NetworkPolicy, migrations as hooks or init containers, the ci/invalid schema rejections, the
 * compose and skaffold wiring. The tests below assert what SPECIFIC renders must contain; a rule
 * is checked in one of the two places, not both.
 */
import { beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { YAML } from 'bun'
import { ROSTER } from '../packages/contracts/src/roster'

const root = join(import.meta.dir, '..')
const chart = join(root, 'charts/parley')
const helm = join(root, '.cache/bin/helm')
const services = ROSTER.map((s) => s.name)
/** The services with a store, whose schema is migrated before they start. */
const migrated = ROSTER.filter((s) => s.store !== null).map((s) => s.name)
const kubeVersion = '1.36.0'

type Manifest = {
  apiVersion: string
  kind: string
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> }
  // biome-ignore lint/suspicious/noExplicitAny: rendered Kubernetes objects are free-form
  spec?: any
  data?: Record<string, string>
}
type Labels = Record<string, string>
type Selector = {
  matchLabels?: Labels
  matchExpressions?: { key: string; operator: string; values?: string[] }[]
}

let validation: { exitCode: number; output: string } | undefined

/** Runs the validation script once (it also installs helm when missing). */
function validate(): { exitCode: number; output: string } {
  if (!validation) {
    const run = Bun.spawnSync(['bash', 'scripts/validate-deploy.sh'], {
      cwd: root,
      stdout: 'pipe',
      stderr: 'pipe',
      timeout: 900_000,
    })
    validation = {
      exitCode: run.exitCode ?? -1,
      output: `${run.stdout.toString()}\n${run.stderr.toString()}`,
    }
  }
  return validation
}

function runHelm(args: string[]) {
  const run = Bun.spawnSync([helm, ...args], { cwd: root, stdout: 'pipe', stderr: 'pipe' })
  return { exitCode: run.exitCode, stdout: run.stdout.toString(), stderr: run.stderr.toString() }
}

function renderRelease(release: string, ...args: string[]): Manifest[] {
  const run = runHelm(['template', release, chart, '-n', 'parley', '--kube-version', kubeVersion, ...args])
  if (run.exitCode !== 0) throw new Error(`helm template failed: ${run.stderr}`)
  return (YAML.parse(run.stdout) as (Manifest | null)[]).filter((doc): doc is Manifest => doc !== null)
}

function render(...args: string[]): Manifest[] {
  return renderRelease('parley', ...args)
}

function matches(selector: Selector | undefined, labels: Labels): boolean {
  if (!selector) return false
  for (const [key, value] of Object.entries(selector.matchLabels ?? {}))
    if (labels[key] !== value) return false
  for (const { key, operator, values = [] } of selector.matchExpressions ?? []) {
    const value = labels[key]
    if (operator === 'In' && (value === undefined || !values.includes(value))) return false
    if (operator === 'NotIn' && value !== undefined && values.includes(value)) return false
    if (operator === 'Exists' && value === undefined) return false
    if (operator === 'DoesNotExist' && value !== undefined) return false
  }
  return true
}

type Peer = { namespace: string; namespaceLabels: Labels; labels: Labels }

/** Whether `from` may open a connection to a pod with `labels` (namespace "parley") on `port`. */
function reachable(policies: Manifest[], labels: Labels, port: string, from: Peer): boolean {
  const applying = policies.filter(
    (p) => matches(p.spec.podSelector, labels) && (p.spec.policyTypes ?? ['Ingress']).includes('Ingress'),
  )
  if (applying.length === 0) return true
  return applying.some((p) =>
    (p.spec.ingress ?? []).some(
      // biome-ignore lint/suspicious/noExplicitAny: NetworkPolicy rules are free-form
      (rule: any) =>
        (!rule.ports || rule.ports.some((p: { port: string | number }) => String(p.port) === port)) &&
        (!rule.from ||
          // biome-ignore lint/suspicious/noExplicitAny: NetworkPolicy peers are free-form
          rule.from.some((peer: any) => {
            if (peer.ipBlock) return true
            const namespaceOk = peer.namespaceSelector
              ? matches(peer.namespaceSelector, from.namespaceLabels)
              : from.namespace === 'parley'
            const podOk = peer.podSelector ? matches(peer.podSelector, from.labels) : true
            return namespaceOk && podOk
          })),
    ),
  )
}

describe('deployment validation', () => {
  test('scripts/validate-deploy.sh passes (helm lint, kubeconform, pod and chart rules, promtool, compose, skaffold)', () => {
    const { exitCode, output } = validate()
    if (exitCode !== 0) console.error(output)
    expect(output).toContain('all ')
    expect(output).toContain('checks passed')
    // skaffold itself (not only its schema) reads skaffold.yaml and renders both profiles
    for (const profile of ['no profile', 'profile dev'])
      expect(output).toContain(`PASS  skaffold diagnose + render --offline (${profile})`)
    expect(exitCode).toBe(0)
  }, 900_000)
})

describe('helm chart', () => {
  // When this block runs alone, the validation script installs helm first.
  beforeAll(() => {
    if (!existsSync(helm)) validate()
  }, 900_000)

  test('only the gateway is reachable from outside the release', () => {
    const manifests = render()
    const policies = manifests.filter((m) => m.kind === 'NetworkPolicy')
    const deployments = manifests.filter((m) => m.kind === 'Deployment')
    const outsider: Peer = {
      namespace: 'elsewhere',
      namespaceLabels: { 'kubernetes.io/metadata.name': 'elsewhere' },
      labels: { app: 'intruder' },
    }
    const sameNamespaceStranger: Peer = { ...outsider, namespace: 'parley', namespaceLabels: {} }
    const open = deployments
      .filter((d) => reachable(policies, d.spec.template.metadata.labels, 'http', outsider))
      .map((d) => d.metadata.name)
    expect(open).toEqual(['parley-gateway'])
    const openInNamespace = deployments
      .filter((d) => reachable(policies, d.spec.template.metadata.labels, 'http', sameNamespaceStranger))
      .map((d) => d.metadata.name)
    expect(openInNamespace).toEqual(['parley-gateway'])
    // The ops port (/ready with dependency errors, /metrics) is closed to both, the gateway's too.
    for (const stranger of [outsider, sameNamespaceStranger])
      expect(
        deployments.filter((d) => reachable(policies, d.spec.template.metadata.labels, 'ops', stranger)),
      ).toEqual([])

    const podOf = (name: string): Peer => ({
      namespace: 'parley',
      namespaceLabels: {},
      labels: deployments.find((d) => d.metadata.name === `parley-${name}`)?.spec.template.metadata.labels,
    })
    const prometheus: Peer = {
      namespace: 'monitoring',
      namespaceLabels: { 'kubernetes.io/metadata.name': 'monitoring' },
      labels: { 'app.kubernetes.io/name': 'prometheus' },
    }
    for (const target of deployments) {
      const labels = target.spec.template.metadata.labels
      const name = target.metadata.name
      expect(reachable(policies, labels, 'http', podOf('gateway'))).toBe(true)
      // Prometheus scrapes the ops port, and reaches a service port only where anyone may.
      expect({ name, ops: reachable(policies, labels, 'ops', prometheus) }).toEqual({ name, ops: true })
      expect({ name, http: reachable(policies, labels, 'http', prometheus) }).toEqual({
        name,
        http: name === 'parley-gateway',
      })
      // The gateway proxies to service ports; it has no business on an ops port.
      if (name !== 'parley-gateway') expect(reachable(policies, labels, 'ops', podOf('gateway'))).toBe(false)
    }
    // The services that verify tokens fetch the auth JWKS; nothing else talks service to service.
    const auth = deployments.find((d) => d.metadata.name === 'parley-auth')?.spec.template.metadata.labels
    const user = deployments.find((d) => d.metadata.name === 'parley-user')?.spec.template.metadata.labels
    expect(reachable(policies, auth, 'http', podOf('chat'))).toBe(true)
    expect(reachable(policies, user, 'http', podOf('chat'))).toBe(false)
  })

  // (that every render probes the ops port and that every ServiceMonitor scrapes it is checked by
  // scripts/validate-deploy.py)
  test('probes, Service and ServiceMonitor use the ops port, with opsPort from the values', () => {
    const manifests = render(
      '--set',
      'monitoring.serviceMonitor.enabled=true',
      '--set',
      'services.user.opsPort=9555',
    )
    const user = manifests.find((m) => m.kind === 'Deployment' && m.metadata.name === 'parley-user')
    const container = user?.spec.template.spec.containers[0]
    expect(container.ports).toContainEqual({ name: 'ops', containerPort: 9555, protocol: 'TCP' })
    expect(container.env).toContainEqual({ name: 'OPS_PORT', value: '9555' })
    for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe'])
      expect({ probe, port: container[probe].httpGet.port }).toEqual({ probe, port: 'ops' })
    expect(container.readinessProbe.httpGet.path).toBe('/ready')
    const service = manifests.find((m) => m.kind === 'Service' && m.metadata.name === 'parley-user')
    expect(service?.spec.ports).toContainEqual({
      name: 'ops',
      port: 9555,
      targetPort: 'ops',
      protocol: 'TCP',
    })
    const monitors = manifests.filter((m) => m.kind === 'ServiceMonitor')
    expect(monitors.map((m) => m.metadata.name).sort()).toEqual(services.map((s) => `parley-${s}`).sort())
    for (const monitor of monitors)
      expect(monitor.spec.endpoints.map((e: { port: string; path: string }) => [e.port, e.path])).toEqual([
        ['ops', '/metrics'],
      ])
  })

  // (that no Deployment sets replicas under an HPA and no PDB covers a single pod is checked on
  // every render, these two included, by scripts/validate-deploy.py)
  test('autoscaling gives every service an HPA and a PDB; one replica gives neither', () => {
    const scaled = render(...services.flatMap((s) => ['--set', `services.${s}.autoscaling.enabled=true`]))
    const names = (kind: string, manifests: Manifest[]) =>
      manifests
        .filter((m) => m.kind === kind)
        .map((m) => m.metadata.name)
        .sort()
    const all = services.map((s) => `parley-${s}`).sort()
    expect(names('Deployment', scaled)).toEqual(all)
    expect(names('HorizontalPodAutoscaler', scaled)).toEqual(all)
    expect(names('PodDisruptionBudget', scaled)).toEqual(all)

    const single = render(...services.flatMap((s) => ['--set', `services.${s}.replicas=1`]))
    expect(names('HorizontalPodAutoscaler', single)).toEqual([])
    expect(names('PodDisruptionBudget', single)).toEqual([])
    for (const d of single.filter((m) => m.kind === 'Deployment')) expect(d.spec.replicas).toBe(1)
  })

  // (every charts/parley/ci/invalid/*.yaml failing the values schema is checked by
  // scripts/validate-deploy.py)
  test('a typo in --set is refused, naming the unknown key', () => {
    const typo = runHelm([
      'template',
      'parley',
      chart,
      '--kube-version',
      kubeVersion,
      '--set',
      'services.auth.replica=3',
    ])
    expect(typo.exitCode).toBe(1)
    expect(typo.stderr).toContain("values don't meet the specifications of the schema")
    expect(typo.stderr).toContain("additional properties 'replica' not allowed")
  })

  // (that each stored service is migrated exactly once, by a pre-install/pre-upgrade hook Job or
  // an init container running `migrate` with its image, and that hooks read no Secret the release
  // creates later, is checked on every render by scripts/validate-deploy.py)
  test('migrations: hook Jobs with their own Secret by default, init containers with the dev infra', () => {
    const jobs = render().filter((m) => m.kind === 'Job')
    expect(jobs.map((j) => j.metadata.name).sort()).toEqual(migrated.map((s) => `parley-${s}-migrate`).sort())
    for (const job of jobs) {
      // Hooks run before the release's Secrets exist: the Job reads its hook-scoped copy.
      const refs = job.spec.template.spec.containers[0].env
        .filter((e: { valueFrom?: unknown }) => e.valueFrom)
        .map((e: { valueFrom: { secretKeyRef: { name: string } } }) => e.valueFrom.secretKeyRef.name)
      expect(refs.length).toBeGreaterThan(0)
      for (const ref of refs) expect(ref).toBe(job.metadata.name)
    }

    const dev = render('-f', join(root, 'k8s/dev/values.yaml'))
    expect(dev.filter((m) => m.kind === 'Job')).toHaveLength(0)
    const withInit = dev
      .filter((m) => m.kind === 'Deployment' && m.spec.template.spec.initContainers)
      .map((m) => m.metadata.name)
      .sort()
    expect(withInit).toEqual(migrated.map((s) => `parley-${s}`).sort())
  })

  test('secrets come from the chart Secret, or from existingSecret per service or global', () => {
    const secretRef = (manifests: Manifest[], deployment: string, variable: string) =>
      manifests
        .find((m) => m.kind === 'Deployment' && m.metadata.name === deployment)
        ?.spec.template.spec.containers[0].env.find((e: { name: string }) => e.name === variable)?.valueFrom
        ?.secretKeyRef.name

    const managed = render()
    expect(secretRef(managed, 'parley-auth', 'DATABASE_URL')).toBe('parley-auth')
    expect(secretRef(managed, 'parley-auth', 'JWT_PRIVATE_KEY')).toBe('parley-auth')
    expect(secretRef(managed, 'parley-gateway', 'JWT_PRIVATE_KEY')).toBeUndefined()

    const existing = render('-f', join(chart, 'ci/existing-secret-values.yaml'))
    expect(existing.filter((m) => m.kind === 'Secret')).toHaveLength(0)
    expect(secretRef(existing, 'parley-auth', 'DATABASE_URL')).toBe('parley-auth-credentials')
    expect(secretRef(existing, 'parley-auth', 'REDIS_URL')).toBe('parley-shared')
    expect(secretRef(existing, 'parley-gateway', 'AMQP_URL')).toBe('parley-shared')

    const infra = render('--set', 'infra.enabled=true')
    const notification = infra.find((m) => m.kind === 'Secret' && m.metadata.name === 'parley-notification')
    const decoded = Object.fromEntries(
      Object.entries(notification?.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString()]),
    )
    expect(decoded).toEqual({
      AMQP_URL: 'amqp://parley:parley@parley-rabbitmq:5672/%2F',
      DATABASE_URL: 'postgres://parley:parley@parley-postgresql:5432/parley_notification',
      REDIS_URL: 'redis://parley-redis:6379',
      SMTP_URL: 'smtp://parley-mailpit:1025',
    })
  })

  // Helm allows release names up to 53 characters; with <release>-parley- in front, a component
  // name passes 63 and is shortened. A plain cut gave the three dashboards one name, the chart
  // Secret and notification's hook Secret one name, and hook pods a Secret name that was cut
  // differently from the Secret itself (CreateContainerConfigError, helm install hanging).
  // Several helm renders, each seconds long on a loaded machine.
  test('a 53-character release name: names unique per kind, at most 63 characters, every reference resolves', () => {
    const releases = [
      'a-release-name-of-fifty-three-characters-for-the-test',
      'release-named-parley-so-the-fullname-is-the-release-1',
    ]
    const valueSets = [
      [],
      ...readdirSync(join(chart, 'ci'))
        .filter((f) => f.endsWith('-values.yaml'))
        .map((f) => ['-f', join(chart, 'ci', f)]),
      ['-f', join(root, 'k8s/dev/values.yaml')],
      [
        '--set',
        'monitoring.dashboards.enabled=true',
        '--set',
        'monitoring.serviceMonitor.enabled=true',
        '--set',
        'monitoring.prometheusRule.enabled=true',
        '--set',
        'ingress.enabled=true',
        ...services.flatMap((s) => ['--set', `services.${s}.autoscaling.enabled=true`]),
      ],
    ]
    const dnsLabel = /^[a-z]([-a-z0-9]*[a-z0-9])?$/
    for (const release of releases) {
      expect(release).toHaveLength(53)
      for (const args of valueSets) {
        const where = `${release} ${args.join(' ') || '(defaults)'}`
        const manifests = renderRelease(release, ...args)
        const byKind = new Map<string, string[]>()
        for (const m of manifests) byKind.set(m.kind, [...(byKind.get(m.kind) ?? []), m.metadata.name])
        for (const [kind, names] of byKind) {
          const duplicates = names.filter((n, i) => names.indexOf(n) !== i)
          expect({ where, kind, duplicates }).toEqual({ where, kind, duplicates: [] })
          for (const name of names) {
            expect({ where, kind, name, length: name.length <= 63 }).toEqual({
              where,
              kind,
              name,
              length: true,
            })
            expect({ where, kind, name, dns: dnsLabel.test(name) }).toEqual({ where, kind, name, dns: true })
          }
        }
        for (const m of manifests)
          for (const [key, value] of Object.entries({
            ...m.metadata.labels,
            ...m.spec?.template?.metadata?.labels,
          }))
            expect({ where, key, value, length: String(value).length <= 63 }).toEqual({
              where,
              key,
              value,
              length: true,
            })

        // References to objects of the release (named after it) resolve inside the render; other
        // names (existingSecret, imagePullSecrets, the Ingress TLS Secret) come from the values.
        const has = (kind: string, name: string) => byKind.get(kind)?.includes(name) ?? false
        const expectRef = (from: Manifest, kind: string, name: string | undefined) => {
          if (!name?.startsWith(release)) return
          expect({
            where,
            from: `${from.kind}/${from.metadata.name}`,
            kind,
            name,
            resolves: has(kind, name),
          }).toEqual({
            where,
            from: `${from.kind}/${from.metadata.name}`,
            kind,
            name,
            resolves: true,
          })
        }
        for (const m of manifests) {
          const pod = m.kind === 'Pod' ? m.spec : m.spec?.template?.spec
          if (pod) {
            expectRef(m, 'ServiceAccount', pod.serviceAccountName)
            for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
              for (const e of c.env ?? []) {
                expectRef(m, 'Secret', e.valueFrom?.secretKeyRef?.name)
                expectRef(m, 'ConfigMap', e.valueFrom?.configMapKeyRef?.name)
                // service URLs (JWKS_URL, AUTH_URL, ...) and bundled infra hosts
                for (const host of String(e.value ?? '').matchAll(/\/\/(?:[^@/]*@)?([a-z0-9-]+):\d+/g))
                  expectRef(m, 'Service', host[1])
              }
              for (const from of c.envFrom ?? []) {
                expectRef(m, 'Secret', from.secretRef?.name)
                expectRef(m, 'ConfigMap', from.configMapRef?.name)
              }
            }
            for (const v of pod.volumes ?? []) {
              expectRef(m, 'Secret', v.secret?.secretName)
              expectRef(m, 'ConfigMap', v.configMap?.name)
            }
          }
          if (m.kind === 'HorizontalPodAutoscaler')
            expectRef(m, m.spec.scaleTargetRef.kind, m.spec.scaleTargetRef.name)
          if (m.kind === 'Ingress')
            for (const rule of m.spec.rules ?? [])
              for (const path of rule.http.paths) expectRef(m, 'Service', path.backend.service.name)
        }
        // Secrets inside the decoded chart Secrets (infra URLs) name Services of the release.
        for (const secret of manifests.filter((m) => m.kind === 'Secret'))
          for (const value of Object.values(secret.data ?? {}))
            for (const host of Buffer.from(value, 'base64')
              .toString()
              .matchAll(/\/\/(?:[^@/]*@)?([a-z0-9-]+):\d+/g))
              expectRef(secret, 'Service', host[1])
        // Selectors (Service, PDB, NetworkPolicy, ServiceMonitor) select pods of the release.
        const podLabels = manifests
          .filter((m) => m.spec?.template?.metadata?.labels)
          .map((m) => m.spec.template.metadata.labels as Labels)
        for (const m of manifests) {
          const selector: Selector | undefined =
            m.kind === 'Service'
              ? { matchLabels: m.spec.selector }
              : ['PodDisruptionBudget', 'ServiceMonitor'].includes(m.kind)
                ? m.spec.selector
                : m.kind === 'NetworkPolicy'
                  ? m.spec.podSelector
                  : undefined
          if (!selector) continue
          const name = `${m.kind}/${m.metadata.name}`
          // a ServiceMonitor selects Services, whose labels are the pods' minus nothing it matches on
          expect({ where, name, selects: podLabels.some((labels) => matches(selector, labels)) }).toEqual({
            where,
            name,
            selects: true,
          })
        }
      }
    }
  }, 60_000)

  test('a dev signing key with several auth replicas is refused', () => {
    const run = runHelm([
      'template',
      'parley',
      chart,
      '--kube-version',
      kubeVersion,
      '--set',
      'services.auth.env.PARLEY_ENV=development',
      '--set',
      'services.auth.replicas=2',
    ])
    expect(run.exitCode).toBe(1)
    expect(run.stderr).toContain('every auth replica generates its own signing key')
  })

  test('dashboards ship from the one copy in charts/parley/dashboards', () => {
    const configMaps = render('--set', 'monitoring.dashboards.enabled=true').filter(
      (m) => m.kind === 'ConfigMap' && m.metadata.labels?.grafana_dashboard === '1',
    )
    const files = readdirSync(join(chart, 'dashboards')).filter((f) => f.endsWith('.json'))
    expect(files.sort()).toEqual(['parley-events.json', 'parley-gateway.json', 'parley-overview.json'])
    expect(configMaps).toHaveLength(files.length)
    for (const file of files) {
      const configMap = configMaps.find((m) => m.data?.[file] !== undefined)
      expect(configMap?.data?.[file]).toBe(readFileSync(join(chart, 'dashboards', file), 'utf8').trimEnd())
    }
    const compose = readFileSync(join(root, 'docker-compose.yml'), 'utf8')
    expect(compose).toContain('./charts/parley/dashboards:/var/lib/grafana/dashboards/parley:ro')
    expect(compose).toContain(
      './charts/parley/rules/parley.rules.yaml:/etc/prometheus/rules/parley.rules.yaml:ro',
    )
  })
})
