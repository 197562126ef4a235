import type { Redis } from '@parley/common/redis'

/** At most one new-message email per recipient and conversation in this window. */
export const MESSAGE_EMAIL_WINDOW_MS = 10 * 60_000

// The holder is the event id, so a retry of the event that took the window keeps it, and
// only that event can give it back after a failed send.
const ACQUIRE = `
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then return 1 end
return 0`

const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`

export class MessageEmailThrottle {
  constructor(
    private readonly redis: Redis,
    private readonly windowMs = MESSAGE_EMAIL_WINDOW_MS,
  ) {}

  private key(recipientId: string, conversationId: string): string {
    return `notification:email-throttle:${recipientId}:${conversationId}`
  }

  /** True if `eventId` may email this recipient about this conversation now (and holds the window). */
  async acquire(recipientId: string, conversationId: string, eventId: string): Promise<boolean> {
    const result = await this.redis.eval(
      ACQUIRE,
      1,
      this.key(recipientId, conversationId),
      eventId,
      this.windowMs,
    )
    return result === 1
  }

  /** Gives the window back after a failed send, so the retry (or the next message) can email. */
  async release(recipientId: string, conversationId: string, eventId: string): Promise<void> {
    await this.redis.eval(RELEASE, 1, this.key(recipientId, conversationId), eventId)
  }
}

/** The window of the per-recipient cap on new-message emails, across all conversations. */
export const RECIPIENT_CAP_WINDOW_MS = 60 * 60_000

// A sorted set per recipient of the events that mailed them, scored by when (Redis' clock, so
// replicas agree): a sliding hour, never twice the cap across a window boundary. Member = event
// id, so a retry of an event already counted keeps its place instead of counting again.
const ACQUIRE_CAP = `
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], window)
return 1`

/**
 * At most `limit` new-message emails per recipient per sliding hour, however many conversations
 * they are added to: the per-conversation throttle alone lets N conversations send N emails.
 * One Lua script per decision, so replicas share the count atomically.
 */
export class RecipientEmailCap {
  constructor(
    private readonly redis: Redis,
    private readonly limit: number,
    private readonly windowMs = RECIPIENT_CAP_WINDOW_MS,
  ) {}

  private key(recipientId: string): string {
    return `notification:email-cap:${recipientId}`
  }

  /** True if `eventId` may email this recipient now (and counts against the cap). */
  async acquire(recipientId: string, eventId: string): Promise<boolean> {
    const result = await this.redis.eval(
      ACQUIRE_CAP,
      1,
      this.key(recipientId),
      eventId,
      this.windowMs,
      this.limit,
    )
    return result === 1
  }

  /** Uncounts an email that was not sent after all. */
  async release(recipientId: string, eventId: string): Promise<void> {
    await this.redis.zrem(this.key(recipientId), eventId)
  }
}
