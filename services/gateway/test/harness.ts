/**
 * Reusable helpers for gateway tests (and the end-to-end journeys): real HTTP upstreams on
 * loopback ports, a JWKS server, a gateway listening on a free port, a WebSocket client.
 */

import { createConnection as connectTcp, type Socket } from 'node:net'
import { createRuntime, listen, opsApp, parseConfig } from '@parley/common'
import { testInfra, testLogger, waitFor } from '@parley/testkit'
import type { Server } from 'bun'
import type { JSONWebKeySet } from 'jose'
import { buildApp } from '../src/app'
import { Env } from '../src/config'
import { connect } from '../src/deps'

export type RecordedRequest = {
  method: string
  /** Path and query as the upstream received them. */
  path: string
  headers: Record<string, string>
  body: string
}

export type TestUpstream = {
  url: string
  port: number
  requests: RecordedRequest[]
  server: Server<undefined>
  stop: () => Promise<void>
}

/**
 * A real HTTP server on a free loopback port. Without a handler it echoes the request as
 * JSON: `{method, path, headers, body}`. Every request is recorded (body read as text).
 */
export function startUpstream(handler?: (request: Request) => Response | Promise<Response>): TestUpstream {
  const requests: RecordedRequest[] = []
  const server = Bun.serve({
    hostname: '127.0.0.1',
    port: 0,
    async fetch(request) {
      const url = new URL(request.url)
      if (handler) {
        requests.push({
          method: request.method,
          path: `${url.pathname}${url.search}`,
          headers: Object.fromEntries(request.headers),
          body: '',
        })
        return handler(request)
      }
      const recorded: RecordedRequest = {
        method: request.method,
        path: `${url.pathname}${url.search}`,
        headers: Object.fromEntries(request.headers),
        body: await request.text(),
      }
      requests.push(recorded)
      return Response.json(recorded)
    },
  })
  return {
    url: `http://127.0.0.1:${server.port}`,
    port: server.port as number,
    requests,
    server,
    stop: () => server.stop(true),
  }
}

/** A loopback port nothing listens on (connection refused). */
export async function closedPort(): Promise<number> {
  const server = Bun.serve({ hostname: '127.0.0.1', port: 0, fetch: () => new Response() })
  const port = server.port as number
  await server.stop(true)
  return port
}

/** Serves a JWKS like the auth service does; `keys` can be swapped to simulate rotation. */
export function startJwksServer(initial: JSONWebKeySet) {
  let keys = initial
  let fetches = 0
  const server = Bun.serve({
    hostname: '127.0.0.1',
    port: 0,
    fetch(request) {
      if (new URL(request.url).pathname !== '/auth/.well-known/jwks.json')
        return new Response(null, { status: 404 })
      fetches++
      return Response.json(keys)
    },
  })
  return {
    url: `http://127.0.0.1:${server.port}/auth/.well-known/jwks.json`,
    fetches: () => fetches,
    setKeys: (next: JSONWebKeySet) => {
      keys = next
    },
    stop: () => server.stop(true),
  }
}

export type TestGateway = Awaited<ReturnType<typeof startGateway>>

/**
 * Connects and listens a gateway like index.ts does, on a free port, with `env` over test
 * defaults (AMQP_URL and JWKS_URL are required). Stop it with `stop()`.
 */
export async function startGateway(
  env: Record<string, string>,
  options: { redisKeyPrefix: string; redisUnreachable?: boolean },
) {
  const config = parseConfig(Env, {
    REDIS_URL: testInfra.redisUrl,
    LOG_LEVEL: 'silent',
    ...env,
  })
  const runtime = createRuntime('gateway', 'silent', testLogger('gateway'))
  const deps = await connect(config, runtime, { redisKeyPrefix: options.redisKeyPrefix })
  const app = buildApp(deps)
  // As serve() does, on free ports: SIGTERM (here stop()) drains HTTP, consumers and sockets,
  // closes clients, then stops the ops listener.
  const { port, opsPort } = listen(app, opsApp(runtime, deps.readiness), {
    port: 0,
    opsPort: 0,
    host: '127.0.0.1',
    bodyLimitBytes: config.BODY_LIMIT_BYTES,
    lifecycle: runtime.lifecycle,
  })
  runtime.lifecycle.markReady()
  // Consumers (and their queues) exist once the broker check passes; Redis is used once ready.
  await waitFor(
    async () => {
      const ready = (await (await fetch(`http://127.0.0.1:${opsPort}/ready`)).json()) as {
        checks: Record<string, string>
      }
      return (
        ready.checks.broker === 'ok' && (ready.checks.redis === 'ok' || options.redisUnreachable === true)
      )
    },
    { what: 'the gateway to connect to the broker and Redis' },
  )
  return {
    url: `http://127.0.0.1:${port}`,
    /** The ops port: /health, /ready, /metrics. */
    opsUrl: `http://127.0.0.1:${opsPort}`,
    wsUrl: `ws://127.0.0.1:${port}/api/v1/ws`,
    app,
    deps,
    runtime,
    /** Prometheus text of this gateway's registry. */
    metrics: () => runtime.metrics.registry.metrics(),
    /** The graceful shutdown SIGTERM runs. */
    stop: () => runtime.lifecycle.shutdown(),
  }
}

