import { ConcurrencyLimit, type Logger, type Metrics } from '@parley/common'
import type { Redis } from '@parley/common/redis'
import { presenceKey } from '@parley/contracts'
import { Value } from '@sinclair/typebox/value'
import type { RateLimiter } from '../rate-limit/service'
import { CLOSE_POLICY_VIOLATION, type PushSocket, type RealtimeHub } from '../realtime/service'
import {
  ChatConversation,
  ChatConversationPage,
  CONTACT_PAGE_SIZE,
  type EphemeralPush,
  type EphemeralSignal,
  type ErrorFrame,
  isEphemeralFrame,
  MAX_CACHED_CONVERSATIONS,
  MAX_CONTACT_CONVERSATIONS,
  MAX_INVALID_FRAMES,
  MAX_SNAPSHOT_CONTACTS,
  MEMBERSHIP_CACHE_MS,
  PresenceFrame,
  type PresenceStatus,
  parseFrame,
  TYPING_EXPIRY_SECONDS,
  TypingFrame,
  type TypingState,
} from './model'

/** A conversation's participants after a change (every membership event carries the full list). */
export type MembershipChange = { conversationId: string; participantIds: readonly string[] }

/**
 * Who shares a conversation with the users connected to this replica. Only conversations with
 * at least one attached (locally connected) user are kept; `watchers` maps every contact to the
 * attached users who share a conversation with them (and how many), so a presence change is
 * delivered in O(watchers).
 */
export class ContactIndex {
  private readonly members = new Map<string, Set<string>>()
  private readonly attachedIn = new Map<string, Set<string>>()
  private readonly conversationsOf = new Map<string, Set<string>>()
  private readonly watchers = new Map<string, Map<string, number>>()

  isAttached(userId: string): boolean {
    return this.conversationsOf.has(userId)
  }

  /** Starts tracking a user with their conversations as chat listed them. */
  attach(userId: string, conversations: readonly MembershipChange[]): void {
    if (this.conversationsOf.has(userId)) return
    this.conversationsOf.set(userId, new Set())
    for (const { conversationId, participantIds } of conversations) {
      let participants = this.members.get(conversationId)
      // A conversation already tracked is kept current by events, which are newer than the listing.
      if (!participants) {
        participants = new Set(participantIds)
        this.members.set(conversationId, participants)
      }
      if (participants.has(userId)) this.join(userId, conversationId)
      else this.collect(conversationId)
    }
  }

  detach(userId: string): void {
    const conversations = this.conversationsOf.get(userId)
    if (!conversations) return
    for (const conversationId of [...conversations]) {
      this.countPairs(userId, this.members.get(conversationId), -1)
      this.unlink(userId, conversationId)
      this.collect(conversationId)
    }
    this.conversationsOf.delete(userId)
  }

  /** Applies a membership event (the full participant list after it). */
  apply({ conversationId, participantIds }: MembershipChange): void {
    const next = new Set(participantIds)
    const previous = this.members.get(conversationId)
    const attached = [...(this.attachedIn.get(conversationId) ?? [])]
    const joining = [...next].filter(
      (userId) => this.conversationsOf.has(userId) && !this.attachedIn.get(conversationId)?.has(userId),
    )
    if (!previous && joining.length === 0) return
    // Uncount every pair under the old list, then count them again under the new one.
    for (const userId of attached) this.countPairs(userId, previous, -1)
    this.members.set(conversationId, next)
    for (const userId of attached) {
      if (next.has(userId)) this.countPairs(userId, next, 1)
      else this.unlink(userId, conversationId)
    }
    for (const userId of joining) this.join(userId, conversationId)
    this.collect(conversationId)
  }

  /** Participants of a conversation an attached user is in (exact: kept current by events). */
  participants(conversationId: string): ReadonlySet<string> | undefined {
    return this.members.get(conversationId)
  }

  /** Attached users who share a conversation with `userId`. */
  watchersOf(userId: string): Iterable<string> {
    return this.watchers.get(userId)?.keys() ?? []
  }

  /** Everyone who shares a conversation with an attached user. */
  contactsOf(userId: string): string[] {
    const contacts = new Set<string>()
    for (const conversationId of this.conversationsOf.get(userId) ?? [])
      for (const participant of this.members.get(conversationId) ?? []) contacts.add(participant)
    contacts.delete(userId)
    return [...contacts]
  }

