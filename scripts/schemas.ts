// Regenerates deploy/schemas/, the schemas scripts/validate-deploy.sh validates against, from Go
// modules that the go command downloads through the proxy it is configured with (GOPROXY, GOSUMDB).
//
//   bun scripts/schemas.ts           rewrite deploy/schemas
//   bun scripts/schemas.ts --check   regenerate and exit 1 if deploy/schemas differs (drift)
//
// Only what is validated is kept: the Kubernetes definitions reachable from the kinds that
// charts/parley/templates and k8s/ declare, the CRD schemas of the custom kinds among them, the
// skaffold schema of skaffold.yaml's apiVersion and the Compose Specification schema.
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'

/** Every input, pinned: module, version, go.sum hash of the module zip, path inside the module. */
const SOURCES = {
  kubernetes: {
    module: 'k8s.io/kubernetes',
    version: 'v1.36.3',
    sum: 'h1:qDQdoMiluAE2Eab6Fa52YV+WjiGz9mZFFoagEA6cI+o=',
    path: 'api/openapi-spec/swagger.json',
  },
  prometheusOperator: {
    module: 'github.com/prometheus-operator/prometheus-operator',
    version: 'v0.89.0',
    sum: 'h1:2HA351OwWBa10H6TDhjeSdHOA7wiY71sEivg+z2cykk=',
    path: 'example/prometheus-operator-crd',
  },
  skaffold: {
    module: 'github.com/GoogleContainerTools/skaffold/v2',
    version: 'v2.16.1',
    sum: 'h1:eMrp2qpn/5j2c1P/JqLo+mxcpEIdtokb/tCY2W/05ic=',
    path: 'docs-v2/content/en/schemas',
  },
  compose: {
    module: 'github.com/compose-spec/compose-go/v2',
    version: 'v2.16.2',
    sum: 'h1:pTp1DqQwJzFd85GzlWsSszKA1ABrV/ySqsClujIcWA8=',
    path: 'schema/compose-spec.json',
  },
} as const

type Source = (typeof SOURCES)[keyof typeof SOURCES]

const ROOT = join(import.meta.dir, '..')
const OUT = 'deploy/schemas'
/** Where the manifests are whose kinds get validated (the chart's templates, tests included). */
const MANIFEST_DIRS = ['charts/parley/templates', 'k8s']
/** validate-deploy.sh replaces these two definitions itself, so they stay even if unreferenced. */
const ALWAYS_KEPT = [
  'io.k8s.apimachinery.pkg.util.intstr.IntOrString',
  'io.k8s.apimachinery.pkg.api.resource.Quantity',
]

type Json = null | boolean | number | string | Json[] | JsonObject
type JsonObject = { [key: string]: Json }

const isObject = (value: Json | undefined): value is JsonObject =>
  typeof value === 'object' && value !== null && !Array.isArray(value)

function fail(message: string): never {
  console.error(`[schemas] error: ${message}`)
  process.exit(1)
}

function object(value: Json | undefined, what: string): JsonObject {
  if (!isObject(value)) fail(`${what} is not an object`)
  return value
}

function string(value: Json | undefined, what: string): string {
  if (typeof value !== 'string') fail(`${what} is not a string`)
  return value
}

const readJson = async (path: string): Promise<Json> => JSON.parse(await Bun.file(path).text()) as Json
const readYaml = async (path: string): Promise<Json> => Bun.YAML.parse(await Bun.file(path).text()) as Json

// ------------------------------------------------------------------------------------ modules

