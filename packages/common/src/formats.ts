import { FormatRegistry } from '@sinclair/typebox'

// Registered by http.ts once `@elysiajs/openapi` is imported: on import, that plugin replaces
// `uuid`, `email` and other formats in TypeBox's global registry with checks that build a new
// validator on every call. Under load a fifth of chat's CPU went to checking uuids that way.

/** RFC 9562 UUIDs: versions 1–8 with the RFC variant, plus the nil and max UUIDs. */
const UUID =
  /^(?:[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}|0{8}-0{4}-0{4}-0{4}-0{12}|f{8}-f{4}-f{4}-f{4}-f{12})$/i

/**
 * An address as people type it: a local part of letters, digits and `_'+-.` (no leading, trailing
 * or doubled dot), `@`, dot-separated domain labels (letters, digits, inner hyphens) and a
 * top-level domain of at least two letters. No quoted local parts, no IP literals. Exported as a
 * pattern too (no lookarounds, so generators such as schemathesis can produce matches): the
 * `format: 'email'` of other tools is looser, the pattern makes schemas say what is accepted.
 * The format adds RFC 5321's lengths, which the pattern cannot say: a local part of at most 64
 * characters, domain labels of at most 63, 254 in all (no mail server takes longer ones).
 */
export const EMAIL_PATTERN =
  "^[A-Za-z0-9_'+-]+(?:\\.[A-Za-z0-9_'+-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\\.)+[A-Za-z]{2,}$"
const EMAIL = new RegExp(EMAIL_PATTERN)

export const uuidFormat = (value: string): boolean => UUID.test(value)
export function emailFormat(value: string): boolean {
  if (value.length > 254 || !EMAIL.test(value)) return false
  const at = value.indexOf('@')
  return (
    at <= 64 &&
    value
      .slice(at + 1)
      .split('.')
      .every((label) => label.length <= 63)
  )
}

/** Registers the formats Parley's schemas use; idempotent. */
export function registerFormats(): void {
  FormatRegistry.Set('uuid', uuidFormat)
  FormatRegistry.Set('email', emailFormat)
}