  private join(userId: string, conversationId: string): void {
    this.conversationsOf.get(userId)?.add(conversationId)
    let attached = this.attachedIn.get(conversationId)
    if (!attached) {
      attached = new Set()
      this.attachedIn.set(conversationId, attached)
    }
    attached.add(userId)
    this.countPairs(userId, this.members.get(conversationId), 1)
  }

  private unlink(userId: string, conversationId: string): void {
    this.conversationsOf.get(userId)?.delete(conversationId)
    this.attachedIn.get(conversationId)?.delete(userId)
  }

  /** Forgets a conversation no attached user is in any more. */
  private collect(conversationId: string): void {
    if ((this.attachedIn.get(conversationId)?.size ?? 0) > 0) return
    this.attachedIn.delete(conversationId)
    this.members.delete(conversationId)
  }

  private countPairs(userId: string, participants: ReadonlySet<string> | undefined, delta: 1 | -1): void {
    for (const contact of participants ?? []) {
      if (contact === userId) continue
      let watching = this.watchers.get(contact)
      if (!watching) {
        watching = new Map()
        this.watchers.set(contact, watching)
      }
      const shared = (watching.get(userId) ?? 0) + delta
      if (shared > 0) watching.set(userId, shared)
      else watching.delete(userId)
      if (watching.size === 0) this.watchers.delete(contact)
    }
  }
}

export const presenceAwayKey = (userId: string) => `presence-away:${userId}`
export const presenceStatusKey = (userId: string) => `presence-status:${userId}`
/** Users whose last published status is online/away, scored by when that must be re-checked. */
export const PRESENCE_SEEN_KEY = 'presence-seen'
/** Redis pub/sub channel (under the key prefix) every replica listens on. */
export const EPHEMERAL_CHANNEL = 'ephemeral'

/**
 * Applies one connection's change (`away`, `online`, `gone`, or nothing) and recomputes the
 * user's status over their live connections on every replica: online if any is not away, away
 * if all are, offline if none. Returns the new status when it differs from the last one
 * published (so exactly one replica publishes each change), else nil.
 * KEYS: presence zset, away set, status, seen index. ARGV: now, userId, ttl, op, connectionId.
 */
const PRESENCE_SCRIPT = `
local now = tonumber(ARGV[1])
if ARGV[4] == 'away' then
  redis.call('SADD', KEYS[2], ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
elseif ARGV[4] == 'online' or ARGV[4] == 'gone' then
  redis.call('SREM', KEYS[2], ARGV[5])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local live = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local status = 'offline'
local latest = 0
for i = 1, #live, 2 do
  if redis.call('SISMEMBER', KEYS[2], live[i]) == 0 then
    status = 'online'
  elseif status == 'offline' then
    status = 'away'
  end
  local score = tonumber(live[i + 1])
  if score > latest then latest = score end
end
local previous = redis.call('GET', KEYS[3]) or 'offline'
if status == 'offline' then
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('ZREM', KEYS[4], ARGV[2])
else
  redis.call('SET', KEYS[3], status, 'PX', ARGV[3])
  redis.call('ZADD', KEYS[4], latest, ARGV[2])
end
if previous == status then return false end
return status
`

type RedisWithPresence = Redis & {
  presenceChange(
    presence: string,
    away: string,
    status: string,
    seen: string,
    now: number,
    userId: string,
    ttl: number,
    op: string,
    connectionId: string,
  ): Promise<PresenceStatus | null>
}

export type EphemeralOptions = {
  /** `contactLoads`: contact lists fetched from chat at once; more wait (a reconnect storm). */
  chat: { baseUrl: string; timeoutMs: number; contactLoads: number }
  /** Interval of presence refreshes and of the sweep for users whose last replica died. */
  intervalMs: number
  presenceTtlMs: number
}

type LocalConnection = {
  id: string
  userId: string
  /** The access token that opened the socket (valid while it is open): chat is asked as the user. */
  token: string
  socket: PushSocket
  invalidFrames: number
  /** Conversations with a `start` not yet stopped, for the `stop` sent when the socket closes. */
  typing: Map<string, { at: number; to: string[] }>
}

type Membership =
  | { kind: 'member'; participants: ReadonlySet<string> }
  | { kind: 'not_member' | 'unavailable' }

/**
 * Typing indicators and presence changes: validated, rate-limited, membership-checked, then
 * signalled to every replica over Redis pub/sub (never stored) and pushed to the local sockets
 * of the users concerned. Presence aggregates each user's connections across replicas in Redis.
 */
