import { type Logger, type Metrics, problems } from '@parley/common'
import type { Redis } from '@parley/common/redis'
import type { PolicyName, RateLimitPolicies } from './model'

/**
 * GCRA (generic cell rate algorithm): one key per subject holding the theoretical arrival
 * time (TAT). Each request moves the TAT forward by one emission interval; it is allowed
 * while the TAT stays within one window of now, so `limit` requests may burst and the
 * quota refills continuously. Redis' clock is used so every replica agrees on "now".
 * The script decides a batch of requests (KEYS[i] with ARGV interval/tolerance pairs) in
 * order, each atomically; per request it returns {allowed (1|0), ms until the TAT is reached
 * (full refill), ms until the next request fits}. The expiry is at least 1 ms: with a huge
 * quota one interval can vanish below float precision.
 */
const GCRA_SCRIPT = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local results = {}
for index, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[index * 2 - 1])
  local tolerance = tonumber(ARGV[index * 2])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local next_tat = tat + interval
  local base = #results
  if next_tat - now > tolerance then
    results[base + 1] = 0
    results[base + 2] = math.ceil(tat - now)
    results[base + 3] = math.ceil(next_tat - now - tolerance)
  else
    redis.call('SET', key, tostring(next_tat), 'PX', math.max(1, math.ceil(next_tat - now)))
    results[base + 1] = 1
    results[base + 2] = math.ceil(next_tat - now)
    results[base + 3] = 0
  end