/** `go mod download` outside any module: the go command's own proxy and checksum settings apply. */
async function download(source: Source, workDir: string): Promise<string> {
  const spec = `${source.module}@${source.version}`
  const go = process.env.PARLEY_GO ?? 'go'
  if (!Bun.which(go)) fail(`${go} not found: a Go toolchain (>= 1.21) is needed to download ${spec}`)
  const proc = Bun.spawn([go, 'mod', 'download', '-json', spec], {
    cwd: workDir,
    env: { ...process.env, GOFLAGS: '-mod=mod', GO111MODULE: 'on', GOWORK: 'off' },
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ])
  let info: JsonObject
  try {
    info = object(JSON.parse(stdout) as Json, 'go mod download output')
  } catch {
    fail(`go mod download ${spec} failed (exit ${code}): ${stderr.trim() || stdout.trim()}`)
  }
  if (code !== 0 || info.Error) fail(`go mod download ${spec}: ${String(info.Error ?? stderr.trim())}`)
  // The checksum database already vouches for the zip; the pin also catches a changed GOSUMDB/GONOSUMDB.
  if (info.Sum !== source.sum) {
    fail(
      `${spec} has hash ${String(info.Sum)}, SOURCES pins ${source.sum} (update the pin if the version changed)`,
    )
  }
  return string(info.Dir, `go mod download ${spec}: Dir`)
}

// ---------------------------------------------------------------------- kinds of the manifests

type Gvk = { group: string; version: string; kind: string; files: string[] }

const gvkKey = (g: { group: string; version: string; kind: string }): string =>
  `${g.group}/${g.version}/${g.kind}`
const apiVersionOf = (g: Gvk): string => (g.group ? `${g.group}/${g.version}` : g.version)

/**
 * The top-level apiVersion/kind of every document under MANIFEST_DIRS. Templates are not YAML
 * until rendered, so documents are read line by line: split on `---`, column-0 keys only (nested
 * `kind:`, e.g. an HPA's scaleTargetRef, is indented). A templated or unpaired kind is an error
 * rather than a kind silently left without a schema.
 */
async function declaredKinds(): Promise<Gvk[]> {
  const found = new Map<string, Gvk>()
  for (const dir of MANIFEST_DIRS) {
    for await (const file of new Bun.Glob('**/*.{yaml,yml,tpl}').scan({ cwd: join(ROOT, dir) })) {
      const path = join(dir, file)
      const text = await Bun.file(join(ROOT, path)).text()
      for (const doc of text.split(/^---[ \t]*$/m)) {
        const apiVersions = [...doc.matchAll(/^apiVersion:[ \t]*(.*?)[ \t]*$/gm)].map((m) => m[1] ?? '')
        const kinds = [...doc.matchAll(/^kind:[ \t]*(.*?)[ \t]*$/gm)].map((m) => m[1] ?? '')
        if (apiVersions.length === 0 && kinds.length === 0) continue
        const [apiVersion, kind] = [apiVersions[0] ?? '', kinds[0] ?? '']
        if (apiVersions.length !== 1 || kinds.length !== 1) {
          fail(
            `${path}: a document with apiVersion ${apiVersions.join(',') || '-'} / kind ${kinds.join(',') || '-'}`,
          )
        }
        if (!/^([a-z0-9.-]+\/)?v[0-9a-z]+$/.test(apiVersion) || !/^[A-Za-z]+$/.test(kind)) {
          fail(
            `${path}: apiVersion ${apiVersion} / kind ${kind} is not literal, so its schema cannot be chosen`,
          )
        }
        const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion]
        const gvk = { group: group ?? '', version: version ?? '', kind, files: [] }
        const entry = found.get(gvkKey(gvk)) ?? gvk
        if (!entry.files.includes(path)) entry.files.push(path)
        found.set(gvkKey(gvk), entry)
      }
    }
  }
  if (found.size === 0) fail(`no kinds found under ${MANIFEST_DIRS.join(', ')}`)
  return [...found.values()].sort((a, b) => gvkKey(a).localeCompare(gvkKey(b)))
}

// ------------------------------------------------------------------------------ Kubernetes