export class EphemeralHub {
  private readonly connections = new Map<string, LocalConnection>()
  private readonly byUser = new Map<string, Map<string, LocalConnection>>()
  private readonly contacts = new ContactIndex()
  /** Contact loads in flight, by user, with the membership events to replay once attached. */
  private readonly loading = new Map<string, { done: Promise<void>; replay: MembershipChange[] }>()
  /** Participants fetched from chat for conversations outside the contact index. */
  private readonly cached = new Map<string, { participants: ReadonlySet<string>; expiresAt: number }>()
  /** Conversation → users chat answered 404 for, until when. */
  private readonly refused = new Map<string, Map<string, number>>()
  private readonly channel: string
  private readonly subscriber: Redis
  private timer: ReturnType<typeof setInterval> | undefined
  private readonly typingReceived
  private readonly typingRejected
  private readonly typingPushed
  private readonly presencePublished
  private readonly presencePushed
  private readonly contactLoads: ConcurrencyLimit

  constructor(
    private readonly redis: Redis,
    private readonly hub: RealtimeHub,
    private readonly limiter: RateLimiter,
    private readonly options: EphemeralOptions,
    private readonly logger: Logger,
    metrics: Metrics,
  ) {
    if (!('presenceChange' in redis))
      redis.defineCommand('presenceChange', { numberOfKeys: 4, lua: PRESENCE_SCRIPT })
    // Pub/sub channels are not keys: ioredis does not prefix them, so the prefix is added here.
    this.channel = `${redis.options.keyPrefix ?? ''}${EPHEMERAL_CHANNEL}`
    this.subscriber = redis.duplicate()
    this.contactLoads = new ConcurrencyLimit(options.chat.contactLoads)
    const contactLoads = this.contactLoads
    metrics.gauge(
      'presence_contact_loads_waiting',
      "Sockets waiting for their user's contacts from chat (loads run PRESENCE_CONTACT_LOADS at a time)",
      [],
      function () {
        this.set(contactLoads.waiting)
      },
    )
    this.typingReceived = metrics.counter('typing_frames_received_total', 'Typing frames sent by clients')
    this.typingRejected = metrics.counter(
      'typing_frames_rejected_total',
      'Typing and presence frames refused, by reason',
      ['reason'],
    )
    this.typingPushed = metrics.counter(
      'typing_fanout_total',
      'Typing frames pushed to WebSocket clients by this replica',
    )
    this.presencePublished = metrics.counter(
      'presence_changes_published_total',
      'Presence changes published, by status',
      ['status'],
    )
    this.presencePushed = metrics.counter(
      'presence_changes_delivered_total',
      'Presence frames pushed to WebSocket clients by this replica',
    )
  }

  /** Listens on the channel (resubscribed by ioredis after a reconnect) and starts the timer. */
  async start(): Promise<void> {
    this.subscriber.on('error', (error: Error) =>
      this.logger.debug({ err: error.message }, 'ephemeral subscriber unavailable'),
    )
    this.subscriber.on('message', (channel: string, message: string) => {
      if (channel === this.channel) this.onSignal(message)
    })
    const subscribed = new Promise<void>((resolve) => {
      const subscribe = () =>
        this.subscriber.subscribe(this.channel).then(
          () => resolve(),
          (error: unknown) =>
            this.logger.warn({ err: error instanceof Error ? error.message : error }, 'subscribe failed'),
        )
      if (this.subscriber.status === 'ready') void subscribe()
      this.subscriber.on('ready', () => void subscribe())
    })
    // Without Redis the gateway starts anyway: typing and presence resume once it is back.
    await Promise.race([subscribed, Bun.sleep(2_000)])
    this.timer ??= setInterval(() => void this.tick(), this.options.intervalMs)
    this.timer.unref()
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    this.subscriber.disconnect()
  }

  /** Whether a client frame is this module's (typing, presence). */
  handles(message: unknown): boolean {
    return isEphemeralFrame(message)
  }

