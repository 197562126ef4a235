import { HttpProblem, problems } from '@parley/common'
import type { UpstreamName } from '@parley/contracts'

export const API_PREFIX = '/api/v1'

export type Upstream = {
  name: UpstreamName
  /** Service path prefix it owns (public path minus /api/v1). */
  prefix: string
  baseUrl: string
  timeoutMs: number
}

/** The upstream owning a service path (`/users/me` → user), matching whole segments only. */
export function matchUpstream(upstreams: readonly Upstream[], path: string): Upstream | undefined {
  for (const upstream of upstreams) {
    if (path === upstream.prefix || path.startsWith(`${upstream.prefix}/`)) return upstream
  }
  return undefined
}

/** RFC 9110 §7.6.1 connection-specific fields; every `Proxy-*` field is dropped as well. */
const HOP_BY_HOP = ['connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade']

/**
 * Identity-looking headers a client might send hoping a service trusts them. Services verify
 * the bearer token themselves and ignore such headers; the gateway drops them anyway.
 */
const IDENTITY_HEADER =
  /^(x-(user|auth|identity|session|roles?|account|email|remote-user|forwarded-user)\b.*|remote-user)$/

/**
 * Removes hop-by-hop fields (and the fields `Connection` lists) in place, and with
 * `dropIdentity` the identity-looking ones too. One pass over the names: this runs twice per
 * proxied request.
 */
export function stripHopByHop(headers: Headers, dropIdentity = false): Headers {
  const listed = headers.get('connection')
  if (listed) for (const name of listed.split(',')) if (name.trim()) headers.delete(name.trim())
  for (const name of HOP_BY_HOP) headers.delete(name)
  const dropped: string[] = []
  headers.forEach((_, name) => {
    if (name.startsWith('proxy-') || (dropIdentity && IDENTITY_HEADER.test(name))) dropped.push(name)
  })
  for (const name of dropped) headers.delete(name)
  return headers
}

export type ClientAddress = { ip: string; forwardedFor: string }

/**
 * The client's IP and the X-Forwarded-For to send on. With `trustedHops` proxies in front,
 * the client is that many entries from the right of `X-Forwarded-For` + the socket address;
 * with none, whatever the client wrote in X-Forwarded-For is discarded (it is spoofable).
 */
export function clientAddress(
  socketIp: string,
  forwardedFor: string | null,
  trustedHops: number,
): ClientAddress {
  if (trustedHops === 0 || !forwardedFor) return { ip: socketIp, forwardedFor: socketIp }
  const chain = [
    ...forwardedFor
      .split(',')
      .map((entry) => entry.trim())
      .filter(Boolean),
    socketIp,
  ]
  const ip = chain[Math.max(0, chain.length - 1 - trustedHops)] ?? socketIp
  return { ip, forwardedFor: chain.join(', ') }
}

export type ForwardContext = {
  client: ClientAddress
  /** Scheme and host the client used (from X-Forwarded-* when proxies are trusted). */
  proto: string
  host: string
  requestId: string
  traceparent: string
}

/**
 * Turns the client's request headers, in place (the request is only forwarded afterwards), into
 * the ones a service receives: end-to-end fields only, no identity claims, forwarding info added.
 */
export function toUpstreamHeaders(headers: Headers, context: ForwardContext): Headers {
  stripHopByHop(headers, true)
  headers.delete('host')
  headers.delete('forwarded')
  headers.set('x-forwarded-for', context.client.forwardedFor)
  headers.set('x-forwarded-proto', context.proto)
  headers.set('x-forwarded-host', context.host)
  headers.set('x-request-id', context.requestId)
  headers.set('traceparent', context.traceparent)
  return headers
}

/** A request body stream that fails once more than `limit` bytes went through (chunked uploads). */
export function limitBody(body: ReadableStream<Uint8Array>, limit: number) {
  // A pulling wrapper rather than pipeThrough, which Bun 1.3 cannot apply to a request body.
  const reader = body.getReader()
  let received = 0
  let failure: HttpProblem | undefined
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await reader.read()
      if (done) return controller.close()
      received += value.byteLength
      if (received > limit) {
        failure = problems.payloadTooLarge(limit)
        controller.error(failure)
        await reader.cancel()
      } else controller.enqueue(value)
    },
    cancel: (reason) => reader.cancel(reason),
  })
  return { stream, failure: () => failure }
}

