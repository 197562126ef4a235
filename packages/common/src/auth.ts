import { Elysia } from 'elysia'
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  customFetch,
  type FetchImplementation,
  type JSONWebKeySet,
  type JWTPayload,
  errors as joseErrors,
  jwtVerify,
} from 'jose'
import { problems } from './errors'

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

export type VerifierOptions = {
  /** A JWKS URL (fetched, cached, refetched on an unknown `kid` at most every cooldown) or a key set. */
  jwks: URL | JSONWebKeySet
  issuer: string
  audience: string
  /** Extra rejection, e.g. the gateway's session-revocation check. */
  isRevoked?: (identity: Identity) => Promise<boolean> | boolean
  cooldownMs?: number
  /** Fetches the remote JWKS (default: global fetch), e.g. to count fetches. */
  jwksFetch?: FetchImplementation
}

/** Verifies access tokens locally against the auth service's public keys; no shared secret. */
export class AccessTokenVerifier {
  private readonly keys

  constructor(private readonly options: VerifierOptions) {
    this.keys =
      options.jwks instanceof URL
        ? createRemoteJWKSet(options.jwks, {
            cooldownDuration: options.cooldownMs ?? 30_000,
            cacheMaxAge: 10 * 60_000,
            timeoutDuration: 2_000,
            ...(options.jwksFetch ? { [customFetch]: options.jwksFetch } : {}),
          })
        : createLocalJWKSet(options.jwks)
  }

  /** Returns the identity or throws a 401 problem (never says which check failed beyond a short reason). */
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
