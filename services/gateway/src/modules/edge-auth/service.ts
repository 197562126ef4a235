import { type AccessTokenVerifier, type Identity, type Logger, type Metrics, problems } from '@parley/common'
import type { Redis } from '@parley/common/redis'
import { type EventData, type LimitedRoute, type PublicRoute, ROSTER } from '@parley/contracts'
import type { PolicyName } from '../rate-limit/model'
import type { RateLimitCharge, RateLimiter } from '../rate-limit/service'

/** A policy a request is charged against; `perItemOf` charges one unit per entry of that body array. */
export type PolicyCharge = { policy: PolicyName; perItemOf?: string }

/** How the edge treats a proxied route: who may call it and which rate-limit policies count it. */
export type RouteAccess =
  | { anonymous: true; policy: PolicyName; keyedByEmail: boolean }
  | { anonymous: false; charges: readonly PolicyCharge[] }

/** `METHOD path` → policy of every route that needs no token, from the roster. */
const PUBLIC_ROUTES: ReadonlyMap<string, { policy: PolicyName; keyedByEmail: boolean }> = new Map(
  ROSTER.flatMap((service): readonly PublicRoute[] => service.publicRoutes).map((route) => [
    `${route.method} ${route.path.toLowerCase()}`,
    { policy: route.policy, keyedByEmail: route.keyedByEmail ?? false },
  ]),
)

const AUTHENTICATED: readonly PolicyCharge[] = [{ policy: 'authenticated' }]

/** Authenticated routes with limits of their own, from the roster (`:name` matches one segment). */
const LIMITED_ROUTES = ROSTER.flatMap((service): readonly LimitedRoute[] =>
  'limitedRoutes' in service ? service.limitedRoutes : [],
).map((route) => ({
  method: route.method,
  pattern: new RegExp(`^${route.path.toLowerCase().replace(/:[^/]+/g, '[^/]+')}$`),
  charge: { policy: route.policy, ...(route.perItemOf ? { perItemOf: route.perItemOf } : {}) },
}))

/**
 * `path` is the canonical service path (public path minus /api/v1). Routes are matched without
 * regard to case, so no spelling a service might accept escapes its limit; services themselves
 * match case-sensitively. Anything not on the public allow-list needs a token.
 */
export function routeAccess(method: string, path: string): RouteAccess {
  const folded = path.toLowerCase()
  const entry = PUBLIC_ROUTES.get(`${method} ${folded}`)
  if (entry) return { anonymous: true, ...entry }
  const limited = LIMITED_ROUTES.filter((route) => route.method === method && route.pattern.test(folded))
  if (limited.length === 0) return { anonymous: false, charges: AUTHENTICATED }
  return { anonymous: false, charges: [...AUTHENTICATED, ...limited.map((route) => route.charge)] }
}

/** Keeps the larger revocation instant and refreshes the key's lifetime. */
const RAISE_SCRIPT = `
local current = tonumber(redis.call('GET', KEYS[1]))
if current and current >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
`

type RedisWithRaise = Redis & { raiseRevocation(key: string, value: string, ttl: number): Promise<number> }

export function revocationKey(userId: string): string {
  return `revoked:${userId}`
}

export function sessionRevocationKey(sessionId: string): string {
  return `revoked-session:${sessionId}`
}

/** All of a user's sessions up to an instant (`user.sessions_revoked`), or one session (`user.session_revoked`). */
export type Revocation =
  | { kind: 'user'; userId: string; revokedBefore: Date }
  | { kind: 'session'; userId: string; sessionId: string }

export function userRevocation(data: EventData<'user.sessions_revoked'>): Revocation {
  return { kind: 'user', userId: data.userId, revokedBefore: new Date(data.revokedBefore) }
}

export function sessionRevocation(data: EventData<'user.session_revoked'>): Revocation {
  return { kind: 'session', userId: data.userId, sessionId: data.sessionId }
}

type Lookup = { revokedBefore: number | undefined; sessionRevoked: boolean; checkedAt: number }

/**
 * Session revocations. `revoked:<userId>` holds the instant, in epoch seconds with millisecond
 * decimals, before which the user's access tokens are rejected; `revoked-session:<sid>` marks
 * one session family whose access tokens are rejected whatever their age. Redis shares both
 * across replicas and with replicas started later; every replica also learns each revocation
 * from its own fan-out queue and keeps it in memory, so it applies at once on every replica
 * and while Redis is down. A token's lookup in Redis is reused for `cacheMs`, so a busy client
 * costs one Redis read per `cacheMs`, not one per request.
 */