  /**
   * An admitted socket: loads the user's contacts (first socket on this replica), publishes
   * `online` if this is their first connection anywhere, then sends the contacts' statuses.
   */
  async opened(userId: string, connectionId: string, token: string, socket: PushSocket): Promise<void> {
    const connection: LocalConnection = {
      id: connectionId,
      userId,
      token,
      socket,
      invalidFrames: 0,
      typing: new Map(),
    }
    this.connections.set(connectionId, connection)
    let sockets = this.byUser.get(userId)
    if (!sockets) {
      sockets = new Map()
      this.byUser.set(userId, sockets)
    }
    sockets.set(connectionId, connection)
    if (!this.contacts.isAttached(userId)) await this.loadContacts(userId, token)
    await this.changePresence(userId, '', connectionId)
    if (this.connections.has(connectionId)) await this.sendSnapshot(connection)
  }

  /** The socket closed: stops its typing, updates presence, forgets the user with their last socket here. */
  async closed(connectionId: string): Promise<void> {
    const connection = this.connections.get(connectionId)
    if (!connection) return
    this.connections.delete(connectionId)
    const sockets = this.byUser.get(connection.userId)
    sockets?.delete(connectionId)
    const now = Date.now()
    for (const [conversationId, { at, to }] of connection.typing)
      if (now - at < TYPING_EXPIRY_SECONDS * 1000)
        await this.signal({ kind: 'typing', conversationId, userId: connection.userId, state: 'stop', to })
    await this.changePresence(connection.userId, 'gone', connectionId)
    if (sockets?.size === 0) {
      this.byUser.delete(connection.userId)
      this.contacts.detach(connection.userId)
    }
  }

  /** A typing or presence frame from a client. */
  async receive(connectionId: string, message: unknown): Promise<void> {
    const connection = this.connections.get(connectionId)
    if (!connection || !isEphemeralFrame(message)) return
    if (message.type === 'typing') {
      this.typingReceived.inc()
      const parsed = parseFrame(TypingFrame, message)
      if (!parsed.ok) return this.invalid(connection, parsed.error)
      return this.typing(connection, parsed.frame.conversationId, parsed.frame.state)
    }
    const parsed = parseFrame(PresenceFrame, message)
    if (!parsed.ok) return this.invalid(connection, parsed.error)
    const decision = await this.limiter.consume('presence', `user:${connection.userId}`)
    if (!decision.allowed)
      return this.refuse(connection, 'rate_limited', {
        type: 'error',
        code: 'rate_limited',
        retryAfterSeconds: decision.retryAfterSeconds,
      })
    await this.changePresence(connection.userId, parsed.frame.status, connectionId)
  }

  /** A membership event: updates contacts and drops cached participant lists of the conversation. */
  membershipChanged(change: MembershipChange, leftUserId?: string): void {
    this.cached.delete(change.conversationId)
    this.refused.delete(change.conversationId)
    for (const userId of leftUserId ? [...change.participantIds, leftUserId] : change.participantIds)
      this.loading.get(userId)?.replay.push(change)
    this.contacts.apply(change)
  }

  /** Refreshes the presence of this replica's users, and sweeps users whose replica died. */
  async tick(): Promise<void> {
    if (this.redis.status !== 'ready') return
    const now = Date.now()
    const { presenceTtlMs: ttl } = this.options
    try {
      const refresh = this.redis.pipeline()
      for (const userId of this.byUser.keys())
        refresh
          .zadd(PRESENCE_SEEN_KEY, 'XX', 'GT', now + ttl, userId)
          .pexpire(presenceStatusKey(userId), ttl)
          .pexpire(presenceAwayKey(userId), ttl)
      if (refresh.length > 0) await refresh.exec()
      // Bounded per tick; the rest is picked up by the next one.
      const due = await this.redis.zrangebyscore(PRESENCE_SEEN_KEY, '-inf', now, 'LIMIT', 0, 200)
      for (const userId of due) await this.changePresence(userId, '', '')
    } catch (error) {
      this.logger.debug({ err: error instanceof Error ? error.message : error }, 'presence tick failed')
    }
  }

  private async typing(connection: LocalConnection, conversationId: string, state: TypingState) {
    const { userId } = connection
    const decision = await this.limiter.consume('typing', `user:${userId}:conversation:${conversationId}`)
    if (!decision.allowed)
      return this.refuse(connection, 'rate_limited', {
        type: 'error',
        code: 'rate_limited',
        retryAfterSeconds: decision.retryAfterSeconds,
        conversationId,
      })
    const membership = await this.membership(connection, conversationId)
    if (membership.kind !== 'member')
      return membership.kind === 'not_member'
        ? this.refuse(connection, 'not_participant', {
            type: 'error',
            code: 'not_participant',
            conversationId,
          })
        : this.refuse(connection, 'unavailable', { type: 'error', code: 'unavailable', conversationId })
    const to = [...membership.participants].filter((participant) => participant !== userId)
    if (state === 'start') connection.typing.set(conversationId, { at: Date.now(), to })
    else connection.typing.delete(conversationId)
    await this.signal({ kind: 'typing', conversationId, userId, state, to })
  }

