import { type Logger, type Metrics, problems } from '@parley/common'
import type { Redis } from '@parley/common/redis'
import type { PolicyName, RateLimitPolicies, RateLimitPolicy } from './model'

/**
 * GCRA (generic cell rate algorithm): one key per subject holding the theoretical arrival
 * time (TAT). Each unit moves the TAT forward by one emission interval; units are granted
 * while the TAT stays within one window of now, so `limit` units may burst and the quota
 * refills continuously. Redis' clock is used so every replica agrees on "now".
 * The script decides a batch (KEYS[i] with ARGV interval, tolerance, want, need per key) in
 * order, each atomically: it grants as many units as fit, up to `want`, or none when fewer than
 * `need` fit. Per key it returns {units granted, ms until the TAT is reached (full refill), ms
 * until `need` units fit (0 when granted)}. The expiry is at least 1 ms: with a huge quota one
 * interval can vanish below float precision.
 */
const GCRA_SCRIPT = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local results = {}
for index, key in ipairs(KEYS) do
  local at = (index - 1) * 4
  local interval = tonumber(ARGV[at + 1])
  local tolerance = tonumber(ARGV[at + 2])
  local want = tonumber(ARGV[at + 3])
  local need = tonumber(ARGV[at + 4])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local fit = math.floor((tolerance - (tat - now)) / interval + 1e-9)
  local granted = math.min(want, fit)
  local base = #results
  if granted < need then
    results[base + 1] = 0
    results[base + 2] = math.ceil(tat - now)
    results[base + 3] = math.ceil(tat + need * interval - now - tolerance)
  else
    local next_tat = tat + granted * interval
    redis.call('SET', key, tostring(next_tat), 'PX', math.max(1, math.ceil(next_tat - now)))
    results[base + 1] = granted
    results[base + 2] = math.ceil(next_tat - now)
    results[base + 3] = 0
  end
end
return results
`

/** Gives back units a replica leased and did not use (KEYS[i] with ARGV units, interval per key). */
const GIVE_BACK_SCRIPT = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
for index, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key))
  if tat then
    local back = tat - tonumber(ARGV[index * 2 - 1]) * tonumber(ARGV[index * 2])
    if back <= now then redis.call('DEL', key)
    else redis.call('SET', key, tostring(back), 'PX', math.max(1, math.ceil(back - now))) end
  end
end
return 0
`

/** Requests decided by one script call at most (keeps a single call short for Redis). */
const MAX_BATCH = 128

/**
 * Leases: a replica takes units of a busy subject's quota from Redis ahead of its requests and
 * admits from them locally, so a steady client costs a Redis call per lease, not per request.
 * A lease holds at most LEASE_SHARE of the limit (and LEASE_MAX_UNITS), for LEASE_TTL_MS; then
 * its unused units go back. A subject starts with leases of one unit (exactly today's cost and
 * accounting) and doubles while it keeps using them up within the TTL.
 */
export const LEASE_SHARE = 1 / 20
export const LEASE_MAX_UNITS = 256
export const LEASE_TTL_MS = 1_000

/** Units a lease of `policy` may hold: 1 for small limits, so those stay exact per request. */
export function maxLeaseUnits(policy: RateLimitPolicy): number {
  return Math.max(1, Math.min(LEASE_MAX_UNITS, Math.floor(policy.limit * LEASE_SHARE)))
}

type GcraResult = [granted: number, untilRefillMs: number, retryAfterMs: number]
type RedisWithGcra = Redis & {
  gcra(keyCount: number, ...keysThenArgs: (string | number)[]): Promise<number[]>
  giveBack(keyCount: number, ...keysThenArgs: (string | number)[]): Promise<number>
}
type PendingTake = {
  key: string
  interval: number
  tolerance: number
  want: number
  need: number
  resolve: (result: GcraResult) => void
  reject: (error: unknown) => void
}

