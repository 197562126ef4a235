import { Elysia } from 'elysia'
import {
  createLocalJWKSet,
  type FetchImplementation,
  type FlattenedJWSInput,
  type JSONWebKeySet,
  type JWSHeaderParameters,
  type JWTPayload,
  errors as joseErrors,
  jwtVerify,
} from 'jose'
import { HttpProblem, problems } from './errors'
import type { Logger } from './logger'
import type { Metrics } from './metrics'

/** The caller, as proven by a verified access token. */
export type Identity = {
  userId: string
  sessionId: string
  tokenId: string
  roles: string[]
  emailVerified: boolean
  email?: string
  /** Seconds since epoch. */
  issuedAt: number
  expiresAt: number
}

export const ACCESS_TOKEN_ALGORITHMS = ['EdDSA', 'ES256']

export const DEFAULT_JWKS_CACHE_MAX_AGE_MS = 10 * 60_000

export type VerifierOptions = {
  /** A JWKS URL (fetched, cached, refetched on an unknown `kid` at most every cooldown) or a key set. */
  jwks: URL | JSONWebKeySet
  issuer: string
  audience: string
  /** Extra rejection, e.g. the gateway's session-revocation check. */
  isRevoked?: (identity: Identity) => Promise<boolean> | boolean
  cooldownMs?: number
  /** Age after which the remote JWKS is refreshed in the background (the old keys stay in use meanwhile). */
  cacheMaxAgeMs?: number
  /** Fetches the remote JWKS (default: global fetch), e.g. to count fetches. */
  jwksFetch?: FetchImplementation
  /** Where failed JWKS refreshes are logged. */
  logger?: Logger
  /** Where failed JWKS refreshes are counted (`jwks_refresh_failures_total`). */
  metrics?: Metrics
}

/** The remote JWKS could not be fetched and the cached keys do not hold the token's key. */
class JwksUnavailableError extends Error {
  override name = 'JwksUnavailableError'
  constructor(readonly retryAfterSeconds: number) {
    super('the JWKS cannot be fetched')
  }
}

type KeyLookup = ReturnType<typeof createLocalJWKSet>

type RemoteKeySetOptions = {
  cooldownMs: number
  cacheMaxAgeMs: number
  timeoutMs: number
  fetch: FetchImplementation
  onFailure: (error: unknown) => void
}

/**
 * The auth service's JWKS, cached. Unlike jose's createRemoteJWKSet, a failed refetch never
 * drops the keys it already has: an auth outage must not log every user out. Stale keys are
 * refreshed in the background; only a `kid` the cache lacks waits for a fetch, and if that
 * fetch fails the caller gets JwksUnavailableError (a 503, not a 401: the token may be fine).
 */
class RemoteKeySet {
  private keys: KeyLookup | undefined
  private fetchedAt = 0
  private attemptedAt = Number.NEGATIVE_INFINITY
  private failing = false
  private pending: Promise<void> | undefined

  constructor(
    private readonly url: URL,
    private readonly options: RemoteKeySetOptions,
  ) {}

  readonly getKey = async (header: JWSHeaderParameters, token: FlattenedJWSInput) => {
    // Without keys yet: join the fetch in flight, else fetch at most once per cooldown (auth down
    // at start-up must not turn every request into a JWKS fetch).
    if (!this.keys) {
      if (this.pending || this.mayFetch()) await this.refresh()
    } else if (Date.now() - this.fetchedAt >= this.options.cacheMaxAgeMs && this.mayFetch()) {
      // Keep answering with the cached keys; the refresh's failure is logged and counted.
      void this.refresh()
    }
    const keys = this.keys
    if (!keys) throw this.unavailable()
    try {
      return await keys(header, token)
    } catch (error) {
      if (!(error instanceof joseErrors.JWKSNoMatchingKey)) throw error
      // A new signing key (rotation) is published before tokens signed with it arrive.
      if (this.mayFetch()) await this.refresh()
      if (this.failing) throw this.unavailable()
      const refreshed = this.keys
      if (!refreshed || refreshed === keys) throw error
      return refreshed(header, token)
    }
  }

  private mayFetch(): boolean {
    return Date.now() - this.attemptedAt >= this.options.cooldownMs
  }

  private unavailable(): JwksUnavailableError {
    const waitMs = this.options.cooldownMs - (Date.now() - this.attemptedAt)
    return new JwksUnavailableError(Math.max(1, Math.ceil(waitMs / 1000)))
  }

  /** One fetch at a time; never rejects (the outcome is in `failing`). */
  private refresh(): Promise<void> {
    this.pending ??= this.load().finally(() => {
      this.pending = undefined
    })
    return this.pending
  }

