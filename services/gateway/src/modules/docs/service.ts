import { type Logger, OPTIONAL_BODY } from '@parley/common'
import { Problem } from '@parley/contracts'

/** The parts of an OpenAPI 3 document the merge touches; everything else is carried as is. */
export type OpenApiDocument = {
  openapi?: string
  info?: { title: string; version: string; description?: string }
  paths?: Record<string, Record<string, unknown>>
  components?: Record<string, Record<string, unknown>>
  tags?: { name: string; description?: string }[]
  [field: string]: unknown
}

export type DocsSource = { service: string; url: string; pathPrefix: string }

const HTTP_METHODS = new Set(['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'])
const INTERNAL_PATHS = new Set(['/health', '/docs', '/docs/json'])

/**
 * Components of `spec` whose name is taken by a different definition in `merged` get
 * `<service>.<name>`; refs inside `spec` are rewritten to match.
 */
function renameCollisions(service: string, spec: OpenApiDocument, merged: OpenApiDocument): OpenApiDocument {
  const renames: { section: string; name: string; renamed: string }[] = []
  for (const [section, entries] of Object.entries(spec.components ?? {})) {
    for (const [name, definition] of Object.entries(entries)) {
      const existing = merged.components?.[section]?.[name]
      if (existing !== undefined && JSON.stringify(existing) !== JSON.stringify(definition))
        renames.push({ section, name, renamed: `${service}.${name}` })
    }
  }
  if (renames.length === 0) return spec
  const refs = new Map(
    renames.map(({ section, name, renamed }) => [
      `#/components/${section}/${name}`,
      `#/components/${section}/${renamed}`,
    ]),
  )
  const rewritten = JSON.parse(JSON.stringify(spec), (key, value) =>
    key === '$ref' && typeof value === 'string' ? (refs.get(value) ?? value) : value,
  ) as OpenApiDocument
  for (const { section, name, renamed } of renames) {
    const entries = rewritten.components?.[section] as Record<string, unknown>
    entries[renamed] = entries[name]
    delete entries[name]
  }
  return rewritten
}

type Parameter = { description?: string; schema?: { description?: string }; [field: string]: unknown }

type Operation = {
  tags?: string[]
  [OPTIONAL_BODY]?: unknown
  parameters?: Parameter[]
  requestBody?: { content?: Record<string, unknown>; [field: string]: unknown }
  responses?: Record<string, unknown>
}

/**
 * The OpenAPI plugin leaves a parameter's text in its schema, where Swagger UI and client
 * generators do not look: it becomes the parameter's description.
 */
function describedParameter(parameter: Parameter): Parameter {
  if (parameter.description || !parameter.schema?.description) return parameter
  return { ...parameter, description: parameter.schema.description }
}

/** The bodies every service parses (httpKit answers 415 to the others). */
const JSON_MEDIA_TYPE = 'application/json'

/**
 * The answers the edge itself gives to any proxied operation, whatever the service documents:
 * a path with no canonical form or a body that is not JSON (400), a body over BODY_LIMIT_BYTES
 * (413) or not JSON (415), the rate limit (429) and an upstream that fails, is down or is slow
 * (502, 503, 504).
 */
const EDGE_RESPONSES: Record<string, string> = {
  '400':
    'Bad request: the path has no canonical form (e.g. an encoded control character or `..`), or the body is not valid JSON',
  '429':
    'Rate limit exceeded (problem+json). Every answer carries `RateLimit-Policy` and `RateLimit`; this one adds `Retry-After`.',
  '502': 'The service behind this route failed',
  '503': 'The service behind this route is unavailable',
  '504': 'The service behind this route did not answer in time',
}
const BODY_RESPONSES: Record<string, string> = {
  '413': 'The request body exceeds BODY_LIMIT_BYTES',
  '415': 'The request body is not `application/json`',
}

function problemAnswer(description: string) {
  return { description, content: { [PROBLEM_MEDIA_TYPE]: { schema: Problem } } }
}

/**
 * What the gateway adds to every proxied operation: its service as its one tag (Swagger UI groups
 * by service; a service's own feature tags would list an operation twice), the answers of the
 * edge itself, parameters with their descriptions, and request bodies as the services parse them
 * (JSON only; the OpenAPI plugin also lists form encodings, which httpKit refuses).
 */
function atTheEdge(operation: Operation, service: string): Operation {
  const responses = Object.fromEntries(
    Object.entries(operation.responses ?? {}).map(([status, response]) => [
      status,
      asServed(status, response),
    ]),
  )
  const edge = { ...EDGE_RESPONSES, ...(operation.requestBody ? BODY_RESPONSES : {}) }
  for (const [status, description] of Object.entries(edge)) responses[status] ??= problemAnswer(description)
  const { [OPTIONAL_BODY]: optionalBody, ...documented } = operation
  const json = operation.requestBody?.content?.[JSON_MEDIA_TYPE]
  const requestBody = operation.requestBody && {
    ...operation.requestBody,
    ...(json ? { content: { [JSON_MEDIA_TYPE]: json } } : {}),
    ...(optionalBody === true ? { required: false } : {}),
  }
  return {
    ...documented,
    tags: [service],
    ...(operation.parameters ? { parameters: operation.parameters.map(describedParameter) } : {}),
    ...(requestBody ? { requestBody } : {}),
    responses,
  }
}

/**
 * Elysia coerces query and path values and documents each as `anyOf: [{type: string, format:
 * integer}, X]`; the string branch (a format JSON Schema does not know) would let any string
 * through, e.g. `limit=`. The document says what is accepted: X.
 */
