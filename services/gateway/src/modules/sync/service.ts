import type { Logger, Metrics } from '@parley/common'
import type { Redis } from '@parley/common/redis'
import { audienceOf, type CloudEvent, type UserStreamEventType } from '@parley/contracts'
import {
  compareStreamIds,
  type ResyncReason,
  type StreamEntry,
  type StreamPosition,
  streamIdTime,
} from './model'

export const EPOCH_KEY = 'stream:epoch'

export function streamKey(userId: string): string {
  return `stream:${userId}`
}

/** Marks an event as appended (for as long as streams keep it), so a redelivery appends nothing. */
export function appendedKey(eventId: string): string {
  return `stream-event:${eventId}`
}

/**
 * Appends one event to the stream of every member of its audience and announces the new
 * entries on the push channel, atomically: an event is in every stream and announced, or
 * (already appended: a redelivery) nowhere again. The epoch is created on first use.
 * KEYS: epoch, appended marker, then one stream per member.
 * ARGV: candidate epoch, retention ms, max entries, min id, channel, type, id, time, data, then
 * the members' user ids (in KEYS order).
 * Message: a JSON header {epoch, to: [[userId, streamId]…], type, id, time}, a newline, the data.
 */
const APPEND_SCRIPT = `
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return 0 end
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
local to = {}
for index = 3, #KEYS do
  local id = redis.call('XADD', KEYS[index], 'MAXLEN', '~', ARGV[3], '*',
    'type', ARGV[6], 'id', ARGV[7], 'time', ARGV[8], 'data', ARGV[9])
  redis.call('XTRIM', KEYS[index], 'MINID', '~', ARGV[4])
  redis.call('PEXPIRE', KEYS[index], ARGV[2])
  to[#to + 1] = '["' .. ARGV[index + 7] .. '","' .. id .. '"]'
end
redis.call('PUBLISH', ARGV[5], '{"epoch":"' .. epoch .. '","to":[' .. table.concat(to, ',') ..
  '],"type":"' .. ARGV[6] .. '","id":' .. cjson.encode(ARGV[7]) .. ',"time":"' .. ARGV[8] .. '"}\\n' .. ARGV[9])
return #to
`

/**
 * One read of a user's stream: the epoch (created on first use), the head (last id, '' when the
 * stream does not exist), the first retained id, how many entries were trimmed, up to ARGV[3]
 * entries after ARGV[2] (none when ''), and Redis' clock (seconds, microseconds).
 */
const READ_SCRIPT = `
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
local now = redis.call('TIME')
if redis.call('EXISTS', KEYS[2]) == 0 then return {epoch, '', '', 0, {}, now[1], now[2]} end
local info = redis.call('XINFO', 'STREAM', KEYS[2])
local fields = {}
for index = 1, #info, 2 do fields[info[index]] = info[index + 1] end
local first = ''
if type(fields['first-entry']) == 'table' then first = fields['first-entry'][1] end
local entries = {}
if ARGV[2] ~= '' then entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[2], '+', 'COUNT', ARGV[3]) end
return {epoch, fields['last-generated-id'], first, fields['entries-added'] - fields['length'], entries, now[1], now[2]}
`

type RawEntry = [string, string[]]
type ReadReply = [string, string, string, number, RawEntry[], string, string]

type RedisWithStreams = Redis & {
  appendToStreams(keyCount: number, ...keysAndArgs: (string | number)[]): Promise<number>
  readStream(
    epochKey: string,
    stream: string,
    epoch: string,
    since: string,
    count: number,
  ): Promise<ReadReply>
}

export type StreamOptions = { retentionDays: number; maxEvents: number }

/** A page of a stream after a position, or why the position cannot be resumed from. */
export type StreamRead =
  | {
      resync: false
      entries: StreamEntry[]
      /** After the last entry returned, or the position read from (the head when none was given). */
      position: StreamPosition
      hasMore: boolean
    }
  | {
      resync: true
      reason: ResyncReason /** The head: where to continue once refetched. */
      position: StreamPosition
    }

function newEpoch(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(8))).toString('hex')
}

function entryOf([streamId, fields]: RawEntry): StreamEntry {
  const values: Record<string, string> = {}
  for (let index = 0; index < fields.length; index += 2)
    values[fields[index] as string] = fields[index + 1] as string
  return {
    streamId,
    type: values.type as UserStreamEventType,
    id: values.id ?? '',
    time: values.time ?? '',
    data: values.data ?? 'null',
  }
}

/**
 * The per-user ordered event streams in Redis (`stream:<userId>`): every event a user sees,
 * kept STREAM_RETENTION_DAYS and at most about STREAM_MAX_EVENTS per user. `stream:epoch` is a
 * random generation id: a Redis that lost its data starts a new one, so older cursors are
 * refused (resync) instead of silently resuming in a different stream.
 */
export class UserStreams {
  private readonly retentionMs: number
  private readonly appended
  private readonly resyncs
  /** The push channel (pub/sub ignores the key prefix, so it is added here). */
  readonly channel: string

  constructor(
    private readonly redis: Redis,
    private readonly options: StreamOptions,
    metrics: Metrics,
  ) {
    if (!('appendToStreams' in redis)) {
      redis.defineCommand('appendToStreams', { lua: APPEND_SCRIPT })
      redis.defineCommand('readStream', { numberOfKeys: 2, lua: READ_SCRIPT, readOnly: false })
    }
    this.retentionMs = options.retentionDays * 86_400_000
    this.channel = `${redis.options.keyPrefix ?? ''}stream:pushes`
    this.appended = metrics.counter(
      'realtime_stream_appends_total',
      'Events appended to the user streams (once per event), by type and outcome (appended, duplicate)',
      ['type', 'outcome'],
    )
    this.resyncs = metrics.counter(
      'realtime_resyncs_total',
      'Resume points refused with resync_required / 410, by reason (epoch, expired, trimmed)',
      ['reason'],
    )
  }

