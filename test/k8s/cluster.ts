/**
 * A real Kubernetes control plane on loopback for the chart tests: etcd, kube-apiserver and
 * kube-controller-manager built by scripts/k8s-cluster.sh (the API server with RBAC, a static
 * admin token and the default admission plugins, PodSecurity among them). There is no node, so
 * pods are created (admitted past every admission plugin) and stay Pending.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { YAML } from 'bun'

const root = join(import.meta.dir, '../..')

export type Tools = {
  apiserver: string
  controllerManager: string
  etcd: string
  helm: string
  openssl: string
  crds: string
}

type Json = Record<string, unknown>
export type KubeObject = {
  apiVersion?: string
  kind?: string
  metadata: {
    name: string
    namespace?: string
    labels?: Record<string, string>
    annotations?: Record<string, string>
    ownerReferences?: { kind: string; name: string }[]
  }
  // biome-ignore lint/suspicious/noExplicitAny: Kubernetes objects are free-form
  spec?: any
  // biome-ignore lint/suspicious/noExplicitAny: Kubernetes objects are free-form
  status?: any
  [key: string]: unknown
}
export type Reply = { status: number; body: Json }
export type Run = { code: number; stdout: string; stderr: string; seconds: number }

export type Cluster = {
  server: string
  kubeconfig: string
  api: (method: string, path: string, body?: unknown) => Promise<Reply>
  list: (path: string) => Promise<KubeObject[]>
  /** Runs helm against the cluster, killed after `timeoutMs`. */
  helm: (args: string[], timeoutMs?: number) => Promise<Run>
  stop: () => Promise<void>
}

/** Runs a command, killed after `timeoutMs`; with `echo`, its stderr is also streamed to ours (the progress of a cold build). */
export async function run(
  cmd: string[],
  timeoutMs: number,
  env?: Record<string, string>,
  echo = false,
): Promise<Run> {
  const started = performance.now()
  const proc = Bun.spawn(cmd, { cwd: root, stdout: 'pipe', stderr: 'pipe', env: { ...process.env, ...env } })
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs)
  const collect = async (stream: ReadableStream<Uint8Array>, tee: boolean) => {
    const decoder = new TextDecoder()
    let text = ''
    for await (const chunk of stream) {
      if (tee) process.stderr.write(chunk)
      text += decoder.decode(chunk, { stream: true })
    }
    return text + decoder.decode()
  }
  const [stdout, stderr] = await Promise.all([collect(proc.stdout, false), collect(proc.stderr, echo)])
  const code = await proc.exited
  clearTimeout(timer)
  return { code, stdout, stderr, seconds: (performance.now() - started) / 1000 }
}

/** Installs or reuses the binaries (the first run builds Kubernetes: ~6-10 min on 2 cores). */
export async function k8sTools(): Promise<Tools & { seconds: number }> {
  console.error(
    '[k8s] scripts/k8s-cluster.sh tools (a cold run builds kube-apiserver and kube-controller-manager)',
  )
  const out = await run(['bash', 'scripts/k8s-cluster.sh', 'tools'], 45 * 60_000, undefined, true)
  if (out.code !== 0)
    throw new Error(`scripts/k8s-cluster.sh tools failed (${out.code}):\n${out.stderr.slice(-4000)}`)
  const line = out.stdout.trim().split('\n').at(-1) ?? ''
  return { ...(JSON.parse(line) as Tools), seconds: out.seconds }
}

export function freePort(): number {
  const socket = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const port = socket.port
  socket.stop(true)
  return port
}

