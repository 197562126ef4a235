import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { generateKeyPairSync } from 'node:crypto'
import { AccessTokenVerifier, ConfigError, HttpProblem, parseConfig } from '@parley/common'
import { testLogger } from '@parley/testkit'
import {
  base64url,
  calculateJwkThumbprint,
  createLocalJWKSet,
  decodeProtectedHeader,
  generateKeyPair,
  type JSONWebKeySet,
  type JWTPayload,
  jwtVerify,
  SignJWT,
} from 'jose'
import { Env } from '../src/config'
import { loadSigningKeys } from '../src/keys'
import { type AuthInstance, createHarness, type Harness } from './harness'

let h: Harness
beforeAll(async () => {
  h = await createHarness()
})
afterAll(() => h.close())

function ed25519Pem() {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  }
}

async function jwksOf(instance: Pick<AuthInstance, 'call'>): Promise<JSONWebKeySet> {
  const reply = await instance.call<JSONWebKeySet>('GET', '/auth/.well-known/jwks.json')
  expect(reply.status).toBe(200)
  return reply.body
}

function verifierFor(jwks: JSONWebKeySet) {
  return new AccessTokenVerifier({ jwks, issuer: 'parley-auth', audience: 'parley' })
}

async function rejection(verifier: AccessTokenVerifier, token: string): Promise<HttpProblem> {
  try {
    await verifier.verify(token)
  } catch (error) {
    if (error instanceof HttpProblem) return error
    throw error
  }
  throw new Error('the token was accepted')
}

describe('GET /auth/.well-known/jwks.json', () => {
  test('serves the public key with kid, alg and use, and nothing private', async () => {
    const reply = await h.call<JSONWebKeySet>('GET', '/auth/.well-known/jwks.json')
    expect(reply.headers.get('cache-control')).toBe('public, max-age=60')
    expect(reply.body.keys).toHaveLength(1)
    const [key] = reply.body.keys
    expect(key).toEqual({
      kty: 'OKP',
      crv: 'Ed25519',
      x: expect.any(String),
      kid: h.deps.keys.kid,
      alg: 'EdDSA',
      use: 'sig',
    })
    // No JWT_KEY_ID: the kid is the key's RFC 7638 thumbprint.
    expect(key?.kid).toBe(await calculateJwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x: String(key?.x) }))
  })
})

