import { type HttpProblem, problems } from './errors'
import type { Logger } from './logger'
import { canonicalPath } from './paths'

/**
 * What every request meets before and after its route, as plain functions: httpKit's hooks run
 * them for every app, and the gateway's proxy fast path (which answers outside the framework's
 * per-request machinery) runs the same ones, so both behave alike.
 */

const REQUEST_ID_PATTERN = /^[\w.:-]{1,128}$/

/** The request id a response carries: the caller's `x-request-id` when it is a sane token, else a new one. */
export function requestIdFor(incoming: string | null): string {
  return incoming && REQUEST_ID_PATTERN.test(incoming) ? incoming : crypto.randomUUID()
}

/** A path and declared body length are refused before routing, or routed by this canonical path. */
export type RoutingCheck = { ok: true; path: string } | { ok: false; problem: HttpProblem }

/**
 * Refuses before routing what no route may see: a path without a canonical form (400 naming
 * `path`), with `strict` a path not spelled canonically (404: one spelling per route), and a
 * declared body over the limit (413).
 */
export function checkBeforeRouting(
  pathname: string,
  contentLength: string | null,
  bodyLimitBytes: number,
  strict: boolean,
): RoutingCheck {
  const canonical = canonicalPath(pathname)
  if (!canonical.ok)
    return {
      ok: false,
      problem: problems.badRequest(canonical.reason, [{ field: 'path', message: canonical.reason }]),
    }
  if (strict && canonical.path !== pathname)
    return { ok: false, problem: problems.notFound('No route matches this path') }
  if (Number(contentLength ?? 0) > bodyLimitBytes)
    return { ok: false, problem: problems.payloadTooLarge(bodyLimitBytes) }
  return { ok: true, path: canonical.path }
}

export type AccessLine = {
  requestId: string
  traceparent: string
  method: string
  path: string
  route: string
  status: number
  ms: number
}

/** The one access log line of a request (bindings per line: no child logger per request). */
export function logAccess(logger: Logger, line: AccessLine): void {
  logger.info(line, 'request')
}

/** Logs a request that failed with a 5xx (the problem the client got says nothing of the cause). */
export function logFailure(
  logger: Logger,
  error: unknown,
  fields: { path: string; requestId: string | undefined; traceparent: string | undefined },
): void {
  logger.error({ err: error, ...fields }, 'request failed')
}
