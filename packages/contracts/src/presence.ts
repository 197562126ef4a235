/**
 * Presence convention shared by the gateway (writer) and the notification service (reader).
 * `presence:<userId>` is a sorted set of the user's live WebSocket connection ids, scored
 * by the epoch-millisecond instant each one expires; heartbeats push the score forward.
 * A user is online when any member scores in the future. The key itself also expires, so
 * a crashed gateway leaves nothing behind.
 */
export const PRESENCE_TTL_MS = 60_000
export const PRESENCE_HEARTBEAT_MS = 20_000

export function presenceKey(userId: string): string {
  return `presence:${userId}`
}