describe('access tokens', () => {
  test('verify with jose against the JWKS and carry every claim', async () => {
    const user = await h.register()
    const { payload, protectedHeader } = await jwtVerify(
      user.accessToken,
      createLocalJWKSet(await jwksOf(h)),
      {
        issuer: 'parley-auth',
        audience: 'parley',
        algorithms: ['EdDSA'],
        typ: 'at+jwt',
      },
    )
    expect(protectedHeader).toEqual({ alg: 'EdDSA', kid: h.deps.keys.kid, typ: 'at+jwt' })
    expect(payload).toEqual({
      iss: 'parley-auth',
      aud: 'parley',
      sub: user.id,
      iat: expect.any(Number),
      exp: expect.any(Number),
      jti: expect.stringMatching(/^[0-9a-f-]{36}$/),
      sid: expect.stringMatching(/^[0-9a-f-]{36}$/),
      roles: ['user'],
      email_verified: false,
      email: user.email,
    })
    expect(Number(payload.exp) - Number(payload.iat)).toBe(900)
  })

  test('the shared AccessTokenVerifier accepts them', async () => {
    const user = await h.register()
    const identity = await verifierFor(await jwksOf(h)).verify(user.accessToken)
    expect(identity).toMatchObject({
      userId: user.id,
      roles: ['user'],
      emailVerified: false,
      email: user.email,
    })
  })

  describe('the shared verifier (and the auth service) reject', () => {
    const now = Math.floor(Date.now() / 1000)
    const claims = (user: { id: string }): JWTPayload => ({
      sub: user.id,
      sid: Bun.randomUUIDv7(),
      jti: crypto.randomUUID(),
      roles: ['user', 'admin'],
      email_verified: true,
    })
    const signWithServiceKey = (payload: JWTPayload, { aud = 'parley', iat = now, exp = now + 900 } = {}) =>
      new SignJWT(payload)
        .setProtectedHeader({ alg: 'EdDSA', kid: h.deps.keys.kid, typ: 'at+jwt' })
        .setIssuer('parley-auth')
        .setAudience(aud)
        .setIssuedAt(iat)
        .setExpirationTime(exp)
        .sign(h.deps.keys.privateKey)

    async function expectRejected(token: string, detail: string) {
      expect((await rejection(verifierFor(await jwksOf(h)), token)).detail).toBe(detail)
      expect((await h.call('GET', '/auth/me', { token })).status).toBe(401)
    }

    test('(control: a token forged with the service key and a live session is accepted)', async () => {
      const user = await h.register()
      const token = await signWithServiceKey({ ...claims(user), sid: h.sidOf(user) })
      expect((await verifierFor(await jwksOf(h)).verify(token)).userId).toBe(user.id)
      expect((await h.call('GET', '/auth/me', { token })).status).toBe(200)
    })

    test('alg: none', async () => {
      const user = await h.register()
      const encode = (value: object) => base64url.encode(JSON.stringify(value))
      const unsigned = `${encode({ alg: 'none', typ: 'JWT', kid: h.deps.keys.kid })}.${encode({
        ...claims(user),
        iss: 'parley-auth',
        aud: 'parley',
        iat: now,
        exp: now + 900,
      })}.`
      await expectRejected(unsigned, 'The access token is invalid')
    })

    test('HS256 signed with the public key (algorithm confusion)', async () => {
      const user = await h.register()
      const [jwk] = (await jwksOf(h)).keys
      const publicKeyBytes = [base64url.decode(String(jwk?.x)), new TextEncoder().encode(JSON.stringify(jwk))]
      for (const secret of publicKeyBytes) {
        const token = await new SignJWT(claims(user))
          .setProtectedHeader({ alg: 'HS256', kid: h.deps.keys.kid })
          .setIssuer('parley-auth')
          .setAudience('parley')
          .setIssuedAt()
          .setExpirationTime('15m')
          .sign(secret)
        await expectRejected(token, 'The access token is invalid')
      }
    })

    test('a kid that is not the signer’s: someone else’s key, named as ours or as an unknown kid', async () => {
      const user = await h.register()
      const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' })
      for (const kid of [h.deps.keys.kid, 'someone-elses-key']) {
        const token = await new SignJWT(claims(user))
          .setProtectedHeader({ alg: 'EdDSA', kid })
          .setIssuer('parley-auth')
          .setAudience('parley')
          .setIssuedAt()
          .setExpirationTime('15m')
          .sign(privateKey)
        await expectRejected(token, 'The access token is invalid')
      }
    })

    test('an expired token', async () => {
      const user = await h.register()
      const token = await signWithServiceKey(
        { ...claims(user), sid: h.sidOf(user) },
        { iat: now - 1000, exp: now - 100 },
      )
      await expectRejected(token, 'The access token has expired')
    })

    test('another audience', async () => {
      const user = await h.register()
      const token = await signWithServiceKey(
        { ...claims(user), sid: h.sidOf(user) },
        { aud: 'another-service' },
      )
      await expectRejected(token, 'The access token is invalid')
    })
  })
})

