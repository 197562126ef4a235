import { expect, test } from 'bun:test'
import { cp, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { ROSTER, type ServiceEntry } from '@parley/contracts'
import { checkDeployFiles, checkRoster, RULES, writeDeployFiles } from '../scripts/roster'

const root = join(import.meta.dir, '..')

/** A service the roster does not have yet, on the next free ports. */
const sixthPort = Math.max(...ROSTER.map((service) => service.port)) + 1
const sixthOpsPort = Math.max(...ROSTER.map((service) => service.opsPort)) + 1
const sixth: ServiceEntry = {
  name: 'extra',
  summary: 'a service added by the test',
  port: sixthPort,
  opsPort: sixthOpsPort,
  prefix: '/extra',
  store: { kind: 'postgres', database: 'parley_extra' },
  upstreamTimeoutMs: 10_000,
  publicRoutes: [],
}

/** A copy of the files the rules read, to change without touching the repository. */
async function copyOfDeployFiles(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'parley-roster-'))
  const manifests = await Array.fromAsync(new Bun.Glob('packages/*/package.json').scan({ cwd: root }))
  for (const file of [...RULES.map((rule) => rule.file), ...manifests]) {
    await Bun.write(join(dir, dirname(file), '.keep'), '')
    await cp(join(root, file), join(dir, file))
  }
  return dir
}

test('every deploy file agrees with the roster', async () => {
  expect(await checkDeployFiles(ROSTER, root)).toEqual([])
})

test('the roster refuses duplicate names and ports, odd database names and a missing gateway', () => {
  expect(checkRoster(ROSTER)).toEqual([])
  const auth = ROSTER.find((service) => service.name === 'auth') as ServiceEntry
  expect(checkRoster([...ROSTER, { ...sixth, port: auth.port }])).toEqual([
    `extra: port ${auth.port} taken by another service`,
  ])
  // Ops ports are distinct from each other and from every service port (one host in development).
  expect(checkRoster([...ROSTER, { ...sixth, opsPort: auth.opsPort }])).toEqual([
    `extra: ops port ${auth.opsPort} taken by another port`,
  ])
  expect(checkRoster([...ROSTER, { ...sixth, opsPort: auth.port }])).toEqual([
    `extra: ops port ${auth.port} taken by another port`,
  ])
  expect(checkRoster([...ROSTER, { ...sixth, store: { kind: 'postgres', database: 'extra' } }])).toEqual([
    'extra: its database must be called parley_extra',
  ])
  expect(checkRoster(ROSTER.filter((service) => service.name !== 'gateway'))).toContain(
    'the gateway is missing',
  )
})

test('a sixth service in the roster: each file lacking it is named, and --write adds it', async () => {
  const dir = await copyOfDeployFiles()
  try {
    const roster = [...ROSTER, sixth]
    const before = await checkDeployFiles(roster, dir)
    const named = new Set(before.map((problem) => problem.slice(0, problem.indexOf(':'))))
    // Every file that enumerates services names the missing one (override files need not list it).
    for (const { file } of RULES.filter(
      (rule) => !rule.file.startsWith('charts/parley/ci/') && rule.file !== 'k8s/dev/values.yaml',
    ))
      expect({ file, named: named.has(file) }).toEqual({ file, named: true })

    expect((await writeDeployFiles(roster, dir)).sort()).toEqual(
      RULES.filter((rule) => rule.write)
        .map((rule) => rule.file)
        .sort(),
    )
    // Only what is written by hand is left: the README's table row.
    expect(await checkDeployFiles(roster, dir)).toEqual([
      expect.stringContaining('README.md: the services table') as unknown as string,
    ])
    const values = Bun.YAML.parse(await Bun.file(join(dir, 'charts/parley/values.yaml')).text()) as {
      services: Record<string, { port: number; opsPort: number; migrate: boolean }>
      infra: { postgresql: { databases: string[] } }
    }
    expect(values.services.extra).toMatchObject({ port: sixthPort, opsPort: sixthOpsPort, migrate: true })
    // Prometheus scrapes its ops port, like every other service's.
    expect(await Bun.file(join(dir, 'deploy/prometheus/prometheus.yml')).text()).toContain(
      `- extra:${sixthOpsPort}\n`,
    )
    expect(values.infra.postgresql.databases).toContain('parley_extra')
    expect(await Bun.file(join(dir, 'deploy/postgres/init-databases.sql')).text()).toContain(
      'CREATE DATABASE parley_extra;',
    )
    // The generated files agree with the roster of five again once the sixth is gone.
    expect(await writeDeployFiles(ROSTER, join(dir))).not.toContain('README.md')
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
