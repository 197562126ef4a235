/**
 * The request id httpKit assigned (it sets the response header first thing), carried into
 * events as their `correlationid`.
 */
export function correlationId(set: { headers: Record<string, unknown> }): string | undefined {
  const requestId = set.headers['x-request-id']
  return typeof requestId === 'string' ? requestId : undefined
}
