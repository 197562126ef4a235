/**
 * The client offers two subprotocols: `parley.v1` (echoed back) and `parley.bearer.<access token>`.
 * Headers never reach access logs, unlike a query string.
 */
export const SUBPROTOCOL = 'parley.v1'
export const BEARER_SUBPROTOCOL_PREFIX = 'parley.bearer.'

export function tokenFromSubprotocols(header: string | null): string | undefined {
  if (!header) return undefined
  const offered = header.split(',').map((value) => value.trim())
  if (!offered.includes(SUBPROTOCOL)) return undefined
  const bearer = offered.find((value) => value.startsWith(BEARER_SUBPROTOCOL_PREFIX))
  return bearer ? bearer.slice(BEARER_SUBPROTOCOL_PREFIX.length) || undefined : undefined
}
