/**
 * `bash scripts/k8s-node.sh run`: control plane (test/k8s/cluster.ts) + node (test/k8s/node.ts),
 * the chart installed, tested and used for real (test/k8s/node-release.ts), everything torn
 * down; prints the evidence and the time of each phase. `--clean` only removes what a killed run
 * left on the host. Exit code 0 only when every pod was Ready, `helm test` passed and the
 * gateway registered a user and served its profile.
 */
import { type Cluster, startCluster } from './cluster'
import { cleanHost, LOGS, lockNode, type Node, nodeTools, startNode } from './node'
import { type Evidence, exerciseRelease, problemsOf } from './node-release'

const started = performance.now()
const since = () => Math.round((performance.now() - started) / 100) / 10
const tools = await nodeTools()
console.error(`[k8s-node] tools ready in ${Math.round(tools.seconds)} s`)
if (process.argv.includes('--clean')) {
  const unlock = await lockNode()
  await cleanHost(tools)
  unlock()
  console.error('[k8s-node] host clean')
  process.exit(0)
}

let cluster: Cluster | undefined
let node: Node | undefined
let evidence: Evidence | undefined
const times: Record<string, number> = { tools: Math.round(tools.seconds * 10) / 10 }
let failure: unknown
try {
  let mark = since()
  cluster = await startCluster(tools.cluster)
  times.controlPlane = Math.round((since() - mark) * 10) / 10
  mark = since()
  node = await startNode(cluster, tools)
  times.node = Math.round((since() - mark) * 10) / 10
  evidence = await exerciseRelease(cluster, tools)
} catch (error) {
  failure = error
} finally {
  const stopping = performance.now()
  await node?.stop()
  await cluster?.stop()
  times.stop = Math.round((performance.now() - stopping) / 100) / 10
  times.total = since()
}

if (evidence) {
  console.log(`pods (namespace ${evidence.namespace}):`)
  for (const p of evidence.pods)
    console.log(`  ${p.name}  ${p.phase}  ready=${p.ready}  restarts=${p.restarts}  ${p.ip}  ${p.node}`)
  console.log(`tables after the migration Jobs: ${JSON.stringify(evidence.tables)}`)
  console.log(
    `helm install (exit ${evidence.install.code}):\n${evidence.install.stdout.slice(0, evidence.install.stdout.indexOf('NOTES:')).trim()}`,
  )
  const suite = evidence.test.stdout.slice(
    evidence.test.stdout.indexOf('TEST SUITE'),
    evidence.test.stdout.indexOf('NOTES:'),
  )
  console.log(`helm test (exit ${evidence.test.code}):\n${suite.trim()}\n${evidence.test.stderr.trim()}`)
  console.log(`helm test pod log:\n${evidence.testLog.trim()}`)
  console.log(
    `POST ${evidence.gateway}/api/v1/auth/register -> ${evidence.register.status} ${JSON.stringify(evidence.register.body)}`,
  )
  console.log(
    `GET ${evidence.gateway}/api/v1/users/me -> ${evidence.profile.status} ${JSON.stringify(evidence.profile.body)}`,
  )
  console.log(`release phases (s): ${JSON.stringify(evidence.seconds)}`)
}
console.log(`run phases (s): ${JSON.stringify(times)}  (component logs: ${LOGS})`)
const problems = failure
  ? [String(failure instanceof Error ? (failure.stack ?? failure.message) : failure)]
  : evidence
    ? problemsOf(evidence)
    : ['no evidence']
if (problems.length > 0) {
  console.error(`[k8s-node] FAILED:\n${problems.join('\n')}`)
  process.exit(1)
}
console.error('[k8s-node] passed')
process.exit(0)
