// Keeps every deployment file in step with the roster of services (packages/contracts/src/roster.ts).
//
//   bun scripts/roster.ts           check: list each file that disagrees with the roster (exit 1)
//   bun scripts/roster.ts --write   generate what can be generated (new service blocks, lists of
//                                   services, databases, scrape targets on the ops ports), then
//                                   check again
//
// test/roster.test.ts runs the check, and proves with a roster holding a sixth service that every
// file is named when it lacks that service and that --write makes them agree.
import { ROSTER, type ServiceEntry } from '@parley/contracts'

export type Roster = readonly ServiceEntry[]

/** A file that enumerates services: what disagrees with the roster, and how to bring it in step. */
type Rule = {
  file: string
  check: (text: string, roster: Roster, packages: readonly string[]) => string[]
  /** The file brought in step (only the parts that can be generated). */
  write?: (text: string, roster: Roster, packages: readonly string[]) => string
}

type Yaml = Record<string, unknown>

const parseYaml = (text: string): Yaml => (Bun.YAML.parse(text) as Yaml | null) ?? {}
const isRecord = (value: unknown): value is Yaml =>
  typeof value === 'object' && value !== null && !Array.isArray(value)
const names = (roster: Roster) => roster.map((service) => service.name)
const postgresDatabases = (roster: Roster) =>
  roster.flatMap((service) => (service.store?.kind === 'postgres' ? [service.store.database] : []))
/** The PromQL regex selecting Parley's series: `service=~"<this>"`. */
const serviceRegex = (roster: Roster) => names(roster).join('|')

function sameList(what: string, actual: readonly string[], expected: readonly string[]): string[] {
  return actual.join(',') === expected.join(',')
    ? []
    : [`${what} is [${actual.join(', ')}], the roster says [${expected.join(', ')}]`]
}

// ------------------------------------------------------------------------------- the roster itself

/** The roster's own invariants, which the deploy files rely on. */
export function checkRoster(roster: Roster): string[] {
  const problems: string[] = []
  const seen = new Set<string>()
  const ports = new Set<number>()
  for (const service of roster) {
    if (!/^[a-z][a-z0-9]*$/.test(service.name))
      problems.push(`${service.name}: a name is lowercase letters and digits`)
    if (seen.has(service.name)) problems.push(`${service.name}: listed twice`)
    if (ports.has(service.port))
      problems.push(`${service.name}: port ${service.port} taken by another service`)
    seen.add(service.name)
    ports.add(service.port)
    // Every port distinct across services: `bun run dev` runs them all on one host.
    if (ports.has(service.opsPort))
      problems.push(`${service.name}: ops port ${service.opsPort} taken by another port`)
    ports.add(service.opsPort)
    // The chart's dev infra names each service's database parley_<name>.
    if (service.store && service.store.database !== `parley_${service.name}`)
      problems.push(`${service.name}: its database must be called parley_${service.name}`)
    if ((service.prefix === null) !== (service.name === 'gateway'))
      problems.push(`${service.name}: every service but the gateway has a path prefix`)
  }
  if (!seen.has('gateway')) problems.push('the gateway is missing')
  return problems
}

// ------------------------------------------------------------------------------------ the rules

const INIT_SQL = 'deploy/postgres/init-databases.sql'
function renderInitSql(roster: Roster): string {
  return [
    '-- Generated from the roster by `bun scripts/roster.ts --write`.',
    '-- Run once by the postgres image on an empty data directory (docker compose): one database',
    "-- per PostgreSQL service. The chart's dev infra creates the same list (infra.postgresql.databases).",
    ...postgresDatabases(roster).map((database) => `CREATE DATABASE ${database};`),
    '',
  ].join('\n')
}

const PROMETHEUS = 'deploy/prometheus/prometheus.yml'
function prometheusTargets(text: string): string[] {
  const jobs = (parseYaml(text).scrape_configs ?? []) as {
    job_name?: string
    static_configs?: { targets?: string[] }[]
  }[]
  return (
    jobs
      .find((job) => job.job_name === 'parley')
      ?.static_configs?.flatMap((config) => config.targets ?? []) ?? []
  )
}
/** Prometheus scrapes the ops ports (the service ports have no /metrics). */
const scrapeTargets = (roster: Roster) => roster.map((service) => `${service.name}:${service.opsPort}`)
function writePrometheusTargets(text: string, roster: Roster): string {
  return text.replace(
    /( {6}- targets:\n)(?: {10}- .*\n)+/,
    (_, head: string) =>
      head +
      scrapeTargets(roster)
        .map((target) => `          - ${target}\n`)
        .join(''),
  )
}

