import { createHash, createHmac, hkdfSync } from 'node:crypto'

/** Claims of an access token besides `iss`, `aud` and `iat`, which the signer adds. */
export type AccessClaims = {
  sub: string
  sid: string
  jti: string
  roles: string[]
  email_verified: boolean
  email: string
  /** Seconds since epoch. */
  exp: number
}

/** What a login, registration or refresh hands out; the route signs `claims` into the access token. */
export type IssuedSession = {
  claims: AccessClaims
  refreshToken: string
  refreshExpiresIn: number
}

const REFRESH_TOKEN_BYTES = 32

/** 256 random bits, base64url: opaque, and long enough that an unsalted hash is safe to store. */
export function newRefreshToken(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(REFRESH_TOKEN_BYTES))).toString('base64url')
}

export function hashRefreshToken(token: string): string {
  return createHash('sha256').update(token).digest('hex')
}

/**
 * The successor of a refresh token: HMAC of it under a server secret. Deterministic, so a
 * retried refresh (inside the grace window) recomputes the successor it was already given,
 * and the database still holds nothing but hashes. The secret is what makes it safe: someone
 * holding an old token cannot compute its descendants offline, but must present it, which
 * outside the window is reuse and revokes the family.
 */
export function successorRefreshToken(secret: Buffer, presented: string): string {
  return createHmac('sha256', secret).update(presented).digest('base64url')
}

/** The successor HMAC key, derived from the signing key (like the code pepper), so replicas agree. */
export async function refreshSuccessorSecret(privateKey: CryptoKey): Promise<Buffer> {
  const pkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', privateKey))
  return Buffer.from(hkdfSync('sha256', pkcs8, '', 'parley-auth/refresh-successor', 32))
}
