/** A request path in its one canonical spelling, or why it has none. */
export type PathCheck = { ok: true; path: string } | { ok: false; reason: string }

const UNRESERVED = /^[A-Za-z0-9\-._~]$/

/**
 * The canonical form of a URL pathname as the WHATWG parser leaves it (which has already resolved
 * `.`/`..` segments, including `%2e` spellings, and turned `\` into `/`): percent-encoded
 * unreserved characters decoded and every other escape in upper case (RFC 3986 §6.2.2), runs of
 * `/` merged and a trailing `/` dropped. Refused outright: an encoded `/` or `\` (a segment
 * boundary the router and the service might see differently), encoded control characters, a
 * malformed escape, and a `.`/`..` segment that decoding would produce.
 */
export function canonicalPath(pathname: string): PathCheck {
  let refused: string | undefined
  const decoded = pathname.replace(/%(..)?/g, (sequence, hex: string | undefined) => {
    if (hex === undefined || !/^[0-9a-fA-F]{2}$/.test(hex)) {
      refused ??= 'The path contains a malformed percent escape'
      return sequence
    }
    const code = Number.parseInt(hex, 16)
    const char = String.fromCharCode(code)
    if (char === '/' || char === '\\') refused ??= 'The path contains an encoded "/" or "\\"'
    else if (code < 0x20 || code === 0x7f) refused ??= 'The path contains an encoded control character'
    else if (UNRESERVED.test(char)) return char
    return `%${hex.toUpperCase()}`
  })
  if (refused) return { ok: false, reason: refused }
  const merged = decoded.replace(/\/{2,}/g, '/')
  const path = merged.length > 1 && merged.endsWith('/') ? merged.slice(0, -1) : merged
  if (path.split('/').some((segment) => segment === '.' || segment === '..'))
    return { ok: false, reason: 'The path contains a "." or ".." segment' }
  return { ok: true, path }
}