export class RevocationStore {
  private readonly users = new Map<string, { revokedBefore: number; expiresAt: number }>()
  private readonly sessions = new Map<string, number>()
  private readonly lookups = new Map<string, Lookup>()
  private readonly recorded

  constructor(
    private readonly redis: Redis,
    private readonly options: { ttlSeconds: number; cacheMs: number },
    private readonly logger: Logger,
    metrics: Metrics,
    private readonly maxEntries = 100_000,
  ) {
    if (!('raiseRevocation' in redis))
      redis.defineCommand('raiseRevocation', { numberOfKeys: 1, lua: RAISE_SCRIPT })
    this.recorded = metrics.counter(
      'gateway_revocations_recorded_total',
      'Session revocations recorded, by kind (user, session) and store (memory of this replica, redis)',
      ['kind', 'store'],
    )
  }

  /** Records a revocation in this replica's memory only (the fan-out path). */
  remember(revocation: Revocation): void {
    this.recorded.inc({ kind: revocation.kind, store: 'memory' })
    const expiresAt = Date.now() + this.options.ttlSeconds * 1000
    if (revocation.kind === 'session') {
      bounded(this.sessions, this.maxEntries)
      this.sessions.set(revocation.sessionId, expiresAt)
      return
    }
    const seconds = revocation.revokedBefore.getTime() / 1000
    const current = this.userRevokedBefore(revocation.userId)
    if (current === undefined || current < seconds) {
      bounded(this.users, this.maxEntries)
      this.users.set(revocation.userId, { revokedBefore: seconds, expiresAt })
    }
    // Cached Redis lookups need no invalidation: isRevoked combines them with this memory.
  }

  /** Remembers the revocation and records it in Redis; throws if Redis did not take it (the consumer retries). */
  async revoke(revocation: Revocation): Promise<void> {
    this.remember(revocation)
    const ttl = this.options.ttlSeconds
    if (revocation.kind === 'session')
      await this.redis.set(sessionRevocationKey(revocation.sessionId), '1', 'EX', ttl)
    else
      await (this.redis as RedisWithRaise).raiseRevocation(
        revocationKey(revocation.userId),
        String(revocation.revokedBefore.getTime() / 1000),
        ttl,
      )
    this.recorded.inc({ kind: revocation.kind, store: 'redis' })
  }

  async isRevoked(identity: Identity): Promise<boolean> {
    if (this.sessionRevoked(identity.sessionId)) return true
    const lookup = await this.lookup(identity)
    if (lookup?.sessionRevoked) return true
    const revokedBefore = Math.max(this.userRevokedBefore(identity.userId) ?? 0, lookup?.revokedBefore ?? 0)
    // `iat` has second resolution: a token issued later within the revocation's second is
    // rejected too (fail closed, as the contract's "iat before revokedBefore" reads).
    return identity.issuedAt < revokedBefore
  }

  /**
   * `isRevoked` from memory alone: undefined when the answer needs a Redis read (no lookup of
   * this session within `cacheMs` while Redis is up).
   */
  isRevokedNow(identity: Identity): boolean | undefined {
    if (this.sessionRevoked(identity.sessionId)) return true
    const lookup = this.lookups.get(identity.sessionId)
    const fresh = lookup !== undefined && Date.now() - lookup.checkedAt < this.options.cacheMs
    if (!fresh && this.redis.status === 'ready') return undefined
    if (lookup?.sessionRevoked) return true
    const revokedBefore = Math.max(this.userRevokedBefore(identity.userId) ?? 0, lookup?.revokedBefore ?? 0)
    return identity.issuedAt < revokedBefore
  }

  /** Both keys of a token in one read, cached per session. */
  private async lookup(identity: Identity): Promise<Lookup | undefined> {
    const now = Date.now()
    const cached = this.lookups.get(identity.sessionId)
    if (cached && now - cached.checkedAt < this.options.cacheMs) return cached
    if (this.redis.status !== 'ready') return cached
    try {
      const [user, session] = await this.redis.mget(
        revocationKey(identity.userId),
        sessionRevocationKey(identity.sessionId),
      )
      const lookup: Lookup = {
        revokedBefore: user == null ? undefined : Number(user),
        sessionRevoked: session != null,
        checkedAt: now,
      }
      this.lookups.delete(identity.sessionId)
      bounded(this.lookups, this.maxEntries)
      this.lookups.set(identity.sessionId, lookup)
      return lookup
    } catch (error) {
      this.logger.debug({ err: error instanceof Error ? error.message : error }, 'revocation lookup failed')
      return cached
    }
  }