/** Reads a whole (small) body, failing with 413 past `limit` bytes. */
export async function readBody(body: ReadableStream<Uint8Array> | null, limit: number): Promise<Uint8Array> {
  if (!body) return new Uint8Array()
  const chunks: Uint8Array[] = []
  let size = 0
  // A reader, not `for await`: Bun 1.3 fails to async-iterate a request body once the handler
  // has awaited something else first.
  const reader = body.getReader()
  for (let read = await reader.read(); !read.done; read = await reader.read()) {
    size += read.value.byteLength
    if (size > limit) {
      await reader.cancel()
      throw problems.payloadTooLarge(limit)
    }
    chunks.push(read.value)
  }
  return Buffer.concat(chunks)
}

const UNREACHABLE_CODES = new Set([
  'ConnectionRefused',
  'ECONNREFUSED',
  'FailedToOpenSocket',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
])

export type ForwardRequest = {
  method: string
  /** Service path and query string, e.g. `/users?q=al`. */
  pathAndQuery: string
  headers: Headers
  body: ReadableStream<Uint8Array> | Uint8Array | null
  /** Aborts the upstream exchange when the client goes away. */
  clientSignal?: AbortSignal
  /** Why the body stream failed, if it did (a 413 once a chunked upload exceeded the limit). */
  bodyFailure?: () => HttpProblem | undefined
}

/** The client went away before the upstream answered (nginx's 499): nobody reads it, nothing failed here. */
const CLIENT_CLOSED_REQUEST = new HttpProblem(
  499,
  'Client Closed Request',
  undefined,
  'client-closed-request',
)

const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304])

/**
 * Upstream deadlines on one coarse clock: a timer per request costs more than the rest of the
 * timeout handling; a sweep every DEADLINE_TICK_MS aborts the overdue ones (up to a tick late).
 */
const DEADLINE_TICK_MS = 50
const deadlines = new Map<AbortController, number>()
let deadlineSweep: ReturnType<typeof setInterval> | undefined

function withDeadline(ms: number): AbortController {
  const controller = new AbortController()
  deadlines.set(controller, performance.now() + ms)
  if (!deadlineSweep) {
    deadlineSweep = setInterval(() => {
      const now = performance.now()
      for (const [overdue, deadline] of deadlines)
        if (deadline <= now) {
          deadlines.delete(overdue)
          overdue.abort()
        }
      if (deadlines.size === 0) {
        clearInterval(deadlineSweep)
        deadlineSweep = undefined
      }
    }, DEADLINE_TICK_MS)
    deadlineSweep.unref()
  }
  return controller
}

/**
 * Sends the request to the upstream over Bun's pooled keep-alive connections and returns
 * its response as a stream. The timeout covers the wait for response headers; failures
 * become 503 (unreachable), 504 (timed out) or 502 problems.
 */
export async function forward(
  upstream: Upstream,
  request: ForwardRequest,
  onHeaders: (status: number, seconds: number) => void,
): Promise<Response> {
  const started = performance.now()
  const timeout = withDeadline(upstream.timeoutMs)
  const signal = request.clientSignal
    ? AbortSignal.any([timeout.signal, request.clientSignal])
    : timeout.signal
  let response: Response
  try {
    response = await fetch(`${upstream.baseUrl}${request.pathAndQuery}`, {
      method: request.method,
      headers: request.headers,
      body: request.body,
      redirect: 'manual',
      signal,
      // Stream the request body through, and keep the upstream's Content-Encoding intact.
      duplex: 'half',
      decompress: false,
    } as RequestInit)
  } catch (error) {
    const problem =
      request.bodyFailure?.() ??
      (request.clientSignal?.aborted && !timeout.signal.aborted
        ? CLIENT_CLOSED_REQUEST
        : upstreamProblem(upstream, error, timeout.signal.aborted))
    onHeaders(problem.status, (performance.now() - started) / 1000)
    throw problem
  } finally {
    deadlines.delete(timeout)
  }
  onHeaders(response.status, (performance.now() - started) / 1000)
  // Bun's fetch responses have mutable headers: the upstream's response goes back as it is.
  stripHopByHop(response.headers)
  const init = { status: response.status, statusText: response.statusText, headers: response.headers }
  if (NULL_BODY_STATUSES.has(response.status) || request.method === 'HEAD') return new Response(null, init)
  return response
}

function upstreamProblem(upstream: Upstream, error: unknown, timedOut: boolean): HttpProblem {
  if (error instanceof HttpProblem) return error
  if (timedOut) return problems.gatewayTimeout(`The ${upstream.name} service did not answer in time`)
  const code = (error as { code?: unknown } | null)?.code
  if (typeof code === 'string' && UNREACHABLE_CODES.has(code))
    return problems.serviceUnavailable(`The ${upstream.name} service is unavailable`)
  return problems.badGateway(`The ${upstream.name} service failed`)
}