  /**
   * Appends the event to its audience's streams and announces it (one script call). Issues the
   * call before its first await, so calls made in delivery order reach Redis in that order.
   */
  async append(event: CloudEvent<UserStreamEventType>): Promise<boolean> {
    const audience = audienceOf(event)
    if (audience.length === 0) return false
    const keys = [EPOCH_KEY, appendedKey(event.id), ...audience.map(streamKey)]
    const minId = `${Date.now() - this.retentionMs}-0`
    const appended = await (this.redis as RedisWithStreams).appendToStreams(
      keys.length,
      ...keys,
      newEpoch(),
      this.retentionMs,
      this.options.maxEvents,
      minId,
      this.channel,
      event.type,
      event.id,
      event.time,
      JSON.stringify(event.data),
      ...audience,
    )
    this.appended.inc({ type: event.type, outcome: appended > 0 ? 'appended' : 'duplicate' })
    return appended > 0
  }

  /**
   * Up to `limit` entries after `since`, or the head without one. A `since` of another epoch,
   * older than the retention, or before entries that were trimmed is answered `resync`: never
   * a page with a silent gap. (Trimming removes the oldest entries, so "since is before the
   * first retained entry of a trimmed stream" may also refuse the one cursor right before it.)
   */
  async read(userId: string, since: StreamPosition | undefined, limit: number): Promise<StreamRead> {
    const [epoch, head, first, trimmed, raw, seconds, micros] = await (
      this.redis as RedisWithStreams
    ).readStream(EPOCH_KEY, streamKey(userId), newEpoch(), since?.id ?? '', limit + 1)
    // A stream that does not exist gets its first entry at Redis' clock or later.
    const nowMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)
    const headPosition: StreamPosition = { epoch, id: head || `${nowMs - 1}-0` }
    if (!since) return { resync: false, entries: [], position: headPosition, hasMore: false }
    const reason = this.refusal(since, epoch, first, Number(trimmed), nowMs)
    if (reason) {
      this.resyncs.inc({ reason })
      return { resync: true, reason, position: headPosition }
    }
    const entries = raw.slice(0, limit).map(entryOf)
    const last = entries.at(-1)
    return {
      resync: false,
      entries,
      position: last ? { epoch, id: last.streamId } : since,
      hasMore: raw.length > limit,
    }
  }

  private refusal(
    since: StreamPosition,
    epoch: string,
    first: string,
    trimmed: number,
    nowMs: number,
  ): ResyncReason | undefined {
    if (since.epoch !== epoch) return 'epoch'
    // Also covers a stream that expired (no event for the whole retention) and started again.
    if (streamIdTime(since.id) < nowMs - this.retentionMs) return 'expired'
    if (trimmed > 0 && first && compareStreamIds(since.id, first) < 0) return 'trimmed'
    return undefined
  }
}

/** An appended event as the push channel announces it: the entry id in each member's stream. */
export type StreamPush = {
  epoch: string
  to: [userId: string, streamId: string][]
  type: UserStreamEventType
  id: string
  time: string
  /** The event's data as JSON text. */
  data: string
}

export function parsePush(message: string): StreamPush | undefined {
  const newline = message.indexOf('\n')
  if (newline < 0) return undefined
  try {
    const header = JSON.parse(message.slice(0, newline)) as Omit<StreamPush, 'data'>
    return { ...header, data: message.slice(newline + 1) }
  } catch {
    return undefined
  }
}

export type FeedListener = {
  /** An appended event (on the subscribed connection, in append order). */
  push(push: StreamPush): void
  /** The subscription was lost: announcements until the next `up` are missed. */
  down(): void
  /** (Re)subscribed: every announcement from now on arrives. */
  up(): void
}

/**
 * This replica's subscription to the push channel, on its own Redis connection. Pub/sub
 * delivers at most once: the listener hears when the subscription drops and when it is back,
 * so sockets catch up from their streams instead of missing what was announced meanwhile.
 */
export class StreamFeed {
  private readonly subscriber: Redis
  private listener: FeedListener | undefined
  private isUp = false
  /** Bumped on every (re)subscription, so a catch-up can tell whether it overlapped a drop. */
  generation = 0

  constructor(
    redis: Redis,
    private readonly channel: string,
    private readonly logger: Logger,
  ) {
    this.subscriber = redis.duplicate({ autoResubscribe: false, enableOfflineQueue: true })
    this.subscriber.on('error', () => undefined)
  }

  get subscribed(): boolean {
    return this.isUp
  }

  start(listener: FeedListener): void {
    this.listener = listener
    this.subscriber.on('message', (_channel: string, message: string) => {
      const push = parsePush(message)
      if (push) listener.push(push)
      else this.logger.warn('malformed stream push ignored')
    })
    this.subscriber.on('close', () => {
      if (!this.isUp) return
      this.isUp = false
      listener.down()
    })
    this.subscriber.on('ready', () => void this.subscribe())
    if (this.subscriber.status === 'ready') void this.subscribe()
  }

  private async subscribe(): Promise<void> {
    try {
      await this.subscriber.subscribe(this.channel)
    } catch (error) {
      // The connection dropped again; its next 'ready' retries.
      this.logger.debug({ err: error instanceof Error ? error.message : error }, 'push subscription failed')
      return
    }
    this.generation++
    this.isUp = true
    this.listener?.up()
  }

  async close(): Promise<void> {
    this.listener = undefined
    this.subscriber.removeAllListeners('close')
    try {
      await this.subscriber.quit()
    } catch {
      this.subscriber.disconnect()
    }
  }
}
