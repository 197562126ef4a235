import { type AccessTokenVerifier, type Identity, type Logger, problems } from '@parley/common'
import type { Redis } from '@parley/common/redis'
import { type PublicRoute, ROSTER } from '@parley/contracts'
import type { PolicyName } from '../rate-limit/model'

/** How the edge treats a proxied route: who may call it and which rate-limit policy counts it. */
export type RouteAccess =
  | { anonymous: true; policy: PolicyName; keyedByEmail: boolean }
  | { anonymous: false; policy: PolicyName }

/** `METHOD path` → policy of every route that needs no token, from the roster. */
const PUBLIC_ROUTES: ReadonlyMap<string, { policy: PolicyName; keyedByEmail: boolean }> = new Map(
  ROSTER.flatMap((service): readonly PublicRoute[] => service.publicRoutes).map((route) => [
    `${route.method} ${route.path}`,
    { policy: route.policy, keyedByEmail: route.keyedByEmail ?? false },
  ]),
)

/** `path` is the service path (public path minus /api/v1). Anything not on the allow-list needs a token. */
export function routeAccess(method: string, path: string): RouteAccess {
  const entry = PUBLIC_ROUTES.get(`${method} ${path}`)
  if (entry) return { anonymous: true, ...entry }
  return {
    anonymous: false,
    policy: path.startsWith('/auth/verify-email/') ? 'verification' : 'authenticated',
  }
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

/**
 * Session revocations (`user.sessions_revoked`): `revoked:<userId>` holds the instant, in
 * epoch seconds with millisecond decimals, before which the user's access tokens are
 * rejected. Redis shares it across replicas. Locally, revocations this replica consumed are
 * kept (they answer while Redis is down) and each user's lookup is reused for `cacheMs`, so a
 * busy client costs one Redis read per `cacheMs`, not one per request; another replica's
 * revocation therefore takes effect here within `cacheMs` of reaching Redis.
 */
export class RevocationStore {
  private readonly consumed = new Map<string, { revokedBefore: number; expiresAt: number }>()
  private readonly lookups = new Map<string, { revokedBefore: number | undefined; checkedAt: number }>()

  constructor(
    private readonly redis: Redis,
    private readonly options: { ttlSeconds: number; cacheMs: number },
    private readonly logger: Logger,
    private readonly maxEntries = 100_000,
  ) {
    if (!('raiseRevocation' in redis))
      redis.defineCommand('raiseRevocation', { numberOfKeys: 1, lua: RAISE_SCRIPT })
  }

  /** Records a revocation; throws if Redis did not take it (the consumer retries), after remembering it locally. */
  async revoke(userId: string, revokedBefore: Date): Promise<void> {
    const seconds = revokedBefore.getTime() / 1000
    const current = this.consumedBefore(userId)
    if (current === undefined || current < seconds) {
      if (this.consumed.size >= this.maxEntries)
        this.consumed.delete(this.consumed.keys().next().value as string)
      this.consumed.set(userId, {
        revokedBefore: seconds,
        expiresAt: Date.now() + this.options.ttlSeconds * 1000,
      })
    }
    this.lookups.delete(userId)
    await (this.redis as RedisWithRaise).raiseRevocation(
      revocationKey(userId),
      String(seconds),
      this.options.ttlSeconds,
    )
  }

  async isRevoked(identity: Identity): Promise<boolean> {
    const revokedBefore = Math.max(
      this.consumedBefore(identity.userId) ?? 0,
      (await this.lookup(identity.userId)) ?? 0,
    )
    // `iat` has second resolution: a token issued later within the revocation's second is
    // rejected too (fail closed, as the contract's "iat before revokedBefore" reads).
    return identity.issuedAt < revokedBefore
  }

  private async lookup(userId: string): Promise<number | undefined> {
    const now = Date.now()
    const cached = this.lookups.get(userId)
    if (cached && now - cached.checkedAt < this.options.cacheMs) return cached.revokedBefore
    if (this.redis.status !== 'ready') return cached?.revokedBefore
    try {
      const stored = await this.redis.get(revocationKey(userId))
      const revokedBefore = stored === null ? undefined : Number(stored)
      this.lookups.delete(userId)
      if (this.lookups.size >= this.maxEntries)
        this.lookups.delete(this.lookups.keys().next().value as string)
      this.lookups.set(userId, { revokedBefore, checkedAt: now })
      return revokedBefore
    } catch (error) {
      this.logger.debug({ err: error instanceof Error ? error.message : error }, 'revocation lookup failed')
      return cached?.revokedBefore
    }
  }

  private consumedBefore(userId: string): number | undefined {
    const entry = this.consumed.get(userId)
    if (entry && entry.expiresAt <= Date.now()) {
      this.consumed.delete(userId)
      return undefined
    }
    return entry?.revokedBefore
  }
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

  /** Throws a 401 problem when the user's sessions were revoked after the token was issued. */
  async assertNotRevoked(identity: Identity): Promise<void> {
    if (await this.revocations.isRevoked(identity))
      throw problems.unauthorized('The session has been revoked')
  }

  /** Both checks, for callers with nothing to overlap them with. */
  async authenticate(token: string): Promise<Identity> {
    const identity = await this.identify(token)
    await this.assertNotRevoked(identity)
    return identity
  }
}
