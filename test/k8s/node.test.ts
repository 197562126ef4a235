/**
 * charts/parley running for real: test/k8s/cluster.ts's control plane plus test/k8s/node.ts's
 * node (containerd, kubelet, kube-scheduler, kube-proxy, CoreDNS), the five local images, the dev
 * servers of scripts/infra.sh reached from the pods through the node's forwarders
 * (test/k8s/node-release.ts). `bash scripts/k8s-node.sh run` does the same and prints the evidence.
 * Cold, scripts/k8s-node.sh builds kubelet, kube-scheduler, kube-proxy and CoreDNS (~10 min on 2
 * cores); warm, the file takes about 2 minutes.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { type Cluster, startCluster } from './cluster'
import { BRIDGE, cgroupHierarchies, type Node, type NodeTools, nodeTools, STATE, startNode } from './node'
import { type Evidence, exerciseRelease, problemsOf } from './node-release'

let tools: NodeTools | undefined
let cluster: Cluster | undefined
let node: Node | undefined
let evidence: Evidence | undefined

describe('charts/parley on a real node', () => {
  beforeAll(async () => {
    tools = await nodeTools()
    cluster = await startCluster(tools.cluster)
    node = await startNode(cluster, tools)
    evidence = await exerciseRelease(cluster, tools)
  }, 50 * 60_000)

  afterAll(async () => {
    await node?.stop()
    await cluster?.stop()
  }, 120_000)

  const got = (): Evidence => {
    if (!evidence) throw new Error('the release did not run')
    return evidence
  }

  test('helm install --wait succeeds: the migration Jobs complete and every Deployment is available', () => {
    const e = got()
    expect(e.install.code).toBe(0)
    expect(e.install.stdout).toContain('STATUS: deployed')
    // three PostgreSQL services, each database with its migrated tables
    expect(Object.keys(e.tables)).toHaveLength(3)
    for (const n of Object.values(e.tables)) expect(n).toBeGreaterThan(0)
  })

  test('one pod per service runs on the node and is Ready, without restarts', () => {
    const e = got()
    const services = e.pods.map((p) => p.name.replace(/-[a-z0-9]+-[a-z0-9]+$/, '')).sort()
    expect(services).toEqual([
      'parley-auth',
      'parley-chat',
      'parley-gateway',
      'parley-notification',
      'parley-user',
    ])
    for (const p of e.pods) {
      expect(p).toMatchObject({ phase: 'Running', ready: true, node: 'parley-node', restarts: 0 })
      expect(p.ip).toMatch(/^10\.244\.0\.\d+$/)
    }
  })

  test('helm test passes: every service answers /health through its Service name (CoreDNS + kube-proxy)', () => {
    const e = got()
    expect(e.test.code).toBe(0)
    expect(e.test.stdout).toMatch(/Phase:\s+Succeeded/)
    for (const name of ['auth', 'chat', 'gateway', 'notification', 'user'])
      expect(e.testLog).toContain(`{"status":"ok","service":"${name}"} <- ${name}`)
  })

  test('through the gateway Service: a user registers, then reads its own profile', () => {
    const e = got()
    expect(e.register.status).toBe(201)
    expect(e.profile.status).toBe(200)
    const user = e.register.body.user as { id: string; email: string }
    expect(e.profile.body).toMatchObject({ id: user.id, email: user.email, displayName: 'Node Test' })
    expect(problemsOf(e)).toEqual([])
  })

  test('stopping the node leaves no host state: bridge, nftables tables, mounts, cgroups, processes, files', async () => {
    if (!node || !tools) throw new Error('no node')
    await node.stop()
    node = undefined
    const t = tools
    expect(Bun.spawnSync([t.ip, 'link', 'show', BRIDGE], { stderr: 'ignore' }).exitCode).not.toBe(0)
    const tables = Bun.spawnSync([t.nft, 'list', 'tables']).stdout.toString()
    expect(tables).not.toContain('kube-proxy')
    expect(existsSync(STATE)).toBe(false)
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(STATE)
    const cgroups = cgroupHierarchies().flatMap((h) =>
      readdirSync(h).filter((d) => d.startsWith('parley-k8s-node-')),
    )
    expect(cgroups).toEqual([])
    const ours = readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`${STATE}/`)
        } catch {
          return false
        }
      })
    expect(ours).toEqual([])
    for (const dir of ['/var/log/containers', '/var/lib/cni/results'])
      if (existsSync(dir)) expect(readdirSync(dir).filter((f) => f.includes('parley-'))).toEqual([])
  }, 120_000)
})
