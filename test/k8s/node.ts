/**
 * A real Kubernetes node on top of test/k8s/cluster.ts's control plane, so the chart's pods run:
 * containerd + runc + the bridge CNI plugin (Debian), kubelet, kube-scheduler, kube-proxy
 * (nftables mode) and CoreDNS, all built or installed by scripts/k8s-node.sh.
 *
 * Host state, all of it removed by `stop()` and by `cleanHost()` (run first, for a killed run):
 *  - the bridge `parley-k8s0` with 10.244.0.1/24, the node's only address: pods get 10.244.0.x,
 *    the kubelet API (10250), CoreDNS (53) and the forwarders listen there, nothing on eth0;
 *  - kube-proxy's nftables tables `ip kube-proxy` / `ip6 kube-proxy` (ClusterIPs, masquerade-all);
 *  - everything else under STATE (containerd root and state, network namespaces, kubelet root,
 *    pod logs, IPAM), its mounts, the kubelet's cgroup root `/parley-k8s-node-<id>` in every
 *    hierarchy, and the processes that name STATE on their command line (containerd's shims
 *    outlive containerd);
 *  - the few fixed paths kubelet and libcni write whatever they are told: the symlinks in
 *    /var/log/containers into STATE, /var/lib/kubelet/device-plugins/kubelet.sock, and the
 *    entries of our sandboxes in /var/lib/cni/results (a DEL that never ran).
 * The dev servers of scripts/infra.sh listen on 127.0.0.1 only; pods reach them through TCP
 * forwarders 10.244.0.1:<port> → 127.0.0.1:<port> in this process.
 * One node per network namespace (`lockNode`): the bridge and the nftables tables live there.
 */
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net'
import { join } from 'node:path'
import { type Cluster, freePort, type Run, run, type Tools, waitUntil } from './cluster'

export type NodeTools = {
  cluster: Tools
  kubelet: string
  scheduler: string
  proxy: string
  coredns: string
  containerd: string
  ctr: string
  cniBin: string
  nft: string
  ip: string
  psql: string
  pauseImage: string
  curlImage: string
  imageTag: string
  /** docker-archives of the five service images, pause and curl */
  archives: string[]
}

export const NODE_NAME = 'parley-node'
export const BRIDGE = 'parley-k8s0'
export const NODE_IP = '10.244.0.1'
const POD_CIDR = '10.244.0.0/24'
const CNI_NETWORK = 'parley-test'
/** The kubelet's cgroupRoot is <prefix><run id> in every hierarchy, never the host's /kubepods. */
const CGROUP_PREFIX = 'parley-k8s-node-'
export const STATE = '/tmp/parley-k8s-node'
/** The last run's logs (outside STATE, which teardown removes). */
export const LOGS = '/tmp/parley-k8s-node.logs'
/** The dev servers of scripts/infra.sh the pods reach through the forwarders. */
export const HOST_PORTS = {
  postgres: 5432,
  redis: 6379,
  rabbitmq: 5672,
  mongodb: 27017,
  smtp: 1025,
  s3: 7070,
}

export type Node = {
  ip: string
  logs: string
  stop: () => Promise<void>
}

/** Installs or reuses everything (cold: the Kubernetes and CoreDNS builds, the images). */
export async function nodeTools(): Promise<NodeTools & { seconds: number }> {
  console.error('[k8s-node] scripts/k8s-node.sh tools')
  const out = await run(['bash', 'scripts/k8s-node.sh', 'tools'], 60 * 60_000, undefined, true)
  if (out.code !== 0)
    throw new Error(`scripts/k8s-node.sh tools failed (${out.code}):\n${out.stderr.slice(-4000)}`)
  const line = out.stdout.trim().split('\n').at(-1) ?? ''
  return { ...(JSON.parse(line) as NodeTools), seconds: out.seconds }
}

async function must(cmd: string[], timeoutMs = 60_000): Promise<Run> {
  const r = await run(cmd, timeoutMs)
  if (r.code !== 0) throw new Error(`${cmd.join(' ')} failed (${r.code}): ${r.stderr.slice(-2000)}`)
  return r
}

/**
 * One node per network namespace: an abstract unix socket (gone with its process, however it
 * ends) held while the node is up.
 */
export async function lockNode(timeoutMs = 15 * 60_000): Promise<() => void> {
  const deadline = Date.now() + timeoutMs
  for (let waited = false; ; waited = true) {
    try {
      const socket = Bun.listen({ unix: '\0parley-k8s-node.lock', socket: { data() {} } })
      return () => socket.stop(true)
    } catch {
      if (Date.now() > deadline) throw new Error(`another node still runs after ${timeoutMs} ms`)
      if (!waited) console.error('[k8s-node] another node runs here: waiting for it')
      await Bun.sleep(1000)
    }
  }
}