export type TestSocket = {
  socket: WebSocket
  /** Every JSON frame received so far. */
  messages: unknown[]
  /** Resolves with the first frame (already received or future) matching `predicate`. */
  next: <T = unknown>(predicate: (message: T) => boolean, timeoutMs?: number) => Promise<T>
  /** Resolves with the close code and reason once the socket closed. */
  closed: Promise<{ code: number; reason: string }>
  close: () => void
}

/**
 * Opens a WebSocket to the gateway, offering `parley.v1` and the bearer-token subprotocol.
 * Resolves once open (or closed: check `closed`); rejects if the handshake fails.
 */
export async function openSocket(wsUrl: string, token: string | undefined): Promise<TestSocket> {
  const protocols = token ? ['parley.v1', `parley.bearer.${token}`] : ['parley.v1']
  const socket = new WebSocket(wsUrl, protocols)
  const messages: unknown[] = []
  socket.addEventListener('message', (event) => {
    messages.push(JSON.parse(String(event.data)))
  })
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    socket.addEventListener('close', (event) => resolve({ code: event.code, reason: event.reason }))
  })
  await new Promise<void>((resolve, reject) => {
    socket.addEventListener('open', () => resolve())
    socket.addEventListener('error', () => reject(new Error('WebSocket handshake failed')))
  })
  return {
    socket,
    messages,
    closed,
    close: () => socket.close(1000),
    next: <T>(predicate: (message: T) => boolean, timeoutMs = 10_000) =>
      waitFor(() => messages.find((message) => predicate(message as T)) as T | undefined, {
        timeoutMs,
        what: 'a WebSocket message',
      }),
  }
}

/** Reads a Prometheus sample value (sum of every series matching the name and labels). */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue
    if (!Object.entries(labels).every(([key, value]) => line.includes(`${key}="${value}"`))) continue
    total += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return total
}

export type RawWebSocket = {
  socket: Socket
  /** Resolves when the TCP connection ends (the server closed or terminated it). */
  ended: Promise<void>
}

/**
 * A WebSocket client that does only the handshake and then nothing: it never answers pings
 * and, once `socket.pause()` is called, stops reading — a dead or slow peer.
 */
export async function rawWebSocket(wsUrl: string, token: string): Promise<RawWebSocket> {
  const url = new URL(wsUrl)
  const socket = connectTcp({ host: url.hostname, port: Number(url.port) })
  const ended = new Promise<void>((resolve) => {
    socket.on('close', () => resolve())
    socket.on('error', () => resolve())
  })
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () =>
      socket.write(
        [
          `GET ${url.pathname} HTTP/1.1`,
          `Host: ${url.host}`,
          'Upgrade: websocket',
          'Connection: Upgrade',
          `Sec-WebSocket-Key: ${Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString('base64')}`,
          'Sec-WebSocket-Version: 13',
          `Sec-WebSocket-Protocol: parley.v1, parley.bearer.${token}`,
          '',
          '',
        ].join('\r\n'),
      ),
    )
    socket.once('data', (chunk: Buffer) =>
      chunk.toString('latin1').startsWith('HTTP/1.1 101') ? resolve() : reject(new Error('upgrade refused')),
    )
    socket.once('error', reject)
  })
  return { socket, ended }
}

/**
 * Sends `head` (request line and fields, no blank line) and `body` as they are on a connection
 * of its own, for requests `fetch` will not send (a GET with a body); resolves with the first
 * answer (Content-Length framed) and closes the connection.
 */
export async function rawRequest(
  url: string,
  head: string,
  body = '',
): Promise<{ status: number; text: string }> {
  const { hostname, port } = new URL(url)
  const socket = connectTcp({ host: hostname, port: Number(port) })
  let received = Buffer.alloc(0)
  const answer = await new Promise<{ fields: string; text: string }>((resolve, reject) => {
    socket.once('connect', () => socket.write(`${head}\r\n\r\n${body}`))
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk])
      const end = received.indexOf('\r\n\r\n')
      if (end < 0) return
      const fields = received.subarray(0, end).toString()
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(fields)?.[1] ?? 0)
      const rest = received.subarray(end + 4)
      if (rest.length >= length) resolve({ fields, text: rest.subarray(0, length).toString() })
    })
    socket.once('error', reject)
    socket.once('close', () => reject(new Error(`closed before a whole answer: ${received}`)))
  })
  socket.destroy()
  return { status: Number(answer.fields.split(' ', 2)[1]), text: answer.text }
}
