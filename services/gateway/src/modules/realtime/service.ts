import type { Logger, Metrics } from '@parley/common'
import type { Redis } from '@parley/common/redis'
import type { CloudEvent } from '@parley/contracts'
import { presenceKey } from '@parley/contracts'
import type { Revocation } from '../edge-auth/service'
import type { RealtimeEventType, RealtimePush } from './model'

/** The part of a server WebSocket the hub uses (Bun's ServerWebSocket satisfies it). */
export type PushSocket = {
  /** Bytes written, -1 when queued under backpressure, 0 when dropped. */
  send(data: string): number
  ping(): number
  close(code?: number, reason?: string): void
  terminate(): void
  getBufferedAmount(): number
}

export const CLOSE_POLICY_VIOLATION = 1008
export const CLOSE_TRY_AGAIN_LATER = 1013
export const CLOSE_GOING_AWAY = 1001
/** Application close code: the access token expired or its session was revoked; reconnect with a fresh token. */
export const CLOSE_UNAUTHORIZED = 4401

export type RealtimeOptions = {
  maxConnectionsPerUser: number
  pingIntervalMs: number
  maxBufferedBytes: number
  presenceTtlMs: number
}

/** Whose socket it is, and the validity of the token that opened it (epoch seconds). */
export type SocketOwner = { userId: string; sessionId: string; issuedAt: number; expiresAt: number }

type Connection = SocketOwner & { id: string; socket: PushSocket; answeredPing: boolean }

/**
 * Registers the connection in the user's presence set unless the user already holds
 * `cap` live connections (across every replica). Expired members are pruned first.
 */
