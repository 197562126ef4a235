import { type Identity, problems, requestContext } from '@parley/common'
import type { ServerWebSocket } from 'bun'
import { Elysia } from 'elysia'
import type { EdgeAuth } from '../edge-auth/service'
import type { EphemeralHub } from '../ephemeral/service'
import type { RateLimiter } from '../rate-limit/service'
import { decodeCursor, type StreamPosition } from '../sync/model'
import { SUBPROTOCOL, tokenFromSubprotocols } from './model'
import type { RealtimeHub } from './service'

export type RealtimeRouteOptions = {
  hub: RealtimeHub
  edgeAuth: EdgeAuth
  limiter: RateLimiter
  ephemeral: EphemeralHub
}

/**
 * `GET /api/v1/ws`: the handshake is authenticated (subprotocol bearer token) and counted
 * against the caller's rate limit before the upgrade; then the hub owns the socket.
 */
export function realtimeRoutes({ hub, edgeAuth, limiter, ephemeral }: RealtimeRouteOptions) {
  // Per-connection state, keyed by the socket's data object (stable for its lifetime).
  const handshakes = new WeakMap<Request, { identity: Identity; since: StreamPosition | undefined }>()
  const connectionIds = new WeakMap<object, string>()

  return new Elysia({ name: 'gateway.realtime' }).use(requestContext).ws('/api/v1/ws', {
    detail: { hide: true },
    upgrade: { 'sec-websocket-protocol': SUBPROTOCOL },
    async beforeHandle({ request }) {
      const token = tokenFromSubprotocols(request.headers.get('sec-websocket-protocol'))
      if (!token)
        throw problems.unauthorized(
          `Offer the WebSocket subprotocols ${SUBPROTOCOL} and parley.bearer.<access token>`,
        )
      const { identity } = await edgeAuth.admit(token, limiter, ({ userId }) => [
        { policy: 'authenticated', subject: `user:${userId}` },
      ])
      // The resume point is no secret (unlike the token), so the query string is fine for it.
      const cursor = new URL(request.url).searchParams.get('since')
      const since = cursor === null ? undefined : decodeCursor(cursor)
      if (cursor !== null && !since)
        throw problems.validation([{ field: 'query.since', message: 'Expected a cursor this API issued' }])
      handshakes.set(request, { identity, since })
    },
    async open(ws) {
      const handshake = handshakes.get(ws.data.request)
      if (!handshake) return ws.close(1011, 'handshake state lost')
      const { identity, since } = handshake
      const connectionId = crypto.randomUUID()
      connectionIds.set(ws.data, connectionId)
      // Elysia types `raw` with its own narrower interface; at run time it is Bun's ServerWebSocket.
      const owner = {
        userId: identity.userId,
        sessionId: identity.sessionId,
        issuedAt: identity.issuedAt,
        expiresAt: identity.expiresAt,
      }
      const socket = ws.raw as unknown as ServerWebSocket<unknown>
      const admitted = await hub.open(owner, connectionId, socket, since)
      // A revocation that arrived between the handshake and now found no socket to close.
      if (await edgeAuth.isRevoked(identity)) hub.endRevoked(connectionId)
      else if (admitted && hub.isOpen(connectionId)) {
        const token = tokenFromSubprotocols(ws.data.request.headers.get('sec-websocket-protocol')) ?? ''
        await ephemeral.opened(identity.userId, connectionId, token, socket)
      }
    },
    message(ws, message) {
      const connectionId = connectionIds.get(ws.data)
      if (!connectionId) return
      // Browsers cannot send protocol pings: an application {"type":"ping"} also proves liveness.
      hub.alive(connectionId)
      if (ephemeral.handles(message)) return void ephemeral.receive(connectionId, message)
      if (typeof message === 'object' && message !== null && 'type' in message && message.type === 'ping')
        ws.send('{"type":"pong"}')
    },
    pong(ws) {
      const connectionId = connectionIds.get(ws.data)
      if (connectionId) hub.alive(connectionId)
    },
    async close(ws) {
      const connectionId = connectionIds.get(ws.data)
      if (!connectionId) return
      await hub.closed(connectionId)
      await ephemeral.closed(connectionId)
    },
  })
}