/** Names of the definitions reachable from `roots` through `#/definitions/...` references. */
function reachable(definitions: JsonObject, roots: string[]): Set<string> {
  const kept = new Set<string>()
  const pending = [...roots]
  const refs = (node: Json): void => {
    if (Array.isArray(node)) node.forEach(refs)
    else if (isObject(node)) {
      for (const [key, value] of Object.entries(node)) {
        if (key === '$ref' && typeof value === 'string') {
          const name = value.replace(/^#\/definitions\//, '')
          if (name === value) fail(`unsupported $ref ${value}`)
          pending.push(name)
        } else refs(value)
      }
    }
  }
  for (let name = pending.pop(); name !== undefined; name = pending.pop()) {
    if (kept.has(name)) continue
    if (!(name in definitions)) fail(`$ref to a missing definition ${name}`)
    kept.add(name)
    refs(definitions[name] ?? null)
  }
  return kept
}

/** The definition names of each built-in kind, by gvkKey, from x-kubernetes-group-version-kind. */
function builtinKinds(definitions: JsonObject): Map<string, string> {
  const byKind = new Map<string, string>()
  for (const [name, definition] of Object.entries(definitions)) {
    const gvks = isObject(definition) ? definition['x-kubernetes-group-version-kind'] : undefined
    for (const gvk of Array.isArray(gvks) ? gvks : []) {
      if (!isObject(gvk)) continue
      const key = gvkKey({
        group: String(gvk.group ?? ''),
        version: String(gvk.version),
        kind: String(gvk.kind),
      })
      if (!byKind.has(key)) byKind.set(key, name)
    }
  }
  return byKind
}

/** The OpenAPI spec with only the definitions the kinds need, unchanged; paths etc. dropped. */
function prunedSwagger(spec: JsonObject, roots: string[]): { text: string; kept: number; total: number } {
  const definitions = object(spec.definitions, 'swagger.json definitions')
  const kept = reachable(definitions, [...roots, ...ALWAYS_KEPT])
  // Original order (alphabetical), so a regeneration diff shows only real changes.
  const pruned = Object.fromEntries(Object.entries(definitions).filter(([name]) => kept.has(name)))
  // Compact: this file is read by a program, and indentation would double its size.
  const text = `${JSON.stringify({ swagger: spec.swagger ?? null, info: spec.info ?? null, definitions: pruned })}\n`
  return { text, kept: kept.size, total: Object.keys(definitions).length }
}

// --------------------------------------------------------------------------------------- CRDs

// The conversion of openapi2jsonschema (kubeconform's scripts/, as used by the datreeio
// CRDs-catalog), reproduced exactly so the output matches the catalog's files byte for byte.

/** additional_properties(): unknown fields are rejected in every object with properties, except
 * at the root. Like the original, it descends into object values only, not into lists. */
function denyUnknownFields(node: Json, root = false): Json {
  if (!isObject(node)) return node
  const out: JsonObject = {}
  for (const [key, value] of Object.entries(node)) out[key] = denyUnknownFields(value)
  const type = node.type
  const isObjectType = type === 'object' || (Array.isArray(type) && type.includes('object'))
  if (!root && 'properties' in node && isObjectType && !('additionalProperties' in node)) {
    out.additionalProperties = false
  }
  return out
}

/** replace_int_or_string(): a `format: int-or-string` schema becomes string-or-integer. */
function intOrString(node: Json): Json {
  if (!isObject(node)) return node
  const out: JsonObject = {}
  for (const [key, value] of Object.entries(node)) {
    if (isObject(value)) {
      out[key] =
        value.format === 'int-or-string'
          ? { oneOf: [{ type: 'string' }, { type: 'integer' }] }
          : intOrString(value)
    } else out[key] = Array.isArray(value) ? value.map(intOrString) : value
  }
  return out
}

/** Python's json.dumps(indent=2) (ASCII only) plus print's newline. */
const pythonJson = (value: Json): string =>
  `${JSON.stringify(value, null, 2).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}\n`

type Crd = { group: string; kind: string; file: string; versions: Map<string, Json> }

async function crds(dir: string): Promise<Crd[]> {
  const found: Crd[] = []
  for (const file of (await readdir(dir)).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    const crd = object(await readYaml(join(dir, file)), file)
    if (crd.kind !== 'CustomResourceDefinition') continue
    const spec = object(crd.spec, `${file} spec`)
    const versions = new Map<string, Json>()
    for (const v of Array.isArray(spec.versions) ? spec.versions : []) {
      const version = object(v, `${file} version`)
      const schema = isObject(version.schema) ? version.schema.openAPIV3Schema : undefined
      if (schema !== undefined) versions.set(string(version.name, `${file} version name`), schema)
    }
    const kind = string(object(spec.names, `${file} names`).kind, `${file} kind`)
    found.push({ group: string(spec.group, `${file} group`), kind, file, versions })
  }
  return found
}

// ---------------------------------------------------------------------------------- generate

type Row = { file: string; what: string; source: Source; from: string; derived: string }

const fileSize = (bytes: number): string =>
  bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MB` : `${Math.round(bytes / 1024)} KB`

function readme(rows: Row[], files: Map<string, string>): string {
  const table = rows.map(
    (r) =>
      `| \`${r.file}\` (${fileSize(Buffer.byteLength(files.get(r.file) ?? ''))}) | ${r.what} | \`${r.source.module}@${r.source.version}\` \`${r.from}\` | ${r.derived} |`,
  )
  return `# Schemas for offline validation

What \`scripts/validate-deploy.sh\` validates against, and only that. Generated by
\`bun scripts/schemas.ts\` from Go modules (versions and hashes pinned in its \`SOURCES\`); do not edit
by hand.

| file | what | source (module@version, path in it) | derived |
|---|---|---|---|
${table.join('\n')}

validate-deploy.sh turns the Kubernetes definitions into kubeconform's one-schema-per-kind layout
(strict: unknown fields rejected) in \`.cache/\`; CRD schemas are read from \`crds/<group>/<kind>_<version>.json\`.

## Regenerate

\`\`\`sh
bun scripts/schemas.ts           # after a version change in SOURCES, a new kind in the chart or k8s/,
                                 # or a new skaffold.yaml apiVersion
bun scripts/schemas.ts --check   # exits 1 if these files are not what the pinned sources give
\`\`\`

Needs a Go toolchain (\`go\`, or \`PARLEY_GO\`): the modules are fetched with \`go mod download\`, so the
go command's own GOPROXY and GOSUMDB settings apply. The \`k8s.io/kubernetes\` module zip is about 20 MB.
`
}

