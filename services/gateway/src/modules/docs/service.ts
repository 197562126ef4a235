import type { Logger } from '@parley/common'

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

type Operation = { tags?: string[]; responses?: Record<string, unknown> }

/**
 * What the gateway adds to every proxied operation: its service as its one tag (Swagger UI groups
 * by service; a service's own feature tags would list an operation twice) and the 429 answer.
 */
function atTheEdge(operation: Operation, service: string): Operation {
  const responses = Object.fromEntries(
    Object.entries(operation.responses ?? {}).map(([status, response]) => [
      status,
      asServed(status, response),
    ]),
  )
  return {
    ...operation,
    tags: [service],
    responses: { ...responses, '429': responses['429'] ?? RATE_LIMITED },
  }
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

const RATE_LIMITED = {
  description:
    'Rate limit exceeded (problem+json). Every answer carries `RateLimit-Policy` and `RateLimit`; this one adds `Retry-After`.',
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
  return merged
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
