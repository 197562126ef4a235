import type { Logger, Metrics } from '@parley/common'
import type { Redis } from '@parley/common/redis'
import { presenceKey } from '@parley/contracts'
import type { Revocation } from '../edge-auth/service'
import { compareStreamIds, encodeCursor, frameText, type StreamPosition } from '../sync/model'
import type { FeedListener, StreamFeed, StreamPush, UserStreams } from '../sync/service'

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

/** Entries read from the stream per round trip of a catch-up. */
const REPLAY_CHUNK = 100
/** A catch-up waits this long at most for the socket to drain before it is a slow consumer. */
const REPLAY_STALL_MS = 10_000

/** A live push held back while its socket catches up from the stream. */
type HeldPush = { epoch: string; streamId: string; text: string; time: string }

/**
 * How a socket follows its user's stream: live (pushes sent as they come, `held` undefined),
 * or catching up (pushes held while the stream is read from `position`, then flushed).
 */
type StreamState = {
  /** The last entry sent or the position started from; undefined until the first read. */
  position: StreamPosition | undefined
  held: HeldPush[] | undefined
  heldBytes: number
  /** Held pushes were dropped (too many): the catch-up reads the stream again before going live. */
  overflowed: boolean
  catchingUp: boolean
  /** Another catch-up was asked for while one ran (the feed came back meanwhile). */
  again: boolean
  /** `ready` was sent (after the first catch-up). */
  ready: boolean
}

type Connection = SocketOwner & StreamState & { id: string; socket: PushSocket; answeredPing: boolean }

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

/**
 * The WebSocket connections of this replica, by user: admission (per-user cap), presence in
 * Redis (`presence:<userId>`, scored by expiry, refreshed on every ping), ping/pong liveness,
 * and the user's stream: a socket first catches up from its resume point (or the head), then
 * gets the pushes the stream feed announces, each with its position; slow consumers are
 * dropped instead of buffered without bound.
 */
export class RealtimeHub implements FeedListener {
  private readonly byUser = new Map<string, Map<string, Connection>>()
  private readonly byId = new Map<string, Connection>()
  private readonly connections
  private readonly pushed
  private readonly closedTotal
  private readonly replays
  private readonly replayed
  private readonly pushLag
  private timer: ReturnType<typeof setInterval> | undefined

  constructor(
    private readonly redis: Redis,
    private readonly options: RealtimeOptions,
    private readonly logger: Logger,
    metrics: Metrics,
    private readonly streams: UserStreams,
    private readonly feed: StreamFeed,
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
    this.replays = metrics.counter(
      'realtime_replays_total',
      'Resumes served from the user streams, by path (websocket, sync)',
      ['via'],
    )
    this.replayed = metrics.counter(
      'realtime_replayed_events_total',
      'Events sent from the user streams rather than live, by path (websocket, sync)',
      ['via'],
    )
    this.pushLag = metrics.histogram(
      'realtime_push_lag_seconds',
      "Time from an event's CloudEvents `time` to its live push on a socket",
    )
  }

  start(): void {
    this.timer ??= setInterval(() => void this.heartbeat(), this.options.pingIntervalMs)
    this.timer.unref()
    this.feed.start(this)
  }

  /** Counts a `GET /sync` served after a resume point (the route has no metrics of its own). */
  countSync(events: number): void {
    this.replays.inc({ via: 'sync' })
    if (events > 0) this.replayed.inc({ via: 'sync' }, events)
  }