async function generate(): Promise<Map<string, string>> {
  const workDir = await mkdtemp(join(tmpdir(), 'parley-schemas-'))
  try {
    const [k8sDir, operatorDir, skaffoldDir, composeDir] = await Promise.all([
      download(SOURCES.kubernetes, workDir),
      download(SOURCES.prometheusOperator, workDir),
      download(SOURCES.skaffold, workDir),
      download(SOURCES.compose, workDir),
    ])
    const files = new Map<string, string>()
    const rows: Row[] = []

    // Kubernetes: the built-in kinds; every other kind must be a CRD of the operator.
    const kinds = await declaredKinds()
    const spec = object(await readJson(join(k8sDir, SOURCES.kubernetes.path)), 'swagger.json')
    const builtin = builtinKinds(object(spec.definitions, 'swagger.json definitions'))
    const roots = kinds.flatMap((k) => builtin.get(gvkKey(k)) ?? [])
    const custom = kinds.filter((k) => !builtin.has(gvkKey(k)))
    const [, minor] = SOURCES.kubernetes.version.split('.')
    const swaggerFile = `kubernetes-1.${minor}-swagger.json`
    const swagger = prunedSwagger(spec, roots)
    files.set(swaggerFile, swagger.text)
    const builtinList = kinds
      .filter((k) => builtin.has(gvkKey(k)))
      .map((k) => `${k.kind} (${apiVersionOf(k)})`)
      .join(', ')
    rows.push({
      file: swaggerFile,
      what: `Kubernetes 1.${minor} OpenAPI v2 definitions of ${builtinList}`,
      source: SOURCES.kubernetes,
      from: SOURCES.kubernetes.path,
      derived:
        `pruned to the ${swagger.kept} of ${swagger.total} definitions these kinds reach through \`$ref\` ` +
        `(unchanged; \`paths\` etc. dropped), compact JSON`,
    })

    const available = await crds(join(operatorDir, SOURCES.prometheusOperator.path))
    for (const k of custom) {
      const crd = available.find((c) => c.group === k.group && c.kind === k.kind)
      const schema = crd?.versions.get(k.version)
      if (!crd || schema === undefined) {
        fail(`no schema for ${k.kind} ${apiVersionOf(k)} (${k.files.join(', ')}): neither built in nor a CRD`)
      }
      // openapi2jsonschema's file name: {kind}_{version}, lower-cased
      const file = `crds/${k.group}/${`${k.kind}_${k.version}`.toLowerCase()}.json`
      files.set(file, pythonJson(intOrString(denyUnknownFields(schema, true))))
      rows.push({
        file,
        what: `${k.kind} ${apiVersionOf(k)}`,
        source: SOURCES.prometheusOperator,
        from: `${SOURCES.prometheusOperator.path}/${crd.file}`,
        derived:
          `\`openAPIV3Schema\` of version ${k.version}, converted like openapi2jsonschema (datreeio CRDs-catalog): ` +
          '`additionalProperties: false` on objects with properties below the root, `int-or-string` as string or integer',
      })
    }

    // skaffold: the schema of the apiVersion skaffold.yaml declares.
    const skaffoldApi = string(
      object(await readYaml(join(ROOT, 'skaffold.yaml')), 'skaffold.yaml').apiVersion,
      'apiVersion',
    )
    const skaffoldVersion =
      /^skaffold\/(v[0-9a-z]+)$/.exec(skaffoldApi)?.[1] ?? fail(`skaffold.yaml apiVersion ${skaffoldApi}`)
    const skaffoldFrom = `${SOURCES.skaffold.path}/${skaffoldVersion}.json`
    const skaffoldSchema = Bun.file(join(skaffoldDir, skaffoldFrom))
    if (!(await skaffoldSchema.exists())) {
      fail(
        `${SOURCES.skaffold.module}@${SOURCES.skaffold.version} has no ${skaffoldFrom} (skaffold.yaml says ${skaffoldApi})`,
      )
    }
    files.set(`skaffold/${skaffoldVersion}.json`, await skaffoldSchema.text())
    rows.push({
      file: `skaffold/${skaffoldVersion}.json`,
      what: `skaffold.yaml schema, apiVersion \`${skaffoldApi}\``,
      source: SOURCES.skaffold,
      from: skaffoldFrom,
      derived: 'copied unchanged',
    })

    files.set('compose/compose-spec.json', await Bun.file(join(composeDir, SOURCES.compose.path)).text())
    rows.push({
      file: 'compose/compose-spec.json',
      what: 'Compose Specification schema (docker-compose.yml)',
      source: SOURCES.compose,
      from: SOURCES.compose.path,
      derived: 'copied unchanged',
    })

    files.set('README.md', readme(rows, files))
    return files
  } finally {
    await rm(workDir, { recursive: true, force: true })
  }
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => [])
  return entries
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort()
}

