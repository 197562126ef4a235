import { expect, test } from 'bun:test'
import { FormatRegistry, Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import '../src/http'
import { emailFormat, uuidFormat } from '../src/formats'

test('the openapi plugin does not get to replace the uuid and email checks', () => {
  // http.ts imports @elysiajs/openapi, which sets slow checks for these on import.
  expect(FormatRegistry.Get('uuid')).toBe(uuidFormat)
  expect(FormatRegistry.Get('email')).toBe(emailFormat)
})

test('uuid: RFC 9562 versions with the RFC variant, nil and max; nothing else', () => {
  const uuid = Type.String({ format: 'uuid' })
  for (const valid of [
    Bun.randomUUIDv7(),
    crypto.randomUUID(),
    crypto.randomUUID().toUpperCase(),
    '00000000-0000-0000-0000-000000000000',
    'ffffffff-ffff-ffff-ffff-ffffffffffff',
  ])
    expect(Value.Check(uuid, valid)).toBe(true)
  for (const invalid of [
    '',
    'not-a-uuid',
    '0190b2a4-1c2d-9e3f-8a4b-5c6d7e8f9a0b', // version 9
    '0190b2a4-1c2d-7e3f-ca4b-5c6d7e8f9a0b', // variant c
    `${crypto.randomUUID()}0`,
    `urn:uuid:${crypto.randomUUID()}`,
    crypto.randomUUID().replaceAll('-', ''),
  ])
    expect(Value.Check(uuid, invalid)).toBe(false)
})

test('email: what people type is accepted, malformed addresses are not', () => {
  const email = Type.String({ format: 'email' })
  for (const valid of [
    'ada@example.com',
    'a.b+tag@mail.example.co.uk',
    "o'neil@example.org",
    'x_y-z@ex-ample.io',
    `${'l'.repeat(64)}@${'d'.repeat(63)}.example.com`,
  ])
    expect(Value.Check(email, valid)).toBe(true)
  for (const invalid of [
    '',
    'plain',
    '@example.com',
    'ada@',
    '.ada@example.com',
    'ada.@example.com',
    'a..b@example.com',
    'ada@example',
    'ada@-example.com',
    'ada@example-.com',
    'ada example@example.com',
    'ada@exa mple.com',
    // RFC 5321 lengths: local part, domain label, the whole address.
    `${'l'.repeat(65)}@example.com`,
    `ada@${'d'.repeat(64)}.com`,
    `ada@${'d.'.repeat(124)}com`,
  ])
    expect(Value.Check(email, invalid)).toBe(false)
})