const VALUES = 'charts/parley/values.yaml'
function checkValues(text: string, roster: Roster): string[] {
  const values = parseYaml(text)
  const services = isRecord(values.services) ? values.services : {}
  const problems = sameList('services', Object.keys(services).sort(), [...names(roster)].sort())
  for (const service of roster) {
    const block = services[service.name]
    if (!isRecord(block)) continue
    const image = isRecord(block.image) ? block.image : {}
    if (block.port !== service.port)
      problems.push(`services.${service.name}.port is ${block.port}, the roster says ${service.port}`)
    if (block.opsPort !== service.opsPort)
      problems.push(
        `services.${service.name}.opsPort is ${block.opsPort}, the roster says ${service.opsPort}`,
      )
    if (image.repository !== `parley-${service.name}`)
      problems.push(
        `services.${service.name}.image.repository is ${image.repository}, expected parley-${service.name}`,
      )
    if (block.migrate !== (service.store !== null))
      problems.push(
        `services.${service.name}.migrate must be ${service.store !== null} (${service.store ? 'it has a store' : 'no store'})`,
      )
  }
  const infra = isRecord(values.infra) ? values.infra : {}
  const postgresql = isRecord(infra.postgresql) ? infra.postgresql : {}
  problems.push(
    ...sameList(
      'infra.postgresql.databases',
      (postgresql.databases as string[] | undefined) ?? [],
      postgresDatabases(roster),
    ),
  )
  return problems
}
/** A new service's block: the defaults every service starts from (tune it afterwards). */
function serviceBlock(service: ServiceEntry): string {
  const secretEnv =
    service.store?.kind === 'postgres'
      ? '\n    secretEnv:\n      DATABASE_URL: ""'
      : service.store?.kind === 'mongodb'
        ? '\n    secretEnv:\n      MONGO_URL: ""'
        : '\n    secretEnv: {}'
  return `
  ${service.name}:
    enabled: true
    replicas: 2
    port: ${service.port}
    opsPort: ${service.opsPort}
    image:
      repository: parley-${service.name}
      tag: ""
      digest: ""
      pullPolicy: ""
    env: {}${secretEnv}
    existingSecret: ""
    resources: {}
    autoscaling:
      enabled: false
      minReplicas: 2
      maxReplicas: 6
      targetCPUUtilizationPercentage: 70
    pdb:
      enabled: true
      minAvailable: 1
    migrate: ${service.store !== null}
`
}
function writeValues(text: string, roster: Roster): string {
  const existing = isRecord(parseYaml(text).services) ? Object.keys(parseYaml(text).services as Yaml) : []
  const missing = roster.filter((service) => !existing.includes(service.name))
  let out = text
  if (missing.length > 0) {
    // New blocks go at the end of `services:`, just before the next top-level key.
    const start = out.indexOf('\nservices:\n')
    const next = out.slice(start + 1).search(/\n[a-zA-Z]/)
    const end = next < 0 ? out.length : start + 1 + next + 1
    const body = out.slice(0, end).replace(/\n+$/, '\n')
    out = `${body}${missing.map(serviceBlock).join('')}\n${out.slice(end)}`
  }
  return out.replace(/^( {4}databases: )\[.*\]$/m, `$1[${postgresDatabases(roster).join(', ')}]`)
}

const VALUES_SCHEMA = 'charts/parley/values.schema.json'
type SchemaServices = { properties?: { services?: { properties?: Record<string, unknown> } } }
function writeValuesSchema(text: string, roster: Roster): string {
  const schema = JSON.parse(text) as SchemaServices
  const services = schema.properties?.services
  if (!services) return text
  services.properties = Object.fromEntries(
    roster.map((service) => [service.name, { $ref: '#/definitions/service' }]),
  )
  return `${JSON.stringify(schema, null, 2)}\n`
}