describe('key rotation', () => {
  test('a token signed by the previous key still verifies after the current key changed', async () => {
    const first = ed25519Pem()
    const second = ed25519Pem()
    // Secrets mounted from .env files often carry PEM with literal "\n".
    const before = await h.startAnother({
      JWT_PRIVATE_KEY: first.privatePem.replaceAll('\n', '\\n'),
      JWT_KEY_ID: 'key-1',
    })
    const user = await before.call<{ accessToken: string; refreshToken: string }>('POST', '/auth/register', {
      body: {
        email: `rotate.${crypto.randomUUID().slice(0, 8)}@example.com`,
        displayName: 'R',
        password: 'rotation password',
      },
    })
    expect(decodeProtectedHeader(user.body.accessToken).kid).toBe('key-1')

    const during = await h.startAnother({
      JWT_PRIVATE_KEY: second.privatePem,
      JWT_KEY_ID: 'key-2',
      JWT_PREVIOUS_PUBLIC_KEY: first.publicPem,
      JWT_PREVIOUS_KEY_ID: 'key-1',
    })
    const jwks = await jwksOf(during)
    expect(jwks.keys.map((key) => key.kid)).toEqual(['key-2', 'key-1'])
    expect((await verifierFor(jwks).verify(user.body.accessToken)).userId).toBeString()
    expect((await during.call('GET', '/auth/me', { token: user.body.accessToken })).status).toBe(200)
    const refreshed = await during.call<{ accessToken: string }>('POST', '/auth/refresh', {
      body: { refreshToken: user.body.refreshToken },
    })
    expect(refreshed.status).toBe(200)
    expect(decodeProtectedHeader(refreshed.body.accessToken).kid).toBe('key-2')
    expect((await verifierFor(jwks).verify(refreshed.body.accessToken)).userId).toBeString()

    // Once the previous key is dropped, its tokens stop verifying.
    const after = await h.startAnother({ JWT_PRIVATE_KEY: second.privatePem, JWT_KEY_ID: 'key-2' })
    const withoutPrevious = await jwksOf(after)
    expect(withoutPrevious.keys.map((key) => key.kid)).toEqual(['key-2'])
    expect((await rejection(verifierFor(withoutPrevious), user.body.accessToken)).status).toBe(401)
    expect((await after.call('GET', '/auth/me', { token: user.body.accessToken })).status).toBe(401)
    expect((await verifierFor(withoutPrevious).verify(refreshed.body.accessToken)).userId).toBeString()
    await Promise.all([before.close(), during.close(), after.close()])
  })
})

describe('signing key configuration', () => {
  const base = { DATABASE_URL: 'postgres://parley@127.0.0.1/unused' }
  const load = (env: Record<string, string>) =>
    loadSigningKeys(parseConfig(Env, { ...base, ...env }), testLogger())

  async function configError(env: Record<string, string>): Promise<ConfigError> {
    try {
      await load(env)
    } catch (error) {
      if (error instanceof ConfigError) return error
      throw error
    }
    throw new Error('expected a ConfigError')
  }

  test('production (the default) refuses to start without JWT_PRIVATE_KEY', async () => {
    expect((await configError({})).variable).toBe('JWT_PRIVATE_KEY')
    expect((await configError({ PARLEY_ENV: 'production' })).message).toBe(
      'invalid configuration: JWT_PRIVATE_KEY is required when PARLEY_ENV=production (an Ed25519 private key in PKCS8 PEM)',
    )
  })

  test('development generates a key for the process', async () => {
    const keys = await load({ PARLEY_ENV: 'development' })
    expect(keys.jwks.keys).toHaveLength(1)
    expect(keys.kid).toBe(keys.jwks.keys[0]?.kid ?? 'missing')
  })

  test('a key that is not Ed25519 PKCS8 PEM is named, without echoing it', async () => {
    const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' })
      .privateKey.export({ type: 'pkcs8', format: 'pem' })
      .toString()
    for (const key of ['not a key', p256]) {
      const error = await configError({ JWT_PRIVATE_KEY: key })
      expect(error.variable).toBe('JWT_PRIVATE_KEY')
      expect(error.message).not.toContain(key)
    }
    const pems = ed25519Pem()
    expect(
      (await configError({ JWT_PRIVATE_KEY: pems.privatePem, JWT_PREVIOUS_PUBLIC_KEY: 'junk' })).variable,
    ).toBe('JWT_PREVIOUS_PUBLIC_KEY')
    expect(
      (await configError({ JWT_PRIVATE_KEY: pems.privatePem, JWT_PREVIOUS_KEY_ID: 'old' })).variable,
    ).toBe('JWT_PREVIOUS_PUBLIC_KEY')
    expect(
      (await configError({ JWT_PRIVATE_KEY: pems.privatePem, JWT_PREVIOUS_PUBLIC_KEY: pems.publicPem }))
        .variable,
    ).toBe('JWT_PREVIOUS_KEY_ID')
  })
})