async function main(): Promise<void> {
  const check = process.argv.includes('--check')
  const outDir = join(ROOT, OUT)
  const files = await generate()

  if (check) {
    const existing = await filesUnder(outDir)
    const problems: string[] = []
    for (const [file, text] of files) {
      const current = Bun.file(join(outDir, file))
      if (!(await current.exists())) problems.push(`missing ${file}`)
      else if ((await current.text()) !== text) problems.push(`differs ${file}`)
    }
    for (const file of existing) if (!files.has(file)) problems.push(`not generated ${file}`)
    if (problems.length > 0) {
      // The regenerated set, for `diff -r`.
      const fresh = await mkdtemp(join(tmpdir(), 'parley-schemas-check-'))
      for (const [file, text] of files) await Bun.write(join(fresh, file), text)
      console.error(problems.map((p) => `[schemas] ${p}`).join('\n'))
      fail(`${OUT} is out of date (regenerated copy: ${fresh}); run: bun scripts/schemas.ts`)
    }
    console.log(`[schemas] ${OUT} is up to date (${files.size} files)`)
    return
  }

  await rm(outDir, { recursive: true, force: true })
  for (const [file, text] of files) {
    await mkdir(dirname(join(outDir, file)), { recursive: true })
    await Bun.write(join(outDir, file), text)
  }
  for (const [file, text] of files) {
    console.log(
      `[schemas] wrote ${relative(ROOT, join(outDir, file))} (${fileSize(Buffer.byteLength(text))})`,
    )
  }
}

await main()