  private async load(): Promise<void> {
    this.attemptedAt = Date.now()
    try {
      const response = await this.options.fetch(this.url.href, {
        method: 'GET',
        headers: new Headers({ accept: 'application/json' }),
        redirect: 'manual',
        signal: AbortSignal.timeout(this.options.timeoutMs),
      })
      if (response.status !== 200) throw new Error(`JWKS answered HTTP ${response.status}`)
      // createLocalJWKSet validates the shape, so a malformed answer keeps the old keys too.
      this.keys = createLocalJWKSet((await response.json()) as JSONWebKeySet)
      this.fetchedAt = Date.now()
      this.failing = false
    } catch (error) {
      this.failing = true
      this.options.onFailure(error)
    }
  }
}

/** Verifies access tokens locally against the auth service's public keys; no shared secret. */
export class AccessTokenVerifier {
  private readonly keys: KeyLookup | RemoteKeySet['getKey']

  constructor(private readonly options: VerifierOptions) {
    if (options.jwks instanceof URL) {
      const url = options.jwks
      const failures = options.metrics?.counter(
        'jwks_refresh_failures_total',
        'Failed fetches of the auth JWKS (the last good keys stay in use)',
      )
      const log = options.logger?.child({ component: 'jwks' })
      this.keys = new RemoteKeySet(url, {
        cooldownMs: options.cooldownMs ?? 30_000,
        cacheMaxAgeMs: options.cacheMaxAgeMs ?? DEFAULT_JWKS_CACHE_MAX_AGE_MS,
        timeoutMs: 2_000,
        fetch: options.jwksFetch ?? ((input, init) => fetch(input, init)),
        onFailure: (error) => {
          failures?.inc()
          log?.warn({ err: error, jwks: url.href }, 'JWKS refresh failed, keeping the last keys')
        },
      }).getKey
    } else {
      this.keys = createLocalJWKSet(options.jwks)
    }
  }

  /**
   * Returns the identity or throws a 401 problem (never says which check failed beyond a short
   * reason); a 503 problem with Retry-After when the token's key cannot be fetched right now.
   */
  async verify(token: string): Promise<Identity> {
    let payload: JWTPayload
    try {
      ;({ payload } = await jwtVerify(token, this.keys, {
        issuer: this.options.issuer,
        audience: this.options.audience,
        algorithms: ACCESS_TOKEN_ALGORITHMS,
        requiredClaims: ['sub', 'iat', 'exp', 'jti', 'sid'],
      }))
    } catch (error) {
      if (error instanceof JwksUnavailableError) {
        throw new HttpProblem(
          503,
          'Service Unavailable',
          'The keys to verify the access token cannot be fetched; retry later',
          'service-unavailable',
          undefined,
          { 'retry-after': String(error.retryAfterSeconds) },
        )
      }
      throw problems.unauthorized(
        error instanceof joseErrors.JWTExpired
          ? 'The access token has expired'
          : 'The access token is invalid',
      )
    }
    const identity: Identity = {
      userId: String(payload.sub),
      sessionId: String(payload.sid),
      tokenId: String(payload.jti),
      roles: Array.isArray(payload.roles) ? payload.roles.map(String) : [],
      emailVerified: payload.email_verified === true,
      ...(typeof payload.email === 'string' ? { email: payload.email } : {}),
      issuedAt: Number(payload.iat),
      expiresAt: Number(payload.exp),
    }
    if (await this.options.isRevoked?.(identity)) throw problems.unauthorized('The session has been revoked')
    return identity
  }
}

export function bearerToken(authorization: string | null | undefined): string | undefined {
  if (!authorization) return undefined
  const match = /^Bearer\s+([A-Za-z0-9._~+/-]+=*)$/i.exec(authorization.trim())
  return match?.[1]
}

/**
 * Adds the `auth: true` route option: the route resolves `identity` from a verified bearer
 * token or answers a 401 problem. Services trust nothing else (no identity headers). The
 * token is checked in the transform phase, before schema validation, so an anonymous caller
 * learns nothing about a route's input rules (401, not 422).
 */
export function authPlugin(verifier: AccessTokenVerifier) {
  const identities = new WeakMap<Request, Identity>()
  return new Elysia({ name: 'parley.auth' }).macro({
    auth: {
      detail: { security: [{ bearer: [] }] },
      async transform({ request }) {
        const token = bearerToken(request.headers.get('authorization'))
        if (!token) throw problems.unauthorized()
        identities.set(request, await verifier.verify(token))
      },
      resolve({ request }) {
        const identity = identities.get(request)
        if (!identity) throw problems.unauthorized()
        return { identity }
      },
    },
  })
}
