/** The request id httpKit put on the response; events caused by the request carry it as `correlationid`. */
export function correlationIdOf(responseHeaders: Record<string, unknown>): string | undefined {
  const requestId = responseHeaders['x-request-id']
  return typeof requestId === 'string' ? requestId : undefined
}