/** PIDs of the processes naming STATE on their command line (ours, by construction). */
function statePids(): number[] {
  const pids: number[] = []
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry)
    if (!Number.isInteger(pid) || pid === process.pid) continue
    try {
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
      if (args.some((arg) => arg === STATE || arg.includes(`${STATE}/`))) pids.push(pid)
    } catch {
      // gone meanwhile
    }
  }
  return pids
}

async function killPids(pids: number[]) {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGTERM')
    } catch {}
  }
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline && pids.some((p) => existsSync(`/proc/${p}`))) await Bun.sleep(100)
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {}
  }
}

/** Mount points under STATE, deepest first. */
function stateMounts(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .filter((point) => point === STATE || point.startsWith(`${STATE}/`))
    .sort((a, b) => b.length - a.length)
}

/** cgroup v1 hierarchies (one per controller), or the one v2 hierarchy. */
export function cgroupHierarchies(): string[] {
  const base = '/sys/fs/cgroup'
  if (existsSync(join(base, 'cgroup.procs'))) return [base]
  return readdirSync(base, { withFileTypes: true })
    .filter((e) => e.isDirectory() && existsSync(join(base, e.name, 'cgroup.procs')))
    .map((e) => join(base, e.name))
}

/** Removes the empty cgroup trees of node runs (a busy one, of a run still going in another mount namespace, stays). */
function removeCgroups() {
  const removeTree = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true }))
      if (entry.isDirectory()) removeTree(join(dir, entry.name))
    // a cgroup is removed by rmdir alone (its control files go with it)
    Bun.spawnSync(['rmdir', dir], { stderr: 'ignore' })
  }
  for (const hierarchy of cgroupHierarchies())
    for (const entry of readdirSync(hierarchy))
      if (entry.startsWith(CGROUP_PREFIX)) removeTree(join(hierarchy, entry))
}

function removeFixedPaths() {
  const list = (dir: string) => (existsSync(dir) ? readdirSync(dir) : [])
  for (const link of list('/var/log/containers')) {
    const path = join('/var/log/containers', link)
    try {
      if (readlinkSync(path).startsWith(`${STATE}/`)) rmSync(path)
    } catch {}
  }
  // libcni's cache: <network>-<sandbox id>-<interface>, ours the bridge network and containerd's
  // cni-loopback of our sandboxes (their ids: the task folders under STATE)
  const sandboxes = list(join(STATE, 'containerd/state/io.containerd.runtime.v2.task/k8s.io'))
  for (const file of list('/var/lib/cni/results'))
    if (file.startsWith(`${CNI_NETWORK}-`) || sandboxes.some((id) => file.includes(`-${id}-`)))
      rmSync(join('/var/lib/cni/results', file), { force: true })
  rmSync('/var/lib/kubelet/device-plugins/kubelet.sock', { force: true })
  // the folders too, when nothing else is in them
  for (const dir of ['/var/lib/kubelet/device-plugins', '/var/lib/kubelet'])
    if (existsSync(dir) && readdirSync(dir).length === 0) rmSync(dir, { recursive: true })
}

/** Removes every piece of host state a node leaves (also after a killed run). */
export async function cleanHost(tools: NodeTools) {
  await killPids(statePids())
  for (const point of stateMounts()) Bun.spawnSync(['umount', '-l', point])
  for (const family of ['ip', 'ip6'])
    Bun.spawnSync([tools.nft, 'delete', 'table', family, 'kube-proxy'], { stderr: 'ignore' })
  Bun.spawnSync([tools.ip, 'link', 'delete', BRIDGE], { stderr: 'ignore' })
  removeCgroups()
  removeFixedPaths()
  rmSync(STATE, { recursive: true, force: true })
}

function containerdConfig() {
  return `version = 2
root = "${STATE}/containerd/root"
state = "${STATE}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "${STATE}/containerd.sock"
[ttrpc]
  address = "${STATE}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "${STATE}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/parley-pause:3.10"
  # the sandbox lacks CAP_SYS_RESOURCE: without this runc fails with "can't get final child's PID from pipe"
  restrict_oom_score_adj = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${STATE}/cni"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
`
}

function kubeletConfig(healthzPort: number, cgroupRoot: string) {
  return JSON.stringify({
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    // this host has cgroup v1 and no systemd
    failCgroupV1: false,
    cgroupDriver: 'cgroupfs',
    cgroupRoot,
    containerRuntimeEndpoint: `unix://${STATE}/containerd.sock`,
    // The API server (no client certificate) reads logs through this port; it listens on the
    // host-only bridge only.
    authentication: { anonymous: { enabled: true }, webhook: { enabled: false } },
    authorization: { mode: 'AlwaysAllow' },
    address: NODE_IP,
    port: 10250,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    healthzPort,
    clusterDNS: [NODE_IP],
    clusterDomain: 'cluster.local',
    // no host search domains or resolvers in the pods: CoreDNS only
    resolvConf: '',
    podLogsDir: `${STATE}/pod-logs`,
    failSwapOn: false,
    // a shared disk and memory: never evict or collect images of the test
    evictionHard: { 'memory.available': '1Mi', 'nodefs.available': '1%', 'imagefs.available': '1%' },
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    serializeImagePulls: false,
    syncFrequency: '10s',
    fileCheckFrequency: '10s',
  })
}

