import { hkdfSync } from 'node:crypto'
import { ConfigError, type Logger } from '@parley/common'
import {
  type CryptoKey,
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  importPKCS8,
  importSPKI,
} from 'jose'
import type { Config } from './config'

export const ACCESS_TOKEN_ALGORITHM = 'EdDSA'

/** A public key as served in the JWKS. */
export type PublicJwk = { kty: string; crv: string; x: string; kid: string; alg: string; use: 'sig' }

/** The key that signs access tokens, the public keys verifiers accept, and secrets derived from it. */
export type SigningKeys = {
  kid: string
  privateKey: CryptoKey
  /** Current public key first, then the previous one while a rotation is under way. */
  jwks: { keys: PublicJwk[] }
  /** HMAC key for one-time codes, so a copy of Redis alone cannot brute-force them. */
  codePepper: Buffer
}

/** Kubernetes Secrets and .env files often carry PEM with literal `\n`. */
function pemFromEnv(value: string): string {
  return value.replace(/\\n/g, '\n').trim()
}

async function publicJwk(key: CryptoKey, kid: string | undefined): Promise<PublicJwk> {
  const { kty, crv, x } = await exportJWK(key)
  if (kty !== 'OKP' || crv !== 'Ed25519' || !x) throw new Error('not an Ed25519 key')
  const jwk = { kty, crv, x }
  return { ...jwk, kid: kid ?? (await calculateJwkThumbprint(jwk)), alg: ACCESS_TOKEN_ALGORITHM, use: 'sig' }
}

async function importPrivate(config: Config, logger: Logger): Promise<CryptoKey> {
  if (config.JWT_PRIVATE_KEY) {
    try {
      return await importPKCS8(pemFromEnv(config.JWT_PRIVATE_KEY), ACCESS_TOKEN_ALGORITHM, {
        extractable: true,
      })
    } catch {
      throw new ConfigError('JWT_PRIVATE_KEY', 'must be an Ed25519 private key in PKCS8 PEM')
    }
  }
  if (config.PARLEY_ENV !== 'development') {
    throw new ConfigError(
      'JWT_PRIVATE_KEY',
      'is required when PARLEY_ENV=production (an Ed25519 private key in PKCS8 PEM)',
    )
  }
  logger.warn('JWT_PRIVATE_KEY not set: signing with a key generated for this process (development only)')
  const { privateKey } = await generateKeyPair(ACCESS_TOKEN_ALGORITHM, { crv: 'Ed25519', extractable: true })
  return privateKey
}

async function importPrevious(config: Config): Promise<CryptoKey | undefined> {
  if (!config.JWT_PREVIOUS_PUBLIC_KEY) {
    if (config.JWT_PREVIOUS_KEY_ID)
      throw new ConfigError('JWT_PREVIOUS_PUBLIC_KEY', 'is required with JWT_PREVIOUS_KEY_ID')
    return undefined
  }
  try {
    return await importSPKI(pemFromEnv(config.JWT_PREVIOUS_PUBLIC_KEY), ACCESS_TOKEN_ALGORITHM, {
      extractable: true,
    })
  } catch {
    throw new ConfigError('JWT_PREVIOUS_PUBLIC_KEY', 'must be an Ed25519 public key in SPKI PEM')
  }
}

/**
 * Loads the signing key (a generated one only in development) and the previous public key.
 * Throws a ConfigError naming the variable at fault.
 */
export async function loadSigningKeys(config: Config, logger: Logger): Promise<SigningKeys> {
  const privateKey = await importPrivate(config, logger)
  const current = await publicJwk(privateKey, config.JWT_KEY_ID)
  const keys = [current]
  const previousKey = await importPrevious(config)
  if (previousKey) {
    const previous = await publicJwk(previousKey, config.JWT_PREVIOUS_KEY_ID)
    if (previous.kid === current.kid)
      throw new ConfigError('JWT_PREVIOUS_KEY_ID', 'must differ from the current key id')
    keys.push(previous)
  }
  const pkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', privateKey))
  return {
    kid: current.kid,
    privateKey,
    jwks: { keys },
    codePepper: Buffer.from(hkdfSync('sha256', pkcs8, '', 'parley-auth/verification-code', 32)),
  }
}
