import type { Identity, Logger } from '@parley/common'
import type { Redis } from '@parley/common/redis'
import type { PolicyName } from '../rate-limit/model'

/** How the edge treats a proxied route: who may call it and which rate-limit policy counts it. */
export type RouteAccess =
  | { anonymous: true; policy: PolicyName; keyedByEmail: boolean }
  | { anonymous: false; policy: PolicyName }

const PUBLIC_ROUTES: Record<string, { policy: PolicyName; keyedByEmail?: boolean }> = {
  'POST /auth/register': { policy: 'register' },
  'POST /auth/login': { policy: 'login', keyedByEmail: true },
  'POST /auth/refresh': { policy: 'refresh' },
  'GET /auth/.well-known/jwks.json': { policy: 'anonymous' },
  'HEAD /auth/.well-known/jwks.json': { policy: 'anonymous' },
}

/** `path` is the service path (public path minus /api/v1). Anything not on the allow-list needs a token. */
export function routeAccess(method: string, path: string): RouteAccess {
  const entry = PUBLIC_ROUTES[`${method} ${path}`]
  if (entry) return { anonymous: true, policy: entry.policy, keyedByEmail: entry.keyedByEmail ?? false }
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
 * rejected. Redis shares it across replicas; an in-process copy answers while Redis is down.
 */
export class RevocationStore {
  private readonly known = new Map<string, { revokedBefore: number; expiresAt: number }>()

  constructor(
    private readonly redis: Redis,
    private readonly ttlSeconds: number,
    private readonly logger: Logger,
    private readonly maxKnown = 100_000,
  ) {
    if (!('raiseRevocation' in redis))
      redis.defineCommand('raiseRevocation', { numberOfKeys: 1, lua: RAISE_SCRIPT })
  }

  /** Records a revocation; throws if Redis did not take it (the consumer retries), after remembering it locally. */
  async revoke(userId: string, revokedBefore: Date): Promise<void> {
    const seconds = revokedBefore.getTime() / 1000
    this.remember(userId, seconds)
    await (this.redis as RedisWithRaise).raiseRevocation(
      revocationKey(userId),
      String(seconds),
      this.ttlSeconds,
    )
  }

  async isRevoked(identity: Identity): Promise<boolean> {
    let revokedBefore = this.local(identity.userId)
    if (this.redis.status === 'ready') {
      try {
        const stored = await this.redis.get(revocationKey(identity.userId))
        if (stored !== null) {
          const seconds = Number(stored)
          this.remember(identity.userId, seconds)
          revokedBefore = Math.max(revokedBefore ?? 0, seconds)
        }
      } catch (error) {
        this.logger.debug({ err: error instanceof Error ? error.message : error }, 'revocation lookup failed')
      }
    }
    // `iat` has second resolution: a token issued later within the revocation's second is
    // rejected too (fail closed, as the contract's "iat before revokedBefore" reads).
    return revokedBefore !== undefined && identity.issuedAt < revokedBefore
  }

  private local(userId: string): number | undefined {
    const entry = this.known.get(userId)
    if (!entry) return undefined
    if (entry.expiresAt <= Date.now()) {
      this.known.delete(userId)
      return undefined
    }
    return entry.revokedBefore
  }

  private remember(userId: string, revokedBefore: number): void {
    const current = this.local(userId)
    if (current !== undefined && current >= revokedBefore) return
    if (this.known.size >= this.maxKnown) {
      const now = Date.now()
      for (const [key, entry] of this.known) if (entry.expiresAt <= now) this.known.delete(key)
      if (this.known.size >= this.maxKnown) this.known.delete(this.known.keys().next().value as string)
    }
    this.known.set(userId, { revokedBefore, expiresAt: Date.now() + this.ttlSeconds * 1000 })
  }
}
