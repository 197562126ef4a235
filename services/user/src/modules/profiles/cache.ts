import { cacheMetrics, type Logger, type Metrics } from '@parley/common'
import type { Redis } from '@parley/common/redis'
import type { ProfileRow } from '../../db/schema'

type CachedProfile = Omit<ProfileRow, 'createdAt' | 'updatedAt'> & { createdAt: string; updatedAt: string }

/**
 * Stores a profile unless the cache already holds a newer version of it, so a reader that
 * loaded a row just before a write cannot put the stale row back over the written one.
 */
const PUT_IF_NEWER = `
local current = redis.call('GET', KEYS[1])
if current then
  local ok, cached = pcall(cjson.decode, current)
  if ok and tonumber(cached.version) > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1`

function serialize(row: ProfileRow): string {
  const cached: CachedProfile = {
    ...row,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  }
  return JSON.stringify(cached)
}

function deserialize(text: string): ProfileRow {
  const cached = JSON.parse(text) as CachedProfile
  return { ...cached, createdAt: new Date(cached.createdAt), updatedAt: new Date(cached.updatedAt) }
}

/**
 * Cache-aside for profiles by id. Writers put the row they committed (newest version wins),
 * so updates and consumed events refresh it at once; the TTL bounds anything missed. When
 * Redis is unavailable every call is a miss or a no-op: the cache never fails a request.
 */
export class ProfileCache {
  private readonly lookups
  private readonly log: Logger

  constructor(
    private readonly redis: Redis,
    private readonly ttlSeconds: number,
    metrics: Metrics,
    logger: Logger,
  ) {
    this.lookups = cacheMetrics(metrics)
    this.log = logger.child({ component: 'profile-cache' })
  }

  private key(id: string): string {
    return `profile:${id}`
  }

  /** Cached rows of those ids that are cached. */
  async getMany(ids: string[]): Promise<Map<string, ProfileRow>> {
    const found = new Map<string, ProfileRow>()
    if (ids.length === 0) return found
    let values: (string | null)[]
    try {
      values = await this.redis.mget(ids.map((id) => this.key(id)))
    } catch {
      this.lookups.inc({ cache: 'profile', result: 'error' }, ids.length)
      return found
    }
    ids.forEach((id, index) => {
      const value = values[index]
      if (value) found.set(id, deserialize(value))
    })
    this.lookups.inc({ cache: 'profile', result: 'hit' }, found.size)
    this.lookups.inc({ cache: 'profile', result: 'miss' }, ids.length - found.size)
    return found
  }

  async get(id: string): Promise<ProfileRow | undefined> {
    return (await this.getMany([id])).get(id)
  }

  async put(rows: ProfileRow[]): Promise<void> {
    if (rows.length === 0) return
    try {
      const pipeline = this.redis.pipeline()
      for (const row of rows)
        pipeline.eval(PUT_IF_NEWER, 1, this.key(row.id), row.version, serialize(row), this.ttlSeconds)
      const results = await pipeline.exec()
      const failed = results?.find(([error]) => error)
      if (failed) throw failed[0]
    } catch (error) {
      this.log.debug({ err: error instanceof Error ? error.message : String(error) }, 'cache put skipped')
    }
  }
}