/** Files whose PromQL selects Parley's series by `service=~"..."` (and the dashboards' "All" value). */
const PROMQL_FILES = [
  'charts/parley/rules/parley.rules.yaml',
  'charts/parley/dashboards/parley-events.json',
  'charts/parley/dashboards/parley-overview.json',
]
const SELECTOR = /(service=~\\?")([a-z|]+)(\\?")/g
const ALL_VALUE = /("allValue": ")([a-z|]+)(")/g
function checkSelectors(text: string, roster: Roster): string[] {
  const found = [...text.matchAll(SELECTOR), ...text.matchAll(ALL_VALUE)].map((match) => match[2] ?? '')
  const wrong = [...new Set(found.filter((regex) => regex !== serviceRegex(roster)))]
  return wrong.map((regex) => `selects service=~"${regex}", the roster gives "${serviceRegex(roster)}"`)
}
function writeSelectors(text: string, roster: Roster): string {
  const regex = serviceRegex(roster)
  return text.replace(SELECTOR, `$1${regex}$3`).replace(ALL_VALUE, `$1${regex}$3`)
}

/** Value files that override services by name: only roster names may appear. */
const OVERRIDE_FILES = [
  'k8s/dev/values.yaml',
  'charts/parley/ci/full-values.yaml',
  'charts/parley/ci/minimal-values.yaml',
  'charts/parley/ci/existing-secret-values.yaml',
]
function checkOverrides(text: string, roster: Roster): string[] {
  const services = parseYaml(text).services
  if (!isRecord(services)) return []
  return Object.keys(services)
    .filter((name) => !names(roster).includes(name))
    .map((name) => `overrides services.${name}, which the roster does not have`)
}

const SKAFFOLD = 'skaffold.yaml'
/** The artifacts, the chart's image values and the dev profile's patches: one uniform block each. */
function skaffoldSections(roster: Roster) {
  return {
    artifacts: roster
      .map(
        (service) => `    - image: parley-${service.name}
      context: .
      docker:
        dockerfile: docker/service.Dockerfile
        buildArgs: { SERVICE: ${service.name}, PORT: "${service.port}" }
`,
      )
      .join(''),
    images: roster
      .map((service) => {
        const id = `parley_${service.name}`
        return `          services.${service.name}.image.repository: "{{.IMAGE_REPO_${id}}}"
          services.${service.name}.image.tag: "{{.IMAGE_TAG_${id}}}@{{.IMAGE_DIGEST_${id}}}"
`
      })
      .join(''),
    patches: roster
      .map(
        (
          service,
          index,
        ) => `      - { op: test, path: /build/artifacts/${index}/image, value: parley-${service.name} }
      - { op: add, path: /build/artifacts/${index}/docker/target, value: dev }
      - op: add
        path: /build/artifacts/${index}/sync
        value:
          manual:
            - { src: "services/${service.name}/src/**/*.ts", dest: /app }
            - { src: "packages/*/src/**/*.ts", dest: /app }
`,
      )
      .join(''),
  }
}
const SKAFFOLD_REGIONS = {
  artifacts: /(\n {2}artifacts:\n)((?: {4}- image:[^\n]*\n(?: {6,}[^\n]*\n)*)+)/,
  images: /(\n {8}setValueTemplates:\n)((?: {10}services\.[^\n]*\n)+)/,
  patches: /(\n {4}patches:\n)((?: {6}- [^\n]*\n(?: {8,}[^\n]*\n)*)+)/,
} as const
function checkSkaffold(text: string, roster: Roster): string[] {
  const expected = skaffoldSections(roster)
  return (Object.keys(SKAFFOLD_REGIONS) as (keyof typeof SKAFFOLD_REGIONS)[]).flatMap((region) => {
    const found = text.match(SKAFFOLD_REGIONS[region])?.[2]
    if (found === undefined) return [`has no ${region} section`]
    return found === expected[region]
      ? []
      : [`its ${region} are not one uniform block per service in roster order`]
  })
}
function writeSkaffold(text: string, roster: Roster): string {
  const expected = skaffoldSections(roster)
  let out = text
  for (const region of Object.keys(SKAFFOLD_REGIONS) as (keyof typeof SKAFFOLD_REGIONS)[])
    out = out.replace(SKAFFOLD_REGIONS[region], (_, head: string) => head + expected[region])
  return out
}