function proxyConfig(kubeconfig: string, healthzPort: number, metricsPort: number) {
  return JSON.stringify({
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    mode: 'nftables',
    clientConnection: { kubeconfig },
    hostnameOverride: NODE_NAME,
    clusterCIDR: POD_CIDR,
    healthzBindAddress: `127.0.0.1:${healthzPort}`,
    metricsBindAddress: `127.0.0.1:${metricsPort}`,
    nodePortAddresses: [`${NODE_IP}/32`],
    // replies of a pod reached through a ClusterIP from a pod on the same bridge come back through the host
    nftables: { masqueradeAll: true, syncPeriod: '5s', minSyncPeriod: '0s' },
    // leave the host's conntrack sysctls alone (read-only in a sandbox)
    conntrack: { maxPerCore: 0, min: 0 },
  })
}

/** TCP forwarders NODE_IP:<port> → 127.0.0.1:<port>. */
function forwarders(ports: number[]): Promise<{ close: () => void }> {
  const servers: Server[] = []
  const sockets = new Set<Socket>()
  const track = (s: Socket) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
    s.on('error', () => s.destroy())
  }
  const close = () => {
    for (const server of servers) server.close()
    for (const s of sockets) s.destroy()
  }
  return Promise.all(
    ports.map(
      (port) =>
        new Promise<void>((resolve, reject) => {
          const server = createServer((client) => {
            track(client)
            const upstream = tcpConnect(port, '127.0.0.1')
            track(upstream)
            client.pipe(upstream)
            upstream.pipe(client)
            client.on('close', () => upstream.destroy())
            upstream.on('close', () => client.destroy())
          })
          servers.push(server)
          server.once('error', reject)
          server.listen(port, NODE_IP, () => resolve())
        }),
    ),
  ).then(
    () => ({ close }),
    (error) => {
      close()
      throw error
    },
  )
}