/** A replica's units of one subject's quota, taken from Redis and not yet used. */
type Lease = {
  units: number
  /** Units the next take asks for. */
  size: number
  /** Units asked for by takes still in flight. */
  pending: number
  /** Date.now() of the last grant; the lease ends LEASE_TTL_MS later. */
  grantedAt: number
  /** Units Redis still had free after the last grant, and ms until its full refill then. */
  freeAfterGrant: number
  untilRefillMs: number
  /** After a refusal, refused here until then without asking Redis (abusive clients cost nothing). */
  refusedUntil: number
  interval: number
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

/** The same GCRA step as the Lua script (want = need = one increment), over a local clock and map. */
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
 * Rate limits decided in Redis, shared by every replica; busy subjects are served from leases
 * (see LEASE_SHARE) so their requests need no round trip. No replica ever admits a unit Redis
 * did not grant. While Redis is unreachable the same algorithm runs in process (logged once per
 * outage, counted by `store`).
 */
export class RateLimiter {
  private readonly memory = new MemoryGcra()
  private readonly leases = new Map<string, Lease>()
  private readonly decisions
  private readonly redisTakes
  private degraded = false
  private pending: PendingTake[] = []
  /** Takes and give-backs not yet settled (close waits for them). */
  private readonly inFlight = new Set<Promise<void>>()
  private readonly sweeper: ReturnType<typeof setInterval>

  constructor(
    private readonly redis: Redis,
    private readonly policies: RateLimitPolicies,
    private readonly logger: Logger,
    metrics: Metrics,
    private readonly maxLeases = 100_000,
  ) {
    if (!('gcra' in redis)) redis.defineCommand('gcra', { lua: GCRA_SCRIPT })
    if (!('giveBack' in redis)) redis.defineCommand('giveBack', { lua: GIVE_BACK_SCRIPT })
    this.decisions = metrics.counter('ratelimit_decisions_total', 'Rate-limit decisions', [
      'policy',
      'decision',
      'store',
    ])
    this.redisTakes = metrics.counter(
      'ratelimit_redis_takes_total',
      'Rate-limit decisions and leases asked of Redis, by policy (a request served from a lease asks nothing)',
      ['policy'],
    )
    this.sweeper = setInterval(() => {
      this.memory.sweep()
      void this.endLeases(Date.now())
    }, LEASE_TTL_MS)
    this.sweeper.unref()
  }

  /**
   * Counts `cost` units (one request, or e.g. one per invited user) of `subject` against
   * `policyName`; a cost above the limit is charged as the limit, so a full quota still admits it.
   * Never throws.
   */
  async consume(policyName: PolicyName, subject: string, cost = 1): Promise<RateLimitDecision> {
    const policy = this.policies[policyName]
    const key = `ratelimit:${policyName}:${subject}`
    const now = Date.now()
    const units = Math.min(Math.max(1, cost), policy.limit)
    const lease = units === 1 ? this.leases.get(key) : undefined
    if (lease && now - lease.grantedAt >= LEASE_TTL_MS) this.endLease(key, lease)
    else if (lease) {
      const local = this.fromLease(policyName, policy, key, lease, now)
      if (local) return local
    }
    let store: RateLimitDecision['store'] = 'redis'
    let result: GcraResult
    try {
      if (this.redis.status !== 'ready') throw new Error(`redis is ${this.redis.status}`)
      result =
        units === 1
          ? await this.takeForLease(policyName, key, policy, now)
          : await this.take(policyName, key, policy, units, units)
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
      const { interval, tolerance } = gcraOf(policy)
      result = this.memory.take(key, interval * units, tolerance)
    }
    const [granted, untilRefillMs, retryAfterMs] = result
    const { interval, tolerance } = gcraOf(policy)
    return this.record(policyName, {
      policy: policyName,
      limit: policy.limit,
      windowSeconds: policy.windowSeconds,
      allowed: granted > 0,
      remaining: granted > 0 ? Math.max(0, Math.floor((tolerance - untilRefillMs) / interval)) : 0,
      resetSeconds: Math.ceil(untilRefillMs / 1000),
      retryAfterSeconds: granted > 0 ? 0 : Math.max(1, Math.ceil(retryAfterMs / 1000)),
      store,
    })
  }

  /**
   * Charges every policy at once and returns the RateLimit headers of the decision the client is
   * told about: a denial if any (thrown as the 429 problem), else the policy closest to its limit.
   */
  async enforce(charges: readonly RateLimitCharge[]): Promise<Record<string, string>> {
    return this.answer(
      await Promise.all(charges.map((charge) => this.consume(charge.policy, charge.subject, charge.cost))),
    )
  }

  /**
   * `enforce` without waiting, when leases decide every charge (the steady state of a busy
   * client); undefined, with nothing charged, when any charge needs Redis.
   */
  enforceNow(charges: readonly RateLimitCharge[]): Record<string, string> | undefined {
    const now = Date.now()
    const leased: { charge: RateLimitCharge; key: string; lease: Lease }[] = []
    for (const charge of charges) {
      const key = `ratelimit:${charge.policy}:${charge.subject}`
      const lease = (charge.cost ?? 1) <= 1 ? this.leases.get(key) : undefined
      if (!lease || now - lease.grantedAt >= LEASE_TTL_MS || (lease.units === 0 && lease.refusedUntil <= now))
        return undefined
      leased.push({ charge, key, lease })
    }
    return this.answer(
      leased.map(
        ({ charge, key, lease }) =>
          this.fromLease(charge.policy, this.policies[charge.policy], key, lease, now) as RateLimitDecision,
      ),
    )
  }

  /** The RateLimit headers of the decision the client is told about; throws the 429 problem of a denial. */
  private answer(decisions: readonly RateLimitDecision[]): Record<string, string> {
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

  /** Stops the sweeper and gives every lease's unused units back to Redis (waiting up to a second). */
  async close(): Promise<void> {
    clearInterval(this.sweeper)
    await this.endLeases(Number.POSITIVE_INFINITY)
    const deadline = Date.now() + 1_000
    while ((this.inFlight.size > 0 || this.pending.length > 0) && Date.now() < deadline)
      await Promise.race([Promise.all(this.inFlight), Bun.sleep(10)])
  }

  /**
   * One unit for this request and, for a subject that used up its last lease within the TTL,
   * more for the ones after it: the extra units go into the lease.
   */
  private async takeForLease(
    policyName: PolicyName,
    key: string,
    policy: RateLimitPolicy,
    now: number,
  ): Promise<GcraResult> {
    let lease = this.leases.get(key)
    const busy = lease !== undefined && now - lease.grantedAt < LEASE_TTL_MS
    if (!lease) {
      if (this.leases.size >= this.maxLeases) void this.endLeases(now)
      lease = {
        units: 0,
        size: 1,
        pending: 0,
        grantedAt: now,
        freeAfterGrant: 0,
        untilRefillMs: 0,
        refusedUntil: 0,
        interval: gcraOf(policy).interval,
      }
      this.leases.set(key, lease)
    } else lease.size = busy ? Math.min(maxLeaseUnits(policy), lease.size * 2) : 1
    // Requests arriving together while a take is in flight ask for themselves only.
    const want = Math.max(1, lease.size - lease.units - lease.pending)
    lease.pending += want
    let result: GcraResult
    try {
      result = await this.take(policyName, key, policy, want, 1)
    } finally {
      lease.pending -= want
    }
    this.granted(lease, result, policy, Date.now())
    // This request takes one of the granted units, or (refused in the same call that topped the
    // lease up) one of the lease's.
    const refusedButLeased = result[0] === 0 && lease.units > 0
    if (result[0] > 0 || refusedButLeased) lease.units--
    this.giveBackIfEnded(key, lease)
    return refusedButLeased ? [1, lease.untilRefillMs, 0] : result
  }

  /** Tops a busy subject's lease up in the background, before its requests run out of units. */
  private async refill(policyName: PolicyName, key: string, lease: Lease): Promise<void> {
    const policy = this.policies[policyName]
    const want = lease.size - lease.units
    lease.pending += want
    try {
      const result = await this.take(policyName, key, policy, want, 1)
      this.granted(lease, result, policy, Date.now())
      this.giveBackIfEnded(key, lease)
    } catch {
      // Redis failed: the next request without units decides (and falls back) itself.
    } finally {
      lease.pending -= want
    }
  }

  private granted(lease: Lease, result: GcraResult, policy: RateLimitPolicy, now: number): void {
    const [granted, untilRefillMs, retryAfterMs] = result
    if (granted === 0) {
      lease.refusedUntil = now + retryAfterMs
      lease.size = 1
      return
    }
    const { interval, tolerance } = gcraOf(policy)
    lease.units += granted
    lease.refusedUntil = 0
    lease.grantedAt = now
    lease.untilRefillMs = untilRefillMs
    lease.freeAfterGrant = Math.max(0, Math.floor((tolerance - untilRefillMs) / interval))
  }

  /** A unit from a live lease, or its cached refusal; undefined when the lease can decide neither. */
  private fromLease(
    policyName: PolicyName,
    policy: RateLimitPolicy,
    key: string,
    lease: Lease,
    now: number,
  ): RateLimitDecision | undefined {
    if (lease.units > 0) {
      lease.units--
      if (lease.size > 1 && lease.pending === 0 && lease.units * 2 <= lease.size)
        void this.refill(policyName, key, lease)
      return this.decided(policyName, policy, lease, now, true)
    }
    if (lease.refusedUntil > now) return this.decided(policyName, policy, lease, now, false)
    return undefined
  }

  /** A decision served from a lease (allowed) or from its cached refusal; its units came from Redis. */
  private decided(
    policyName: PolicyName,
    policy: RateLimitPolicy,
    lease: Lease,
    now: number,
    allowed: boolean,
  ): RateLimitDecision {
    const refused = !allowed
    const elapsed = now - lease.grantedAt
    return this.record(policyName, {
      policy: policyName,
      limit: policy.limit,
      windowSeconds: policy.windowSeconds,
      allowed: !refused,
      remaining: refused ? 0 : Math.min(policy.limit, lease.units + lease.freeAfterGrant),
      resetSeconds: Math.max(0, Math.ceil((lease.untilRefillMs - elapsed) / 1000)),
      retryAfterSeconds: refused ? Math.max(1, Math.ceil((lease.refusedUntil - now) / 1000)) : 0,
      store: 'redis',
    })
  }

  private record(policyName: PolicyName, decision: RateLimitDecision): RateLimitDecision {
    this.decisions.inc({
      policy: policyName,
      decision: decision.allowed ? 'allow' : 'deny',
      store: decision.store,
    })
    return decision
  }

  /** Units granted to a lease that ended while its take was in flight (close) go straight back. */
  private giveBackIfEnded(key: string, lease: Lease): void {
    if (this.leases.get(key) !== lease) this.endLease(key, lease)
  }

  /** Forgets a lease and gives its unused units back (best effort: unreturned units refill anyway). */
  private endLease(key: string, lease: Lease): void {
    if (this.leases.get(key) === lease) this.leases.delete(key)
    const units = lease.units
    lease.units = 0
    if (units > 0 && this.redis.status === 'ready')
      this.track((this.redis as RedisWithGcra).giveBack(1, key, units, lease.interval))
  }

  /** Keeps a Redis call in `inFlight` until it settles, so close() can wait for it. */
  private track(call: Promise<unknown>): void {
    const settled = call.then(
      () => undefined,
      () => undefined,
    )
    this.inFlight.add(settled)
    void settled.finally(() => this.inFlight.delete(settled))
  }

  /** Ends the leases older than the TTL at `now` (all of them with +Infinity), in one call per batch. */
  private async endLeases(now: number): Promise<void> {
    const ended: [string, Lease][] = []
    // On close (now = +Infinity) leases with a take in flight end too: their units come back when it lands.
    for (const [key, lease] of this.leases)
      if (now === Number.POSITIVE_INFINITY || (lease.pending === 0 && now - lease.grantedAt >= LEASE_TTL_MS))
        ended.push([key, lease])
    for (const [key] of ended) this.leases.delete(key)
    const unused = ended
      .filter(([, lease]) => lease.units > 0)
      .map(([key, lease]) => {
        const units = lease.units
        lease.units = 0
        return { key, units, interval: lease.interval }
      })
    if (unused.length === 0 || this.redis.status !== 'ready') return
    for (let start = 0; start < unused.length; start += MAX_BATCH) {
      const batch = unused.slice(start, start + MAX_BATCH)
      const call = (this.redis as RedisWithGcra).giveBack(
        batch.length,
        ...batch.map((lease) => lease.key),
        ...batch.flatMap((lease) => [lease.units, lease.interval]),
      )
      this.track(call)
      await call.catch(() => undefined)
    }
  }

  /**
   * Queues the take for the next script call: every take that reaches the limiter in one
   * event-loop turn is decided by a single atomic call (one round trip and one client command
   * instead of one per request).
   */
  private take(
    policyName: PolicyName,
    key: string,
    policy: RateLimitPolicy,
    want: number,
    need: number,
  ): Promise<GcraResult> {
    this.redisTakes.inc({ policy: policyName })
    const { interval, tolerance } = gcraOf(policy)
    const taken = new Promise<GcraResult>((resolve, reject) => {
      this.pending.push({ key, interval, tolerance, want, need, resolve, reject })
      if (this.pending.length === 1) setImmediate(() => this.flush())
    })
    this.track(taken)
    return taken
  }

  private flush(): void {
    const pending = this.pending
    this.pending = []
    for (let start = 0; start < pending.length; start += MAX_BATCH) {
      const batch = pending.slice(start, start + MAX_BATCH)
      ;(this.redis as RedisWithGcra)
        .gcra(
          batch.length,
          ...batch.map((take) => take.key),
          ...batch.flatMap((take) => [take.interval, take.tolerance, take.want, take.need]),
        )
        .then(
          (flat) => {
            for (const [index, take] of batch.entries())
              take.resolve([flat[index * 3] ?? 0, flat[index * 3 + 1] ?? 0, flat[index * 3 + 2] ?? 0])
          },
          (error: unknown) => {
            for (const take of batch) take.reject(error)
          },
        )
    }
  }
}

/** A policy's GCRA parameters in ms: the window (burst tolerance) and the interval one unit costs. */
function gcraOf(policy: RateLimitPolicy): { interval: number; tolerance: number } {
  const tolerance = policy.windowSeconds * 1000
  return { interval: tolerance / policy.limit, tolerance }
}
