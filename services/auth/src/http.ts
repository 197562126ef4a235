import { problems } from '@parley/common'

/**
 * The request id httpKit assigned (it sets the response header first thing), carried into
 * events as their `correlationid`.
 */
export function correlationId(set: { headers: Record<string, unknown> }): string | undefined {
  const requestId = set.headers['x-request-id']
  return typeof requestId === 'string' ? requestId : undefined
}

/**
 * For an object schema Elysia turns any other JSON value (`"x"`, `[]`, `42`) into `{}` before
 * validating it, so an all-optional body would accept garbage. Refuse it first (a transform hook).
 */
export function requireObjectBody({ body }: { body: unknown }): void {
  if (body === undefined) return
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw problems.validation([{ field: 'body', message: 'must be a JSON object' }])
}