export async function waitUntil(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs: number,
  logs: string[] = [],
) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return
    await Bun.sleep(250)
  }
  const tails = logs.map((f) => `--- ${f}\n${readFileSync(f, 'utf8').slice(-3000)}`).join('\n')
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${tails}`)
}

/** Starts etcd, the API server and the controller manager on free loopback ports. */
export async function startCluster(tools: Tools): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), 'parley-k8s-'))
  const procs: Bun.Subprocess[] = []
  const log = (name: string) => join(dir, `${name}.log`)
  const spawn = (name: string, cmd: string[]) => {
    const proc = Bun.spawn(cmd, { stdin: 'ignore', stdout: 'ignore', stderr: Bun.file(log(name)) })
    procs.push(proc)
    return proc
  }
  const stop = async () => {
    // reverse order: the controller manager and the API server before their etcd
    for (const proc of [...procs].reverse()) {
      proc.kill('SIGTERM')
      const exited = await Promise.race([proc.exited.then(() => true), Bun.sleep(10_000).then(() => false)])
      if (!exited) proc.kill('SIGKILL')
    }
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    const openssl = (...args: string[]) => {
      const r = Bun.spawnSync([tools.openssl, ...args], { cwd: dir, stdout: 'pipe', stderr: 'pipe' })
      if (r.exitCode !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr.toString()}`)
    }
    // The serving certificate is its own CA (helm and fetch trust exactly it); service-account
    // tokens are signed with sa.key.
    openssl(
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      'tls.key',
      '-out',
      'tls.crt',
      '-days',
      '2',
      '-subj',
      '/CN=kube-apiserver',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
    )
    openssl('genrsa', '-out', 'sa.key', '2048')
    openssl('rsa', '-in', 'sa.key', '-pubout', '-out', 'sa.pub')
    const token = crypto.randomUUID()
    writeFileSync(join(dir, 'tokens.csv'), `${token},parley-admin,parley-admin,"system:masters"\n`)
    const ca = readFileSync(join(dir, 'tls.crt'), 'utf8')

    const [etcdClient, etcdPeer, apiPort] = [freePort(), freePort(), freePort()]
    const etcdUrl = `http://127.0.0.1:${etcdClient}`
    const etcd = spawn('etcd', [
      tools.etcd,
      '--name=parley-test',
      `--data-dir=${join(dir, 'etcd')}`,
      `--listen-client-urls=${etcdUrl}`,
      `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-cluster=parley-test=http://127.0.0.1:${etcdPeer}`,
      '--logger=zap',
      '--log-level=warn',
    ])
    await waitUntil(
      'etcd /health',
      async () => etcd.exitCode === null && (await fetch(`${etcdUrl}/health`)).ok,
      30_000,
      [log('etcd')],
    )

    const server = `https://127.0.0.1:${apiPort}`
    const apiserver = spawn('kube-apiserver', [
      tools.apiserver,
      `--etcd-servers=${etcdUrl}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      `--secure-port=${apiPort}`,
      // the `kubernetes` Service endpoints would be a loopback address, which validation refuses
      '--endpoint-reconciler-type=none',
      `--tls-cert-file=${join(dir, 'tls.crt')}`,
      `--tls-private-key-file=${join(dir, 'tls.key')}`,
      `--token-auth-file=${join(dir, 'tokens.csv')}`,
      '--authorization-mode=RBAC',
      '--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,PodSecurity,LimitRanger,ResourceQuota,DefaultStorageClass',
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${join(dir, 'sa.pub')}`,
      `--service-account-signing-key-file=${join(dir, 'sa.key')}`,
      '--service-cluster-ip-range=10.96.0.0/16',
      `--cert-dir=${join(dir, 'certs')}`,
      '--profiling=false',
      // a node (test/k8s/node.ts) is reached by its address: its name resolves nowhere
      '--kubelet-preferred-address-types=InternalIP',
    ])
    const headers = { Authorization: `Bearer ${token}` }
    const api = async (method: string, path: string, body?: unknown): Promise<Reply> => {
      const res = await fetch(`${server}${path}`, {
        method,
        headers: { ...headers, ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
        tls: { ca },
        signal: AbortSignal.timeout(30_000),
      })
      const text = await res.text()
      let parsed: Json = {}
      try {
        parsed = text ? (JSON.parse(text) as Json) : {}
      } catch {
        parsed = { text }
      }
      return { status: res.status, body: parsed }
    }
    const list = async (path: string) => {
      const reply = await api('GET', path)
      if (reply.status !== 200) throw new Error(`GET ${path}: ${reply.status} ${JSON.stringify(reply.body)}`)
      return (reply.body.items ?? []) as KubeObject[]
    }
    await waitUntil(
      'kube-apiserver /readyz',
      async () => apiserver.exitCode === null && (await api('GET', '/readyz')).status === 200,
      120_000,
      [log('kube-apiserver')],
    )

    const kubeconfig = join(dir, 'kubeconfig')
    writeFileSync(
      kubeconfig,
      YAML.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [
          { name: 'parley-test', cluster: { server, 'certificate-authority': join(dir, 'tls.crt') } },
        ],
        users: [{ name: 'parley-admin', user: { token } }],
        contexts: [{ name: 'parley-test', context: { cluster: 'parley-test', user: 'parley-admin' } }],
        'current-context': 'parley-test',
      }),
    )
    const controllerManager = spawn('kube-controller-manager', [
      tools.controllerManager,
      `--kubeconfig=${kubeconfig}`,
      '--leader-elect=false',
      // no serving port: nothing scrapes it
      '--secure-port=0',
      `--service-account-private-key-file=${join(dir, 'sa.key')}`,
      `--root-ca-file=${join(dir, 'tls.crt')}`,
      // the Job and TTL-after-finished controllers react within a second
      '--concurrent-job-syncs=5',
    ])
    // The serviceaccount controller creating `default` in kube-system: the controllers are running.
    await waitUntil(
      'kube-controller-manager (ServiceAccount kube-system/default)',
      async () =>
        controllerManager.exitCode === null &&
        (await api('GET', '/api/v1/namespaces/kube-system/serviceaccounts/default')).status === 200,
      120_000,
      [log('kube-controller-manager')],
    )

    // ServiceMonitor and PrometheusRule: the operator's own CRDs, so the server validates them.
    for (const file of [
      'monitoring.coreos.com_servicemonitors.yaml',
      'monitoring.coreos.com_prometheusrules.yaml',
    ]) {
      const crd = YAML.parse(readFileSync(join(tools.crds, file), 'utf8')) as KubeObject
      const created = await api('POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', crd)
      if (created.status !== 201)
        throw new Error(`creating CRD ${file}: ${created.status} ${JSON.stringify(created.body)}`)
      await waitUntil(
        `CRD ${crd.metadata.name} established`,
        async () => {
          const got = await api(
            'GET',
            `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`,
          )
          const conditions = ((got.body.status as Json | undefined)?.conditions ?? []) as {
            type: string
            status: string
          }[]
          return conditions.some((c) => c.type === 'Established' && c.status === 'True')
        },
        30_000,
      )
    }

    const helmHome = join(dir, 'helm')
    const helm = (args: string[], timeoutMs = 120_000) =>
      run([tools.helm, ...args], timeoutMs, {
        KUBECONFIG: kubeconfig,
        HELM_CACHE_HOME: join(helmHome, 'cache'),
        HELM_CONFIG_HOME: join(helmHome, 'config'),
        HELM_DATA_HOME: join(helmHome, 'data'),
      })
    return { server, kubeconfig, api, list, helm, stop }
  } catch (error) {
    await stop()
    throw error
  }
}