  /**
   * Whether the user is in the conversation, and who else is: from the contact index (exact),
   * else a short-lived cache, else chat itself (as the user; such a lookup is charged to the
   * user's `authenticated` quota so unknown ids cannot be used to flood chat).
   */
  private async membership(connection: LocalConnection, conversationId: string): Promise<Membership> {
    const { userId } = connection
    const now = Date.now()
    const known = this.contacts.participants(conversationId) ?? this.fresh(conversationId, now)
    if (known) return known.has(userId) ? { kind: 'member', participants: known } : { kind: 'not_member' }
    if ((this.refused.get(conversationId)?.get(userId) ?? 0) > now) return { kind: 'not_member' }
    const decision = await this.limiter.consume('authenticated', `user:${userId}`)
    if (!decision.allowed) return { kind: 'unavailable' }
    try {
      const response = await fetch(
        `${this.options.chat.baseUrl}/conversations/${encodeURIComponent(conversationId)}`,
        {
          headers: { authorization: `Bearer ${connection.token}`, accept: 'application/json' },
          signal: AbortSignal.timeout(this.options.chat.timeoutMs),
        },
      )
      if (response.status === 404) {
        await response.body?.cancel()
        const refused = this.refused.get(conversationId) ?? new Map<string, number>()
        this.remember(this.refused, conversationId, refused.set(userId, now + MEMBERSHIP_CACHE_MS))
        return { kind: 'not_member' }
      }
      const body: unknown = response.ok ? await response.json() : undefined
      if (!Value.Check(ChatConversation, body)) {
        this.logger.warn({ status: response.status }, 'chat answered a conversation lookup unexpectedly')
        return { kind: 'unavailable' }
      }
      const participants = new Set(body.participants.map((participant) => participant.userId))
      this.remember(this.cached, conversationId, { participants, expiresAt: now + MEMBERSHIP_CACHE_MS })
      return participants.has(userId) ? { kind: 'member', participants } : { kind: 'not_member' }
    } catch (error) {
      this.logger.warn({ err: error instanceof Error ? error.message : error }, 'chat lookup failed')
      return { kind: 'unavailable' }
    }
  }

  private fresh(conversationId: string, now: number): ReadonlySet<string> | undefined {
    const entry = this.cached.get(conversationId)
    if (entry && entry.expiresAt > now) return entry.participants
    if (entry) this.cached.delete(conversationId)
    return undefined
  }

  /** Sets a bounded map's entry, evicting the oldest when full. */
  private remember<V>(map: Map<string, V>, key: string, value: V): void {
    if (!map.has(key) && map.size >= MAX_CACHED_CONVERSATIONS) {
      const oldest = map.keys().next()
      if (!oldest.done) map.delete(oldest.value)
    }
    map.set(key, value)
  }

  /** Loads the user's contacts once, however many sockets open at the same time. */
  private loadContacts(userId: string, token: string): Promise<void> {
    const inFlight = this.loading.get(userId)
    if (inFlight) return inFlight.done
    const replay: MembershipChange[] = []
    const done = this.contactLoads
      .run(() => this.listConversations(token))
      .then((listed) => {
        this.loading.delete(userId)
        // The user may have gone while chat answered.
        if (!this.byUser.has(userId)) return
        this.contacts.attach(userId, listed)
        for (const change of replay) this.contacts.apply(change)
      })
    this.loading.set(userId, { done, replay })
    return done
  }

  /** The user's most recently active conversations from chat, at most MAX_CONTACT_CONVERSATIONS. */
  private async listConversations(token: string): Promise<MembershipChange[]> {
    const listed: MembershipChange[] = []
    try {
      let cursor: string | null = null
      do {
        const query = new URLSearchParams({ limit: String(CONTACT_PAGE_SIZE) })
        if (cursor) query.set('cursor', cursor)
        const response = await fetch(`${this.options.chat.baseUrl}/conversations?${query}`, {
          headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
          signal: AbortSignal.timeout(this.options.chat.timeoutMs),
        })
        const page: unknown = response.ok ? await response.json() : undefined
        if (!Value.Check(ChatConversationPage, page)) throw new Error(`chat answered ${response.status}`)
        for (const conversation of page.items)
          listed.push({
            conversationId: conversation.id,
            participantIds: conversation.participants.map((participant) => participant.userId),
          })
        cursor = page.nextCursor
      } while (cursor && listed.length < MAX_CONTACT_CONVERSATIONS)
    } catch (error) {
      // Presence still works for contacts learnt from later membership events.
      this.logger.warn({ err: error instanceof Error ? error.message : error }, 'contacts not loaded')
    }
    return listed.slice(0, MAX_CONTACT_CONVERSATIONS)
  }

