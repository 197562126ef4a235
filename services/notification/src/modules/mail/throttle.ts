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
