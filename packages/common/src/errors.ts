import { Problem } from '@parley/contracts'

export type ProblemFieldError = { field: string; message: string }

const TYPE_BASE = 'https://parley.dev/problems/'

/**
 * An error that is answered as an RFC 9457 problem. Services throw these; the http plugin
 * renders them. `headers` carries e.g. Retry-After for 429 and WWW-Authenticate for 401.
 */
export class HttpProblem extends Error {
  override name = 'HttpProblem'
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail?: string,
    readonly slug: string = title.toLowerCase().replace(/[^a-z0-9]+/g, '-'),
    readonly errors?: ProblemFieldError[],
    readonly headers: Record<string, string> = {},
  ) {
    super(detail ?? title)
  }

  toJSON(instance?: string): Problem {
    return {
      type: `${TYPE_BASE}${this.slug}`,
      title: this.title,
      status: this.status,
      ...(this.detail === undefined ? {} : { detail: this.detail }),
      ...(instance === undefined ? {} : { instance }),
      ...(this.errors === undefined ? {} : { errors: this.errors }),
    }
  }
}

export const problems = {
  badRequest: (detail: string, errors?: ProblemFieldError[]) =>
    new HttpProblem(400, 'Bad Request', detail, 'bad-request', errors),
  validation: (errors: ProblemFieldError[], detail = 'The request has invalid fields') =>
    new HttpProblem(422, 'Validation Failed', detail, 'validation', errors),
  unauthorized: (detail = 'A valid access token is required') =>
    new HttpProblem(401, 'Unauthorized', detail, 'unauthorized', undefined, { 'www-authenticate': 'Bearer' }),
  forbidden: (detail = 'You may not do this') => new HttpProblem(403, 'Forbidden', detail, 'forbidden'),
  notFound: (detail = 'No such resource') => new HttpProblem(404, 'Not Found', detail, 'not-found'),
  conflict: (detail: string) => new HttpProblem(409, 'Conflict', detail, 'conflict'),
  unsupportedMediaType: (expected: string) =>
    new HttpProblem(
      415,
      'Unsupported Media Type',
      `The request body must be ${expected}`,
      'unsupported-media-type',
      [{ field: 'body', message: `Expected Content-Type ${expected}` }],
    ),
  /** RFC 9110 §15.5.6: the path exists, not with this method; `Allow` lists the methods it has. */
  methodNotAllowed: (method: string, allowed: readonly string[]) =>
    new HttpProblem(
      405,
      'Method Not Allowed',
      `${method} is not served here; use ${allowed.join(', ')}`,
      'method-not-allowed',
      undefined,
      { allow: allowed.join(', ') },
    ),
  payloadTooLarge: (limit: number) =>
    // The unread rest of the body would poison a kept-alive connection: close it.
    new HttpProblem(
      413,
      'Payload Too Large',
      `The request body exceeds ${limit} bytes`,
      'payload-too-large',
      undefined,
      {
        connection: 'close',
      },
    ),
  tooManyRequests: (retryAfterSeconds: number, headers: Record<string, string> = {}) =>
    new HttpProblem(
      429,
      'Too Many Requests',
      `Retry after ${retryAfterSeconds} s`,
      'rate-limited',
      undefined,
      {
        ...headers,
        'retry-after': String(retryAfterSeconds),
      },
    ),
  badGateway: (detail = 'The upstream service failed') =>
    new HttpProblem(502, 'Bad Gateway', detail, 'bad-gateway'),
  serviceUnavailable: (detail = 'The service is unavailable') =>
    new HttpProblem(503, 'Service Unavailable', detail, 'service-unavailable'),
  gatewayTimeout: (detail = 'The upstream service did not answer in time') =>
    new HttpProblem(504, 'Gateway Timeout', detail, 'gateway-timeout'),
  internal: () => new HttpProblem(500, 'Internal Server Error', 'An unexpected error occurred', 'internal'),
}

export const PROBLEM_CONTENT_TYPE = 'application/problem+json'

export function problemResponse(
  problem: HttpProblem,
  instance?: string,
  extraHeaders: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(problem.toJSON(instance)), {
    status: problem.status,
    headers: { 'content-type': PROBLEM_CONTENT_TYPE, ...problem.headers, ...extraHeaders },
  })
}

/**
 * The `response` entries of the statuses a route answers with a problem, all the shared Problem
 * schema: `response: { 200: Thing, ...problemResponses(401, 404, 422) }`.
 */
export function problemResponses<const Status extends readonly number[]>(
  ...statuses: Status
): { [S in Status[number]]: typeof Problem } {
  return Object.fromEntries(statuses.map((status) => [status, Problem])) as {
    [S in Status[number]]: typeof Problem
  }
}
