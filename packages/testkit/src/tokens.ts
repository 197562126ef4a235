import { exportJWK, generateKeyPair, type JSONWebKeySet, SignJWT } from 'jose'

export type TestClaims = {
  sub: string
  sid?: string
  roles?: string[]
  email_verified?: boolean
  email?: string
  iat?: number
  exp?: number
}

/** A key pair standing in for the auth service: signs access tokens the shared verifier accepts. */
export async function createTestSigner(options: { issuer?: string; audience?: string } = {}) {
  const issuer = options.issuer ?? 'parley-auth'
  const audience = options.audience ?? 'parley'
  const kid = `test-${crypto.randomUUID().slice(0, 8)}`
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true })
  const jwks: JSONWebKeySet = { keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'EdDSA', use: 'sig' }] }
  return {
    issuer,
    audience,
    jwks,
    async sign(claims: TestClaims): Promise<string> {
      const now = Math.floor(Date.now() / 1000)
      return new SignJWT({
        roles: claims.roles ?? ['user'],
        email_verified: claims.email_verified ?? false,
        sid: claims.sid ?? crypto.randomUUID(),
        ...(claims.email ? { email: claims.email } : {}),
      })
        .setProtectedHeader({ alg: 'EdDSA', kid, typ: 'JWT' })
        .setIssuer(issuer)
        .setAudience(audience)
        .setSubject(claims.sub)
        .setJti(crypto.randomUUID())
        .setIssuedAt(claims.iat ?? now)
        .setExpirationTime(claims.exp ?? now + 900)
        .sign(privateKey)
    },
  }
}
