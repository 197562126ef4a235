import Redis from 'ioredis'
import type { Logger } from './logger'

export type { Redis }

/**
 * A Redis client that fails fast while disconnected (no offline queue) so callers can
 * bypass the cache or fall back, and reconnects in the background with capped backoff.
 */
export function createRedis(url: string, logger: Logger, options: { keyPrefix?: string } = {}): Redis {
  const client = new Redis(url, {
    keyPrefix: options.keyPrefix,
    connectTimeout: 2000,
    commandTimeout: 1000,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
  })
  let healthy = true
  client.on('error', (error) => {
    if (healthy) logger.warn({ err: error.message }, 'redis unavailable')
    healthy = false
  })
  client.on('ready', () => {
    if (!healthy) logger.info('redis reconnected')
    healthy = true
  })
  return client
}

export async function closeRedis(client: Redis): Promise<void> {
  try {
    await client.quit()
  } catch {
    client.disconnect()
  }
}