function withoutCoercionBranches(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutCoercionBranches)
  if (value === null || typeof value !== 'object') return value
  const node = Object.fromEntries(
    Object.entries(value).map(([key, child]) => [key, withoutCoercionBranches(child)]),
  ) as Record<string, unknown>
  const branches = node.anyOf
  if (!Array.isArray(branches) || branches.length !== 2) return node
  const coerced = branches.findIndex(isCoercionBranch)
  if (coerced === -1) return node
  const { anyOf: _anyOf, ...rest } = node
  return { ...rest, ...(branches[1 - coerced] as Record<string, unknown>) }
}

function isCoercionBranch(branch: unknown): boolean {
  if (branch === null || typeof branch !== 'object') return false
  const { type, format } = branch as { type?: unknown; format?: unknown }
  return type === 'string' && (format === 'integer' || format === 'numeric' || format === 'boolean')
}

const PROBLEM_MEDIA_TYPE = 'application/problem+json'

/**
 * A documented response as the services really send it. The OpenAPI plugin documents every
 * schema as `application/json`, but errors go out as `application/problem+json`; and a `t.Void()`
 * response (a 204) comes out as `content: {type: 'void'}`, not a media type map: it has no content.
 */
function asServed(status: string, response: unknown): unknown {
  if (response === null || typeof response !== 'object' || !('content' in response)) return response
  const { content, ...rest } = response as { content: unknown }
  const mediaTypes = content !== null && typeof content === 'object' ? Object.entries(content) : []
  if (mediaTypes.length === 0 || mediaTypes.some(([, value]) => value === null || typeof value !== 'object'))
    return rest
  if (!(status === 'default' || Number(status) >= 400)) return response
  return {
    ...rest,
    content: Object.fromEntries(
      mediaTypes.map(([type, value]) => [type === 'application/json' ? PROBLEM_MEDIA_TYPE : type, value]),
    ),
  }
}

/**
 * One document for the whole public API: the gateway's own paths plus each service's,
 * prefixed with its public path, tagged with the service, components merged.
 */
export function mergeSpecs(
  base: OpenApiDocument,
  specs: readonly { source: DocsSource; spec: OpenApiDocument }[],
): OpenApiDocument {
  const merged: OpenApiDocument = {
    ...base,
    paths: { ...base.paths },
    components: Object.fromEntries(
      Object.entries(base.components ?? {}).map(([section, entries]) => [section, { ...entries }]),
    ),
    tags: [...(base.tags ?? [])],
  }
  const paths = merged.paths as Record<string, Record<string, unknown>>
  const components = merged.components as Record<string, Record<string, unknown>>
  const tags = merged.tags as { name: string; description?: string }[]
  for (const { source, spec: original } of specs) {
    const spec = renameCollisions(source.service, original, merged)
    for (const [path, item] of Object.entries(spec.paths ?? {})) {
      if (INTERNAL_PATHS.has(path)) continue
      const operations: Record<string, unknown> = {}
      for (const [method, operation] of Object.entries(item))
        operations[method] =
          HTTP_METHODS.has(method) && operation !== null && typeof operation === 'object'
            ? atTheEdge(operation as Operation, source.service)
            : operation
      paths[`${source.pathPrefix}${path}`] = operations
    }
    for (const [section, entries] of Object.entries(spec.components ?? {})) {
      components[section] = { ...components[section], ...entries }
    }
    if (!tags.some((known) => known.name === source.service))
      tags.push({ name: source.service, description: `Routes of the ${source.service} service` })
  }
  return withoutCoercionBranches(merged) as OpenApiDocument
}

/**
 * Keeps the merged document: fetched from every service with a timeout, rebuilt when older
 * than `refreshMs` (in the background once built), and a service that does not answer keeps
 * its last known spec, so the docs follow the services without depending on all of them.
 */
export class DocsAggregator {
  private readonly known = new Map<string, OpenApiDocument>()
  private merged: OpenApiDocument | undefined
  private refreshedAt = 0
  private refreshing: Promise<void> | undefined

  constructor(
    private readonly base: OpenApiDocument,
    private readonly sources: readonly DocsSource[],
    private readonly options: { refreshMs: number; timeoutMs: number },
    private readonly logger: Logger,
  ) {}

  async document(): Promise<OpenApiDocument> {
    if (!this.merged || Date.now() - this.refreshedAt > this.options.refreshMs) {
      const refresh = this.refresh()
      if (!this.merged) await refresh
    }
    return this.merged as OpenApiDocument
  }

  /** Refetches every service's spec (one refresh at a time) and rebuilds the merged document. */
  refresh(): Promise<void> {
    this.refreshing ??= this.fetchAll().finally(() => {
      this.refreshing = undefined
    })
    return this.refreshing
  }

  private async fetchAll(): Promise<void> {
    await Promise.all(this.sources.map((source) => this.fetchOne(source)))
    this.merged = mergeSpecs(
      this.base,
      this.sources.flatMap((source) => {
        const spec = this.known.get(source.service)
        return spec ? [{ source, spec }] : []
      }),
    )
    this.refreshedAt = Date.now()
  }

  private async fetchOne(source: DocsSource): Promise<void> {
    try {
      const response = await fetch(`${source.url}/docs/json`, {
        signal: AbortSignal.timeout(this.options.timeoutMs),
      })
      if (!response.ok) throw new Error(`status ${response.status}`)
      const spec = (await response.json()) as OpenApiDocument
      if (typeof spec !== 'object' || spec === null || typeof spec.paths !== 'object')
        throw new Error('not an OpenAPI document')
      this.known.set(source.service, spec)
    } catch (error) {
      this.logger.warn(
        { service: source.service, err: error instanceof Error ? error.message : String(error) },
        this.known.has(source.service)
          ? 'service docs unavailable, keeping the last known'
          : 'service docs unavailable',
      )
    }
  }
}