end
return results
`

/** Requests decided by one script call at most (keeps a single call short for Redis). */
const MAX_BATCH = 128

type GcraResult = [allowed: number, untilRefillMs: number, retryAfterMs: number]
type RedisWithGcra = Redis & {
  gcra(keyCount: number, ...keysThenArgs: (string | number)[]): Promise<number[]>
}
type PendingDecision = {
  key: string
  interval: number
  tolerance: number
  resolve: (result: GcraResult) => void
  reject: (error: unknown) => void
}

/** One policy a request is counted against: `cost` units (default 1) of `subject`'s quota. */
export type RateLimitCharge = { policy: PolicyName; subject: string; cost?: number }

export type RateLimitDecision = {
  policy: PolicyName
  limit: number
  windowSeconds: number
  allowed: boolean
  remaining: number
  /** Seconds until the quota is fully replenished. */
  resetSeconds: number
  /** Seconds until the next request would be allowed (0 when allowed). */
  retryAfterSeconds: number
  store: 'redis' | 'memory'
}

/** The same GCRA step as the Lua script, over a local clock and map. */
function gcraStep(tat: number | undefined, now: number, interval: number, tolerance: number) {
  const start = tat === undefined || tat < now ? now : tat
  const nextTat = start + interval
  if (nextTat - now > tolerance)
    return { result: [0, Math.ceil(start - now), Math.ceil(nextTat - now - tolerance)] as GcraResult }
  return { result: [1, Math.ceil(nextTat - now), 0] as GcraResult, nextTat }
}

/** In-process GCRA used while Redis is unreachable: per-replica limits instead of none. */
export class MemoryGcra {
  private readonly tats = new Map<string, number>()

  constructor(private readonly maxKeys = 100_000) {}

  take(key: string, interval: number, tolerance: number, now = Date.now()): GcraResult {
    const { result, nextTat } = gcraStep(this.tats.get(key), now, interval, tolerance)
    if (nextTat !== undefined) {
      if (this.tats.size >= this.maxKeys) this.sweep(now)
      this.tats.set(key, nextTat)
    }
    return result
  }

  /** Drops subjects whose quota is fully replenished (their entry carries no information). */
  sweep(now = Date.now()): void {
    for (const [key, tat] of this.tats) if (tat <= now) this.tats.delete(key)
    // Everything still throttled: forget the lot rather than grow without bound.
    if (this.tats.size >= this.maxKeys) this.tats.clear()
  }
}

function rateLimitHeaders(decision: RateLimitDecision): Record<string, string> {
  const name = `"${decision.policy}"`
  return {
    'ratelimit-policy': `${name};q=${decision.limit};w=${decision.windowSeconds}`,
    ratelimit: `${name};r=${decision.remaining};t=${decision.resetSeconds}`,
  }
}

/**
 * Rate limits in Redis with one atomic script call per request; while Redis is unreachable
 * the same algorithm runs in process (logged once per outage, counted by `store`).
 */
export class RateLimiter {
  private readonly memory = new MemoryGcra()
  private readonly decisions
  private degraded = false
  private pending: PendingDecision[] = []
  private readonly sweeper: ReturnType<typeof setInterval>

  constructor(
    private readonly redis: Redis,
    private readonly policies: RateLimitPolicies,
    private readonly logger: Logger,
    metrics: Metrics,
  ) {
    if (!('gcra' in redis)) redis.defineCommand('gcra', { lua: GCRA_SCRIPT })
    this.decisions = metrics.counter('ratelimit_decisions_total', 'Rate-limit decisions', [
      'policy',
      'decision',
      'store',
    ])
    this.sweeper = setInterval(() => this.memory.sweep(), 60_000)
    this.sweeper.unref()
  }

  /**
   * Counts `cost` units (one request, or e.g. one per invited user) of `subject` against
   * `policyName`; a cost above the limit is charged as the limit, so a full quota still admits it.
   * Never throws.
   */
  async consume(policyName: PolicyName, subject: string, cost = 1): Promise<RateLimitDecision> {
    const policy = this.policies[policyName]
    const tolerance = policy.windowSeconds * 1000
    const interval = tolerance / policy.limit
    const increment = interval * Math.min(Math.max(1, cost), policy.limit)
    const key = `ratelimit:${policyName}:${subject}`
    let store: RateLimitDecision['store'] = 'redis'
    let result: GcraResult
    try {
      if (this.redis.status !== 'ready') throw new Error(`redis is ${this.redis.status}`)
      result = await this.takeInRedis(key, increment, tolerance)
      if (this.degraded) {
        this.degraded = false
        this.logger.info('rate limiting is back on redis')
      }
    } catch (error) {
      if (!this.degraded) {
        this.degraded = true
        this.logger.warn(
          { err: error instanceof Error ? error.message : String(error) },
          'rate limiting in redis failed: falling back to in-process limits',
        )
      }
      store = 'memory'
      result = this.memory.take(key, increment, tolerance)
    }
    const [allowed, untilRefillMs, retryAfterMs] = result
    const decision: RateLimitDecision = {
      policy: policyName,
      limit: policy.limit,
      windowSeconds: policy.windowSeconds,
      allowed: allowed === 1,
      remaining: allowed === 1 ? Math.max(0, Math.floor((tolerance - untilRefillMs) / interval)) : 0,
      resetSeconds: Math.ceil(untilRefillMs / 1000),
      retryAfterSeconds: allowed === 1 ? 0 : Math.max(1, Math.ceil(retryAfterMs / 1000)),
      store,
    }
    this.decisions.inc({ policy: policyName, decision: decision.allowed ? 'allow' : 'deny', store })
    return decision
  }

  /**
   * Charges every policy at once and returns the RateLimit headers of the decision the client is
   * told about: a denial if any (thrown as the 429 problem), else the policy closest to its limit.
   */
  async enforce(charges: readonly RateLimitCharge[]): Promise<Record<string, string>> {
    const decisions = await Promise.all(
      charges.map((charge) => this.consume(charge.policy, charge.subject, charge.cost)),
    )
    let chosen = decisions[0] as RateLimitDecision
    for (const decision of decisions) {
      if (!decision.allowed) {
        chosen = decision
        break
      }
      if (decision.remaining / decision.limit < chosen.remaining / chosen.limit) chosen = decision
    }
    const headers = rateLimitHeaders(chosen)
    if (!chosen.allowed) throw problems.tooManyRequests(chosen.retryAfterSeconds, headers)
    return headers
  }

  close(): void {
    clearInterval(this.sweeper)
  }

  /**
   * Queues the decision for the next script call: every request that reaches the limiter in
   * one event-loop turn is decided by a single atomic call (one round trip and one client
   * command instead of one per request, which dominates the gateway's cost under load).
   */
  private takeInRedis(key: string, interval: number, tolerance: number): Promise<GcraResult> {
    return new Promise((resolve, reject) => {
      this.pending.push({ key, interval, tolerance, resolve, reject })
      if (this.pending.length === 1) setImmediate(() => this.flush())
    })
  }

  private flush(): void {
    const pending = this.pending
    this.pending = []
    for (let start = 0; start < pending.length; start += MAX_BATCH) {
      const batch = pending.slice(start, start + MAX_BATCH)
      ;(this.redis as RedisWithGcra)
        .gcra(
          batch.length,
          ...batch.map((decision) => decision.key),
          ...batch.flatMap((decision) => [decision.interval, decision.tolerance]),
        )
        .then(
          (flat) => {
            for (const [index, decision] of batch.entries())
              decision.resolve([flat[index * 3] ?? 0, flat[index * 3 + 1] ?? 0, flat[index * 3 + 2] ?? 0])
          },
          (error: unknown) => {
            for (const decision of batch) decision.reject(error)
          },
        )
    }
  }
}