  private sessionRevoked(sessionId: string): boolean {
    const expiresAt = this.sessions.get(sessionId)
    if (expiresAt === undefined) return false
    if (expiresAt > Date.now()) return true
    this.sessions.delete(sessionId)
    return false
  }

  private userRevokedBefore(userId: string): number | undefined {
    const entry = this.users.get(userId)
    if (entry && entry.expiresAt <= Date.now()) {
      this.users.delete(userId)
      return undefined
    }
    return entry?.revokedBefore
  }
}

/** Makes room for one more entry by dropping the oldest (maps iterate in insertion order). */
function bounded(map: Map<string, unknown>, maxEntries: number): void {
  if (map.size >= maxEntries) map.delete(map.keys().next().value as string)
}

/**
 * Edge authentication: the token's signature and claims are verified once and remembered
 * until the token expires (bounded), so a client's steady stream of requests costs no
 * repeated signature checks; the revocation check runs on every request, separately, so
 * the proxy can overlap it with the rate-limit call.
 */
export class EdgeAuth {
  private readonly verified = new Map<string, Identity>()

  constructor(
    private readonly verifier: AccessTokenVerifier,
    private readonly revocations: RevocationStore,
    private readonly maxCached = 10_000,
  ) {}

  /** The identity a token proves (401 problem when it is invalid or expired); not the revocation check. */
  async identify(token: string): Promise<Identity> {
    const cached = this.verified.get(token)
    if (cached && cached.expiresAt > Date.now() / 1000) return cached
    if (cached) this.verified.delete(token)
    const identity = await this.verifier.verify(token)
    if (this.verified.size >= this.maxCached)
      this.verified.delete(this.verified.keys().next().value as string)
    this.verified.set(token, identity)
    return identity
  }

  /** The identity of a token verified before and not yet expired; undefined when it must be verified. */
  identifyNow(token: string): Identity | undefined {
    const cached = this.verified.get(token)
    return cached && cached.expiresAt > Date.now() / 1000 ? cached : undefined
  }

  /** Whether the token's session, or all of the user's sessions since it was issued, were revoked. */
  isRevoked(identity: Identity): Promise<boolean> {
    return this.revocations.isRevoked(identity)
  }

  /** Throws a 401 problem when the token's session was revoked. */
  async assertNotRevoked(identity: Identity): Promise<void> {
    if (await this.revocations.isRevoked(identity))
      throw problems.unauthorized('The session has been revoked')
  }

  /**
   * Everything a bearer route of the edge does before its work: the token verified (401), then
   * the revocation check overlapped with the caller's rate-limit charges (both Redis round
   * trips; a revoked caller's request is counted, harmlessly), 429 past a limit. Returns the
   * identity and the RateLimit headers to answer with.
   */
  /**
   * `admit` without waiting, when memory decides all of it: a token verified before, its
   * revocation state cached, every charge decided by a lease. Undefined (nothing charged) otherwise.
   */
  admitNow(
    token: string | undefined,
    limiter: RateLimiter,
    charges: (identity: Identity) => RateLimitCharge[],
  ): { identity: Identity; limitHeaders: Record<string, string> } | undefined {
    if (!token) throw problems.unauthorized()
    const identity = this.identifyNow(token)
    if (!identity) return undefined
    const revoked = this.revocations.isRevokedNow(identity)
    if (revoked === undefined) return undefined
    const limitHeaders = limiter.enforceNow(charges(identity))
    if (!limitHeaders) return undefined
    // As in admit, a revoked caller's request is counted, then refused.
    if (revoked) throw problems.unauthorized('The session has been revoked')
    return { identity, limitHeaders }
  }

  async admit(
    token: string | undefined,
    limiter: RateLimiter,
    charges: (identity: Identity) => RateLimitCharge[] | Promise<RateLimitCharge[]>,
  ): Promise<{ identity: Identity; limitHeaders: Record<string, string> }> {
    if (!token) throw problems.unauthorized()
    const identity = await this.identify(token)
    const [limitHeaders] = await Promise.all([
      (async () => limiter.enforce(await charges(identity)))(),
      this.assertNotRevoked(identity),
    ])
    return { identity, limitHeaders }
  }
}