  /** Runs the presence script and publishes the change, if the user's status changed. */
  private async changePresence(userId: string, op: string, connectionId: string): Promise<void> {
    if (this.redis.status !== 'ready') return
    try {
      const status = await (this.redis as RedisWithPresence).presenceChange(
        presenceKey(userId),
        presenceAwayKey(userId),
        presenceStatusKey(userId),
        PRESENCE_SEEN_KEY,
        Date.now(),
        userId,
        this.options.presenceTtlMs,
        op,
        connectionId,
      )
      if (!status) return
      this.presencePublished.inc({ status })
      await this.signal({ kind: 'presence', userId, status })
    } catch (error) {
      this.logger.debug({ err: error instanceof Error ? error.message : error }, 'presence update failed')
    }
  }

  /**
   * Contacts' current statuses (those online or away; bounded), sent once per socket, possibly
   * empty: from then on the socket receives every change.
   */
  private async sendSnapshot(connection: LocalConnection): Promise<void> {
    const contacts = this.contacts.contactsOf(connection.userId).slice(0, MAX_SNAPSHOT_CONTACTS)
    if (this.redis.status !== 'ready') return
    try {
      const statuses = contacts.length > 0 ? await this.redis.mget(contacts.map(presenceStatusKey)) : []
      this.push(connection, {
        type: 'presence.snapshot',
        contacts: contacts.flatMap((userId, index) => {
          const status = statuses[index]
          return status === 'online' || status === 'away' ? [{ userId, status }] : []
        }),
      })
    } catch (error) {
      this.logger.debug({ err: error instanceof Error ? error.message : error }, 'presence snapshot failed')
    }
  }

  /** Tells every replica (this one included); lost, like the indicator itself, if Redis is down. */
  private async signal(signal: EphemeralSignal): Promise<void> {
    if (this.redis.status !== 'ready') return
    try {
      await this.redis.publish(this.channel, JSON.stringify(signal))
    } catch (error) {
      this.logger.debug({ err: error instanceof Error ? error.message : error }, 'ephemeral publish failed')
    }
  }

  private onSignal(raw: string): void {
    let signal: EphemeralSignal
    try {
      signal = JSON.parse(raw) as EphemeralSignal
    } catch {
      return
    }
    if (signal.kind === 'typing') {
      const { conversationId, userId, state } = signal
      const payload = JSON.stringify({
        type: 'typing',
        conversationId,
        userId,
        state,
      } satisfies EphemeralPush)
      const reached = this.pushTo(signal.to, payload)
      if (reached > 0) this.typingPushed.inc(reached)
      return
    }
    const { userId, status } = signal
    const payload = JSON.stringify({ type: 'presence', userId, status } satisfies EphemeralPush)
    const reached = this.pushTo(this.contacts.watchersOf(userId), payload)
    if (reached > 0) this.presencePushed.inc(reached)
  }

  private pushTo(userIds: Iterable<string>, payload: string): number {
    let reached = 0
    for (const userId of userIds)
      for (const connection of this.byUser.get(userId)?.values() ?? [])
        if (this.hub.send(connection, payload)) reached++
    return reached
  }

  private push(connection: LocalConnection, frame: EphemeralPush): void {
    this.hub.send(connection, JSON.stringify(frame))
  }

  private refuse(connection: LocalConnection, reason: string, frame: ErrorFrame): void {
    this.typingRejected.inc({ reason })
    this.push(connection, frame)
  }

  /** A malformed frame is answered; a connection that keeps sending them is closed. */
  private invalid(connection: LocalConnection, frame: ErrorFrame): void {
    this.refuse(connection, 'invalid_frame', frame)
    if (++connection.invalidFrames > MAX_INVALID_FRAMES)
      connection.socket.close(CLOSE_POLICY_VIOLATION, 'too many invalid frames')
  }
}