const COMPOSE = 'docker-compose.yml'
type ComposeService = { build?: { args?: Record<string, string> }; environment?: Record<string, string> }
function checkCompose(text: string, roster: Roster): string[] {
  const services = (parseYaml(text).services ?? {}) as Record<string, ComposeService>
  const problems: string[] = []
  const gatewayEnv = services.gateway?.environment ?? {}
  for (const service of roster) {
    const block = services[service.name]
    if (!block) {
      problems.push(`has no service ${service.name}`)
      continue
    }
    const args = block.build?.args ?? {}
    if (args.SERVICE !== service.name || String(args.PORT) !== String(service.port))
      problems.push(
        `${service.name} builds with SERVICE=${args.SERVICE} PORT=${args.PORT}, the roster says ${service.name} ${service.port}`,
      )
    if (service.store && !services[`migrate-${service.name}`]) problems.push(`has no migrate-${service.name}`)
    if (
      service.prefix !== null &&
      gatewayEnv[`${service.name.toUpperCase()}_URL`] !== `http://${service.name}:${service.port}`
    )
      problems.push(
        `the gateway's ${service.name.toUpperCase()}_URL is not http://${service.name}:${service.port}`,
      )
  }
  return problems
}
/** A new service's compose blocks, wired like the others (tune its environment afterwards). */
function composeBlocks(service: ServiceEntry): { service: string; migrate: string } {
  const storeEnv =
    service.store?.kind === 'postgres'
      ? `\n      DATABASE_URL: postgres://parley:parley@postgres:5432/${service.store.database}`
      : service.store?.kind === 'mongodb'
        ? `\n      MONGO_URL: mongodb://mongodb:27017\n      MONGO_DB: ${service.store.database}`
        : ''
  const storeHost = service.store?.kind === 'mongodb' ? 'mongodb' : 'postgres'
  return {
    service: `  ${service.name}:
    <<: *service
    build: &${service.name}-build
      context: .
      dockerfile: docker/service.Dockerfile
      args: { SERVICE: ${service.name}, PORT: "${service.port}" }
    image: parley-${service.name}:dev
    environment: &${service.name}-env
      <<: [*parley-env, *verify-env]${storeEnv}
    depends_on:
      <<: *infra-ready${service.store ? `\n      migrate-${service.name}:\n        condition: service_completed_successfully` : ''}

`,
    migrate: service.store
      ? `  migrate-${service.name}:
    <<: *migrate
    build: *${service.name}-build
    image: parley-${service.name}:dev
    environment: *${service.name}-env
    depends_on:
      ${storeHost}:
        condition: service_healthy

`
      : '',
  }
}
function writeCompose(text: string, roster: Roster): string {
  const existing = Object.keys((parseYaml(text).services ?? {}) as Yaml)
  let out = text
  for (const service of roster.filter((candidate) => !existing.includes(candidate.name))) {
    const blocks = composeBlocks(service)
    out = out.replace(/( {2}# -+ migrations\n)/, `${blocks.service}$1`)
    out = out.replace(/( {2}# -+ infrastructure\n)/, `${blocks.migrate}$1`)
    // the gateway: its URL and a health dependency
    out = out.replace(
      /(\n {6}[A-Z]+_URL: http:\/\/[a-z]+:\d+\n)(?! {6}[A-Z]+_URL: http)/,
      `$1      ${service.name.toUpperCase()}_URL: http://${service.name}:${service.port}\n`,
    )
    out = out.replace(
      /(\n {2}gateway:\n(?: {4}[^\n]*\n| *\n)*? {4}depends_on:\n(?: {6}[^\n]*\n| {8}[^\n]*\n)*)/,
      `$1      ${service.name}:\n        condition: service_healthy\n`,
    )
  }
  return out
}

const DOCKERFILE = 'docker/service.Dockerfile'
/** The workspace manifests the frozen install needs: every package, and every service of the roster. */
function manifestCopies(roster: Roster, packages: readonly string[]): string {
  return [
    ...packages.map((name) => `packages/${name}`),
    ...roster.map((service) => `services/${service.name}`),
  ]
    .sort()
    .map((dir) => `COPY ${dir}/package.json ${dir}/\n`)
    .join('')
}
const MANIFEST_COPIES = /((?:^COPY (?:packages|services)\/[a-z0-9-]+\/package\.json [^\n]*\n)+)/m

const README = 'README.md'
/** The README's table of services: one row per service with its port. */
function checkReadme(text: string, roster: Roster): string[] {
  const rows = [...text.matchAll(/^\| (\w+) \| (\d+) \|/gm)].map((match) => `${match[1]}:${match[2]}`)
  return sameList(
    'the services table (| service | port |)',
    rows.sort(),
    roster.map((service) => `${service.name}:${service.port}`).sort(),
  )
}

export const RULES: readonly Rule[] = [
  {
    file: INIT_SQL,
    check: (text, roster) => (text === renderInitSql(roster) ? [] : ['is not what the roster gives']),
    write: (_, roster) => renderInitSql(roster),
  },
  {
    file: PROMETHEUS,
    check: (text, roster) =>
      sameList('the parley scrape targets', prometheusTargets(text), scrapeTargets(roster)),
    write: writePrometheusTargets,
  },
  { file: VALUES, check: checkValues, write: writeValues },
  {
    file: VALUES_SCHEMA,
    check: (text, roster) =>
      sameList(
        'properties.services.properties',
        Object.keys((JSON.parse(text) as SchemaServices).properties?.services?.properties ?? {}),
        names(roster),
      ),
    write: writeValuesSchema,
  },
  ...PROMQL_FILES.map((file): Rule => ({ file, check: checkSelectors, write: writeSelectors })),
  { file: SKAFFOLD, check: checkSkaffold, write: writeSkaffold },
  {
    file: DOCKERFILE,
    check: (text, roster, packages) =>
      text.match(MANIFEST_COPIES)?.[1] === manifestCopies(roster, packages)
        ? []
        : ['does not COPY exactly the package.json of every package and every service of the roster'],
    write: (text, roster, packages) => text.replace(MANIFEST_COPIES, manifestCopies(roster, packages)),
  },
  { file: COMPOSE, check: checkCompose, write: writeCompose },
  ...OVERRIDE_FILES.map((file): Rule => ({ file, check: checkOverrides })),
  { file: README, check: checkReadme },
]

/** The shared packages (folders of packages/ with a package.json): every image installs them. */
async function packagesOf(root: string): Promise<string[]> {
  const manifests = await Array.fromAsync(new Bun.Glob('packages/*/package.json').scan({ cwd: root }))
  return manifests.map((path) => path.split('/')[1] ?? '').sort()
}

/** Problems of the files under `root` against `roster`, each line starting with the file it names. */
export async function checkDeployFiles(roster: Roster, root: string): Promise<string[]> {
  const problems = checkRoster(roster).map((problem) => `packages/contracts/src/roster.ts: ${problem}`)
  const packages = await packagesOf(root)
  for (const rule of RULES) {
    const text = await Bun.file(`${root}/${rule.file}`).text()
    for (const problem of rule.check(text, roster, packages)) problems.push(`${rule.file}: ${problem}`)
  }
  return problems
}

/** Generates what can be generated; returns the files it changed. */
export async function writeDeployFiles(roster: Roster, root: string): Promise<string[]> {
  const changed: string[] = []
  const packages = await packagesOf(root)
  for (const rule of RULES) {
    if (!rule.write) continue
    const path = `${root}/${rule.file}`
    const text = await Bun.file(path).text()
    const next = rule.write(text, roster, packages)
    if (next !== text) {
      await Bun.write(path, next)
      changed.push(rule.file)
    }
  }
  return changed
}

if (import.meta.main) {
  const root = `${import.meta.dir}/..`
  if (process.argv.includes('--write')) {
    for (const file of await writeDeployFiles(ROSTER, root)) console.log(`[roster] wrote ${file}`)
  }
  const problems = await checkDeployFiles(ROSTER, root)
  for (const problem of problems) console.error(`[roster] ${problem}`)
  if (problems.length > 0) {
    console.error(
      `[roster] ${problems.length} problem(s); \`bun scripts/roster.ts --write\` generates what it can`,
    )
    process.exit(1)
  }
  console.log(`[roster] every deploy file agrees with the roster (${ROSTER.length} services)`)
}
