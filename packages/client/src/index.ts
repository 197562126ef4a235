/**
 * The typed client of Parley's public API, as served by the gateway under /api/v1.
 *
 * Built on Elysia's Eden Treaty over each service's own app type: every path, parameter, body and
 * response type comes from the code that serves it, so the client cannot drift from the services
 * (a renamed field fails to compile). Each service's routes are mounted at the gateway's prefix
 * unchanged (the gateway proxies /api/v1/<path> to the service's <path>), which is what lets one
 * Treaty per service address the gateway. The event stream helper is `connectEvents` below.
 */
import { treaty } from '@elysiajs/eden'
import type { App as AuthApp } from '../../../services/auth/src/app'
import type { App as ChatApp } from '../../../services/chat/src/app'
import type { App as GatewayApp } from '../../../services/gateway/src/app'
import type { App as NotificationApp } from '../../../services/notification/src/app'
import type { App as UserApp } from '../../../services/user/src/app'

export const API_PREFIX = '/api/v1'

export type ClientOptions = {
  /** The gateway's origin, e.g. `https://chat.example.com` (no path). */
  baseUrl: string
  /** The access token to send, asked before every request (undefined: none). */
  token?: () => string | undefined
  fetch?: typeof fetch
}

/** One Treaty per service plus the gateway's own routes (`/sync`), all through the gateway. */
export function createClient(options: ClientOptions) {
  const origin = options.baseUrl.replace(/\/+$/, '')
  const config = {
    // Timestamps stay ISO strings, as the schemas say (Eden would turn them into Dates).
    parseDate: false,
    headers: (): Record<string, string> => {
      const token = options.token?.()
      return token ? { authorization: `Bearer ${token}` } : {}
    },
    ...(options.fetch ? { fetcher: options.fetch } : {}),
  }
  const api = `${origin}${API_PREFIX}`
  return {
    auth: treaty<AuthApp>(api, config).auth,
    users: treaty<UserApp>(api, config).users,
    conversations: treaty<ChatApp>(api, config).conversations,
    attachments: treaty<ChatApp>(api, config).attachments,
    notifications: treaty<NotificationApp>(api, config).notifications,
    sync: treaty<GatewayApp>(origin, config).api.v1.sync,
  }
}

export type Client = ReturnType<typeof createClient>

/** A frame of the user's event stream (see the gateway README: WebSocket /api/v1/ws). */
export type StreamFrame = { type: string; id?: string; cursor?: string; data?: Record<string, unknown> }

export type EventsStatus = 'connecting' | 'live' | 'reconnecting' | 'closed'

export type EventsOptions = {
  baseUrl: string
  /** Asked at every (re)connection: a socket closed with 4401 (token expired) comes back with a fresh one. */
  token: () => string | Promise<string>
  /** Where to resume from (a cursor saved earlier); without it the stream starts now. */
  since?: string
  /** Every stream event, exactly once and in order across reconnections. */
  onEvent: (frame: StreamFrame) => void
  /** The resume point was too old: refetch state over REST; the stream continues from now. */
  onResync?: (cursor: string) => void
  onStatus?: (status: EventsStatus, detail?: { code?: number; attempt?: number; delayMs?: number }) => void
  /** First reconnection delay, doubled on each failed attempt up to `maxDelayMs`, with jitter. */
  initialDelayMs?: number
  maxDelayMs?: number
  /** A ping is sent after this long without a frame; no answer within as long again reconnects. */
  heartbeatMs?: number
}

export type Events = {
  /** The position after the last event delivered: save it to resume in a later session. */
  cursor(): string | undefined
  /** Resolves once the stream is live (after any replay). */
  ready: Promise<void>
  close(): void
}

/** Close codes after which trying again cannot help. */
const FINAL_CLOSE_CODES = new Set([1008])

/**
 * The user's event stream over WebSocket: authenticates with the subprotocol token, reconnects
 * with exponential backoff and jitter, and resumes from the last cursor it saw (`?since=`), so
 * nothing is missed or repeated across reconnections.
 */
export function connectEvents(options: EventsOptions): Events {
  const wsOrigin = options.baseUrl.replace(/\/+$/, '').replace(/^http/, 'ws')
  const initialDelayMs = options.initialDelayMs ?? 500
  const maxDelayMs = options.maxDelayMs ?? 30_000
  const heartbeatMs = options.heartbeatMs ?? 30_000
  let cursor = options.since
  let socket: WebSocket | undefined
  let attempt = 0
  let closed = false
  let retry: ReturnType<typeof setTimeout> | undefined
  let heartbeat: ReturnType<typeof setTimeout> | undefined
  let markReady: () => void = () => {}
  const ready = new Promise<void>((resolve) => {
    markReady = resolve
  })

  const status = (value: EventsStatus, detail?: Parameters<NonNullable<EventsOptions['onStatus']>>[1]) =>
    options.onStatus?.(value, detail)

  /** No frame for heartbeatMs: ping; still nothing after as long again: the link is dead. */
  function watch(current: WebSocket, pinged = false) {
    clearTimeout(heartbeat)
    heartbeat = setTimeout(() => {
      if (pinged) current.close(4000, 'heartbeat timeout')
      else {
        current.send(JSON.stringify({ type: 'ping' }))
        watch(current, true)
      }
    }, heartbeatMs)
  }

  function scheduleReconnect(code?: number) {
    if (closed) return
    if (code !== undefined && FINAL_CLOSE_CODES.has(code)) {
      closed = true
      status('closed', { code })
      return
    }
    // 4401: the token expired or was revoked; a fresh one may work at once.
    const delayMs =
      code === 4401 && attempt === 0
        ? 0
        : Math.min(maxDelayMs, initialDelayMs * 2 ** attempt) * (0.5 + Math.random() / 2)
    attempt++
    status('reconnecting', { ...(code === undefined ? {} : { code }), attempt, delayMs: Math.round(delayMs) })
    retry = setTimeout(() => void open(), delayMs)
  }

  async function open() {
    if (closed) return
    status('connecting')
    let token: string
    try {
      token = await options.token()
    } catch {
      scheduleReconnect()
      return
    }
    if (closed) return
    const url = `${wsOrigin}${API_PREFIX}/ws${cursor ? `?since=${encodeURIComponent(cursor)}` : ''}`
    const current = new WebSocket(url, ['parley.v1', `parley.bearer.${token}`])
    socket = current
    current.onopen = () => watch(current)
    current.onmessage = (message) => {
      watch(current)
      let frame: StreamFrame
      try {
        frame = JSON.parse(String(message.data)) as StreamFrame
      } catch {
        return
      }
      if (frame.type === 'pong' || frame.type === 'ping') return
      if (frame.type === 'ready') {
        if (frame.cursor) cursor = frame.cursor
        attempt = 0
        status('live')
        markReady()
        return
      }
      if (frame.type === 'resync_required') {
        if (frame.cursor) cursor = frame.cursor
        options.onResync?.(frame.cursor ?? '')
        return
      }
      // Presence and typing frames carry no cursor: they are not part of the resumable stream.
      if (frame.cursor) cursor = frame.cursor
      options.onEvent(frame)
    }
    current.onclose = (event) => {
      clearTimeout(heartbeat)
      if (socket === current) socket = undefined
      scheduleReconnect(event.code)
    }
  }

  void open()
  return {
    cursor: () => cursor,
    ready,
    close() {
      closed = true
      clearTimeout(retry)
      clearTimeout(heartbeat)
      socket?.close(1000, 'client closed')
      status('closed')
    },
  }
}