/** Brings up the node (Ready, images imported, Services routed, DNS answering). */
export async function startNode(cluster: Cluster, tools: NodeTools): Promise<Node> {
  const unlock = await lockNode()
  await cleanHost(tools)
  const logs = LOGS
  rmSync(logs, { recursive: true, force: true })
  mkdirSync(logs, { recursive: true })
  const log = (name: string) => join(logs, `${name}.log`)
  const procs: { name: string; proc: Bun.Subprocess }[] = []
  const spawn = (name: string, cmd: string[]) => {
    const proc = Bun.spawn(cmd, { stdin: 'ignore', stdout: Bun.file(log(name)), stderr: Bun.file(log(name)) })
    procs.push({ name, proc })
    return proc
  }
  let forwarding: { close: () => void } | undefined
  const ctr = (...args: string[]) =>
    must([tools.ctr, '--address', `${STATE}/containerd.sock`, '--namespace', 'k8s.io', ...args], 300_000)

  let stopped = false
  const stop = async () => {
    if (stopped) return
    stopped = true
    forwarding?.close()
    // kubelet, kube-proxy, the scheduler and CoreDNS before containerd; then what is left
    for (const { name, proc } of [...procs].reverse()) {
      if (name === 'containerd') {
        // pods the caller did not delete: their tasks die with SIGKILL
        const tasks = await run(
          [tools.ctr, '--address', `${STATE}/containerd.sock`, '-n', 'k8s.io', 'tasks', 'ls', '-q'],
          10_000,
        )
        for (const id of tasks.stdout.split('\n').filter(Boolean))
          await run(
            [
              tools.ctr,
              '--address',
              `${STATE}/containerd.sock`,
              '-n',
              'k8s.io',
              'tasks',
              'kill',
              '-s',
              'SIGKILL',
              id,
            ],
            10_000,
          )
      }
      proc.kill('SIGTERM')
      const exited = await Promise.race([proc.exited.then(() => true), Bun.sleep(10_000).then(() => false)])
      if (!exited) proc.kill('SIGKILL')
    }
    await cleanHost(tools)
    unlock()
  }

  try {
    for (const dir of ['cni', 'kubelet', 'ipam']) mkdirSync(join(STATE, dir), { recursive: true })
    await must([tools.ip, 'link', 'add', BRIDGE, 'type', 'bridge'])
    await must([tools.ip, 'addr', 'add', `${NODE_IP}/24`, 'dev', BRIDGE])
    await must([tools.ip, 'link', 'set', BRIDGE, 'up'])

    writeFileSync(join(STATE, 'containerd.toml'), containerdConfig())
    writeFileSync(
      join(STATE, 'cni', '10-parley.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: CNI_NETWORK,
        plugins: [
          {
            type: 'bridge',
            bridge: BRIDGE,
            isGateway: true,
            // pods need no way out: the servers they use are behind the forwarders on the bridge
            ipMasq: false,
            hairpinMode: true,
            ipam: {
              type: 'host-local',
              ranges: [[{ subnet: POD_CIDR, rangeStart: '10.244.0.10', gateway: NODE_IP }]],
              // Service IPs are reached through the host (kube-proxy)
              routes: [{ dst: '0.0.0.0/0' }],
              dataDir: join(STATE, 'ipam'),
            },
          },
          { type: 'loopback' },
        ],
      }),
    )
    const containerd = spawn('containerd', [tools.containerd, '--config', join(STATE, 'containerd.toml')])
    await waitUntil(
      'containerd',
      async () =>
        containerd.exitCode === null &&
        (await run([tools.ctr, '--address', `${STATE}/containerd.sock`, 'version'], 5_000)).code === 0,
      30_000,
      [log('containerd')],
    )
    for (const archive of tools.archives) await ctr('images', 'import', archive)

    const kubeletHealth = freePort()
    // the kubelet wants its cgroup root to exist in every hierarchy
    const cgroupRoot = `/${CGROUP_PREFIX}${crypto.randomUUID().slice(0, 8)}`
    for (const hierarchy of cgroupHierarchies()) mkdirSync(join(hierarchy, cgroupRoot))
    writeFileSync(join(STATE, 'kubelet.json'), kubeletConfig(kubeletHealth, cgroupRoot))
    const kubelet = spawn('kubelet', [
      tools.kubelet,
      `--config=${join(STATE, 'kubelet.json')}`,
      `--kubeconfig=${cluster.kubeconfig}`,
      `--hostname-override=${NODE_NAME}`,
      `--node-ip=${NODE_IP}`,
      `--root-dir=${join(STATE, 'kubelet')}`,
      `--cert-dir=${join(STATE, 'kubelet', 'pki')}`,
      '--v=1',
    ])
    const scheduler = spawn('kube-scheduler', [
      tools.scheduler,
      `--kubeconfig=${cluster.kubeconfig}`,
      '--leader-elect=false',
      '--secure-port=0',
    ])
    const [proxyHealth, proxyMetrics] = [freePort(), freePort()]
    writeFileSync(join(STATE, 'kube-proxy.json'), proxyConfig(cluster.kubeconfig, proxyHealth, proxyMetrics))
    const proxy = spawn('kube-proxy', [tools.proxy, `--config=${join(STATE, 'kube-proxy.json')}`])
    const dnsReady = freePort()
    writeFileSync(
      join(STATE, 'Corefile'),
      `cluster.local:53 {
  bind ${NODE_IP}
  ready 127.0.0.1:${dnsReady}
  errors
  cache 5
  kubernetes cluster.local {
    kubeconfig ${cluster.kubeconfig} parley-test
  }
}
`,
    )
    const coredns = spawn('coredns', [tools.coredns, '-conf', join(STATE, 'Corefile')])
    forwarding = await forwarders(Object.values(HOST_PORTS))

    await waitUntil(
      `node ${NODE_NAME} Ready`,
      async () => {
        if (kubelet.exitCode !== null) throw new Error('kubelet exited')
        const node = await cluster.api('GET', `/api/v1/nodes/${NODE_NAME}`)
        const conditions =
          (node.body.status as { conditions?: { type: string; status: string }[] })?.conditions ?? []
        return conditions.some((c) => c.type === 'Ready' && c.status === 'True')
      },
      120_000,
      [log('kubelet'), log('containerd')],
    )
    await waitUntil(
      'kube-proxy /healthz',
      async () => proxy.exitCode === null && (await fetch(`http://127.0.0.1:${proxyHealth}/healthz`)).ok,
      60_000,
      [log('kube-proxy')],
    )
    await waitUntil(
      'CoreDNS /ready',
      async () => coredns.exitCode === null && (await fetch(`http://127.0.0.1:${dnsReady}/ready`)).ok,
      60_000,
      [log('coredns')],
    )
    if (scheduler.exitCode !== null)
      throw new Error(`kube-scheduler exited:\n${readFileSync(log('kube-scheduler'), 'utf8').slice(-3000)}`)
    return { ip: NODE_IP, logs, stop }
  } catch (error) {
    await stop()
    throw error
  }
}
