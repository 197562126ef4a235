import type { EventType } from '@parley/contracts'
import { createRuntime, type Runtime } from '../src'
import { EventBus } from '../src/events'

export function userRegistered(
  overrides: Partial<{ userId: string; email: string; displayName: string }> = {},
) {
  return {
    userId: overrides.userId ?? Bun.randomUUIDv7(),
    email: overrides.email ?? `u${crypto.randomUUID().slice(0, 8)}@example.com`,
    displayName: overrides.displayName ?? 'Test User',
    emailVerified: false,
    roles: ['user'],
    createdAt: new Date().toISOString(),
  }
}

export function newBus(
  url: string,
  runtime: Runtime = createRuntime('events-test', process.env.TEST_LOG_LEVEL ?? 'silent'),
) {
  return new EventBus({
    url,
    exchange: 'parley.events',
    source: 'parley/test',
    prefetch: 20,
    logger: runtime.logger,
    metrics: runtime.metrics,
  })
}

/** Collects handled events of the given types on a fresh queue. */
export function collector<T extends EventType>() {
  const seen: { id: string; type: T; attempt: number; at: number }[] = []
  return {
    seen,
    ids: () => seen.map((entry) => entry.id),
    handler: async (event: { id: string; type: T }, context: { attempt: number }) => {
      seen.push({ id: event.id, type: event.type, attempt: context.attempt, at: Date.now() })
    },
  }
}