const ADMIT_SCRIPT = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`

type RedisWithAdmit = Redis & {
  admitConnection(
    key: string,
    now: number,
    expiresAt: number,
    id: string,
    cap: number,
    ttl: number,
  ): Promise<number>
}

/** Who receives an event: every participant, including the sender's other devices. */
export function recipientsOf(event: CloudEvent<RealtimeEventType>): string[] {
  if (event.type === 'message.sent') {
    const data = (event as CloudEvent<'message.sent'>).data
    return [...new Set([data.senderId, ...data.recipientIds])]
  }
  return [...new Set((event as CloudEvent<'conversation.created'>).data.participantIds)]
}

/**
 * The WebSocket connections of this replica, by user: admission (per-user cap), presence in
 * Redis (`presence:<userId>`, scored by expiry, refreshed on every ping), ping/pong liveness,
 * and pushes that drop slow consumers instead of buffering without bound.
 */
export class RealtimeHub {
  private readonly byUser = new Map<string, Map<string, Connection>>()
  private readonly byId = new Map<string, Connection>()
  private readonly connections
  private readonly pushed
  private readonly closedTotal
  private timer: ReturnType<typeof setInterval> | undefined

  constructor(
    private readonly redis: Redis,
    private readonly options: RealtimeOptions,
    private readonly logger: Logger,
    metrics: Metrics,
  ) {
    if (!('admitConnection' in redis))
      redis.defineCommand('admitConnection', { numberOfKeys: 1, lua: ADMIT_SCRIPT })
    this.connections = metrics.gauge('websocket_connections', 'Open WebSocket connections on this replica')
    this.pushed = metrics.counter('websocket_pushes_total', 'Events pushed to WebSocket clients', ['type'])
    this.closedTotal = metrics.counter(
      'websocket_closed_total',
      'WebSocket connections closed by the gateway',
      ['reason'],
    )
  }

  start(): void {
    this.timer ??= setInterval(() => void this.heartbeat(), this.options.pingIntervalMs)
    this.timer.unref()
  }

  /**
   * Registers a new connection, then admits it against the per-user cap (closing it with
   * 1008 when over). Registered first, so presence in Redis always means reachable here.
   */
  async open(owner: SocketOwner, connectionId: string, socket: PushSocket): Promise<boolean> {
    const { userId } = owner
    const connection: Connection = { ...owner, id: connectionId, socket, answeredPing: true }
    let sockets = this.byUser.get(userId)
    if (!sockets) {
      sockets = new Map()
      this.byUser.set(userId, sockets)
    }
    sockets.set(connectionId, connection)
    this.byId.set(connectionId, connection)
    this.connections.inc()
    if (await this.admit(userId, connectionId)) return true
    this.forget(connection)
    this.closedTotal.inc({ reason: 'cap' })
    socket.close(CLOSE_POLICY_VIOLATION, 'too many connections')
    return false
  }

  /** The socket closed (by either side): forget it and drop its presence entry. */
  async closed(connectionId: string): Promise<void> {
    const connection = this.byId.get(connectionId)
    if (!connection) return
    this.forget(connection)
    try {
      await this.redis.zrem(presenceKey(connection.userId), connectionId)
    } catch (error) {
      // The entry expires on its own (its score is its expiry).
      this.logger.debug({ err: error instanceof Error ? error.message : error }, 'presence removal failed')
    }
  }

  private forget(connection: Connection): void {
    if (!this.byId.delete(connection.id)) return
    const sockets = this.byUser.get(connection.userId)
    sockets?.delete(connection.id)
    if (sockets?.size === 0) this.byUser.delete(connection.userId)
    this.connections.dec()
  }

  /** A pong (or an application-level ping) proves the peer is alive. */
  alive(connectionId: string): void {
    const connection = this.byId.get(connectionId)
    if (connection) connection.answeredPing = true
  }

  /** Pushes an event to every local connection of its recipients; returns the sockets reached. */
  deliver(event: CloudEvent<RealtimeEventType>): number {
    const message = { type: event.type, id: event.id, data: event.data } as RealtimePush
    const payload = JSON.stringify(message)
    let reached = 0
    for (const userId of recipientsOf(event)) {
      for (const connection of this.byUser.get(userId)?.values() ?? []) {
        if (this.send(connection, payload)) reached++
      }
    }
    if (reached > 0) this.pushed.inc({ type: event.type }, reached)
    return reached
  }

  /** Sends or, for a consumer that stopped reading, closes with 1013 rather than buffer more. */
  send(connection: { id: string; socket: PushSocket }, payload: string): boolean {
    const { socket } = connection
    if (
      socket.getBufferedAmount() + payload.length > this.options.maxBufferedBytes ||
      socket.send(payload) === 0
    ) {
      this.closedTotal.inc({ reason: 'slow' })
      socket.close(CLOSE_TRY_AGAIN_LATER, 'slow consumer')
      return false
    }
    return true
  }

  /**
   * Closes the sockets a revocation ends: the user's sockets opened with tokens issued before
   * `revokedBefore` (`user.sessions_revoked`), or those of one session (`user.session_revoked`).
   */
  revoke(revocation: Revocation): void {
    const seconds = revocation.kind === 'user' ? revocation.revokedBefore.getTime() / 1000 : 0
    for (const connection of this.byUser.get(revocation.userId)?.values() ?? []) {
      const ended =
        revocation.kind === 'user'
          ? connection.issuedAt < seconds
          : connection.sessionId === revocation.sessionId
      if (ended) this.closeUnauthorized(connection, 'session revoked')
    }
  }

  /** Ends one socket whose session turned out to be revoked (counted like any revocation). */
  endRevoked(connectionId: string): void {
    const connection = this.byId.get(connectionId)
    if (connection) this.closeUnauthorized(connection, 'session revoked')
  }

  /**
   * Pings every socket, ends those that did not answer the last ping or whose token has
   * expired (the client reconnects with a fresh one), refreshes presence.
   */
  async heartbeat(): Promise<void> {
    const now = Date.now()
    const expiresAt = now + this.options.presenceTtlMs
    const pipeline = this.redis.pipeline()
    for (const connection of this.byId.values()) {
      if (connection.expiresAt * 1000 <= now) {
        this.closeUnauthorized(connection, 'token expired')
        continue
      }
      if (!connection.answeredPing) {
        this.closedTotal.inc({ reason: 'ping_timeout' })
        connection.socket.terminate()
        continue
      }
      connection.answeredPing = false
      connection.socket.ping()
      const key = presenceKey(connection.userId)
      pipeline.zadd(key, expiresAt, connection.id).pexpire(key, this.options.presenceTtlMs)
    }
    if (pipeline.length === 0 || this.redis.status !== 'ready') return
    try {
      await pipeline.exec()
    } catch (error) {
      this.logger.debug({ err: error instanceof Error ? error.message : error }, 'presence refresh failed')
    }
  }

  /** Shutdown: stop pinging and close every socket with 1001 so clients reconnect elsewhere. */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    const connections = [...this.byId.values()]
    for (const connection of connections) connection.socket.close(CLOSE_GOING_AWAY, 'server shutting down')
    await Promise.all(connections.map((connection) => this.closed(connection.id)))
  }

  private closeUnauthorized(connection: Connection, reason: string): void {
    this.closedTotal.inc({ reason: reason === 'token expired' ? 'token_expired' : 'revoked' })
    connection.socket.close(CLOSE_UNAUTHORIZED, reason)
  }

  private async admit(userId: string, connectionId: string): Promise<boolean> {
    const { maxConnectionsPerUser: cap, presenceTtlMs: ttl } = this.options
    if (this.redis.status === 'ready') {
      try {
        const now = Date.now()
        const admitted = await (this.redis as RedisWithAdmit).admitConnection(
          presenceKey(userId),
          now,
          now + ttl,
          connectionId,
          cap,
          ttl,
        )
        return admitted === 1
      } catch (error) {
        this.logger.warn({ err: error instanceof Error ? error.message : error }, 'presence unavailable')
      }
    }
    // Redis down: enforce the cap per replica (this connection is already counted); presence
    // is written by the next heartbeat.
    return (this.byUser.get(userId)?.size ?? 0) <= cap
  }
}