  /**
   * Registers a new connection, then admits it against the per-user cap (closing it with
   * 1008 when over). Registered first, so presence in Redis always means reachable here.
   */
  async open(
    owner: SocketOwner,
    connectionId: string,
    socket: PushSocket,
    since?: StreamPosition,
  ): Promise<boolean> {
    const { userId } = owner
    const connection: Connection = {
      ...owner,
      id: connectionId,
      socket,
      answeredPing: true,
      // Held from the start: pushes that arrive while the stream is read are not lost.
      position: since,
      held: [],
      heldBytes: 0,
      overflowed: false,
      catchingUp: false,
      again: false,
      ready: false,
    }
    let sockets = this.byUser.get(userId)
    if (!sockets) {
      sockets = new Map()
      this.byUser.set(userId, sockets)
    }
    sockets.set(connectionId, connection)
    this.byId.set(connectionId, connection)
    this.connections.inc()
    if (await this.admit(userId, connectionId)) {
      if (since) this.replays.inc({ via: 'websocket' })
      void this.catchUp(connection)
      return true
    }
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

  /** Whether the connection is still registered (it may close while being admitted). */
  isOpen(connectionId: string): boolean {
    return this.byId.has(connectionId)
  }

  /** A pong (or an application-level ping) proves the peer is alive. */
  alive(connectionId: string): void {
    const connection = this.byId.get(connectionId)
    if (connection) connection.answeredPing = true
  }

  /** The feed's announcement of an appended event: pushed to (or held for) the members' local sockets. */
  push(push: StreamPush): void {
    this.deliver(push)
  }

  /**
   * Sends an appended event to every local socket of its members that is live (returns how
   * many), holds it for those catching up. A push from another epoch (Redis lost the streams)
   * sends its socket through a catch-up, which answers resync_required.
   */
  deliver(push: StreamPush): number {
    let reached = 0
    for (const [userId, streamId] of push.to) {
      const sockets = this.byUser.get(userId)
      if (!sockets) continue
      const text = frameText({ streamId, type: push.type, id: push.id, data: push.data }, push.epoch)
      const held: HeldPush = { epoch: push.epoch, streamId, text, time: push.time }
      for (const connection of sockets.values()) {
        if (connection.held) this.hold(connection, held)
        else if (connection.position?.epoch !== push.epoch) {
          connection.held = [held]
          void this.catchUp(connection)
        } else if (this.sendLive(connection, held)) reached++
      }
    }
    if (reached > 0) this.pushed.inc({ type: push.type }, reached)
    return reached
  }

  /** The feed dropped: every socket holds its pushes until it has caught up again. */
  down(): void {
    for (const connection of this.byId.values()) {
      if (connection.held) continue
      connection.held = []
      connection.heldBytes = 0
    }
  }

  /** The feed is back (or up at start): sockets that hold pushes catch up. */
  up(): void {
    for (const connection of this.byId.values()) if (connection.held) void this.catchUp(connection)
  }

  /** Sends a push unless the socket already has it; true when sent. */
  private sendLive(connection: Connection, push: HeldPush): boolean {
    if (connection.position && compareStreamIds(push.streamId, connection.position.id) <= 0) return false
    if (!this.send(connection, push.text)) return false
    connection.position = { epoch: push.epoch, id: push.streamId }
    this.pushLag.observe((Date.now() - Date.parse(push.time)) / 1000)
    return true
  }

  private hold(connection: Connection, push: HeldPush): void {
    if (!connection.held || connection.overflowed) return
    connection.heldBytes += push.text.length
    if (connection.heldBytes <= this.options.maxBufferedBytes) {
      connection.held.push(push)
      return
    }
    // Everything held is also in the stream: drop it and read the stream once more instead.
    connection.held = []
    connection.heldBytes = 0
    connection.overflowed = true
  }

  /**
   * Brings a socket from its position to live: reads the stream in chunks (waiting for the
   * socket to drain between frames), flushes the pushes held meanwhile, then sends `ready`
   * once. Only while the feed is subscribed, and again if it dropped meanwhile; a failed read
   * (Redis unavailable) is retried.
   */
  private async catchUp(connection: Connection): Promise<void> {
    if (connection.catchingUp) {
      connection.again = true
      return
    }
    connection.catchingUp = true
    try {
      do {
        connection.again = false
        // The feed's next `up` resumes it.
        if (!this.feed.subscribed) return
        const generation = this.feed.generation
        if (!(await this.replay(connection))) return
        if (generation !== this.feed.generation || !this.feed.subscribed) {
          connection.again = true
          continue
        }
        if (!(await this.flushHeld(connection))) connection.again = true
      } while (connection.again)
      if (!connection.ready && connection.position && this.byId.has(connection.id)) {
        connection.ready = true
        this.send(connection, `{"type":"ready","cursor":"${encodeCursor(connection.position)}"}`)
      }
    } catch (error) {
      this.logger.debug({ err: error instanceof Error ? error.message : error }, 'catch-up failed')
      setTimeout(() => {
        if (this.byId.has(connection.id)) void this.catchUp(connection)
      }, 1_000).unref()
    } finally {
      connection.catchingUp = false
    }
  }

  /** Sends the stream after the socket's position; false when the socket went away. */
  private async replay(connection: Connection): Promise<boolean> {
    for (;;) {
      if (!this.byId.has(connection.id)) return false
      connection.overflowed = false
      const page = await this.streams.read(connection.userId, connection.position, REPLAY_CHUNK)
      if (!this.byId.has(connection.id)) return false
      if (page.resync) {
        connection.position = page.position
        if (!this.send(connection, `{"type":"resync_required","cursor":"${encodeCursor(page.position)}"}`))
          return false
        continue
      }
      for (const entry of page.entries) {
        const text = frameText(entry, page.position.epoch)
        if (!(await this.roomFor(connection, text.length)) || !this.send(connection, text)) return false
        connection.position = { epoch: page.position.epoch, id: entry.streamId }
      }
      if (page.entries.length > 0) this.replayed.inc({ via: 'websocket' }, page.entries.length)
      connection.position = page.position
      if (!page.hasMore && !connection.overflowed) return true
    }
  }

  /**
   * Sends what was held after the replay, still holding new pushes until none is left, then
   * goes live; false when it must read the stream again (held pushes overflowed, or one is
   * of another epoch).
   */
  private async flushHeld(connection: Connection): Promise<boolean> {
    const held = connection.held ?? []
    for (let push = held.shift(); push; push = held.shift()) {
      if (connection.overflowed || push.epoch !== connection.position?.epoch) return false
      if (!(await this.roomFor(connection, push.text.length))) return false
      if (!this.byId.has(connection.id)) return false
      this.sendLive(connection, push)
    }
    if (connection.overflowed) return false
    connection.held = undefined
    connection.heldBytes = 0
    return true
  }

  /**
   * Waits until the socket's buffer has room for `bytes` within half the slow-consumer limit,
   * so a long replay paces itself to the client; one that stops reading is closed (1013).
   */
  private async roomFor(connection: Connection, bytes: number): Promise<boolean> {
    const budget = this.options.maxBufferedBytes / 2
    const deadline = Date.now() + REPLAY_STALL_MS
    for (;;) {
      if (!this.byId.has(connection.id)) return false
      const buffered = connection.socket.getBufferedAmount()
      if (buffered === 0 || buffered + bytes <= budget) return true
      if (Date.now() > deadline) {
        this.closedTotal.inc({ reason: 'slow' })
        connection.socket.close(CLOSE_TRY_AGAIN_LATER, 'slow consumer')
        return false
      }
      await Bun.sleep(10)
    }
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
    await this.feed.close()
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
