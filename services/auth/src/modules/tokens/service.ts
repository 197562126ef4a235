import { createHash } from 'node:crypto'

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
