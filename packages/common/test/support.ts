import type { EventType } from '@parley/contracts'
import { testInfra } from '@parley/testkit'
import { createRuntime, type Metrics, type Runtime } from '../src'
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

export function emailVerified() {
  return {
    userId: Bun.randomUUIDv7(),
    email: `v${crypto.randomUUID().slice(0, 8)}@example.com`,
    verifiedAt: new Date().toISOString(),
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

/** Sum of `events_consumed_total` over the series whose labels include `labels`. */
export async function consumedCount(metrics: Metrics, labels: Record<string, string>): Promise<number> {
  const metric = metrics.registry.getSingleMetric('events_consumed_total')
  if (!metric) return 0
  const { values } = await metric.get()
  return values
    .filter((value) => Object.entries(labels).every(([key, expected]) => value.labels[key] === expected))
    .reduce((sum, value) => sum + value.value, 0)
}

/** Names of this vhost's queues starting with `prefix` (management API), e.g. a transient queue's. */
export async function queuesNamed(vhost: string, prefix: string): Promise<string[]> {
  const response = await fetch(`${testInfra.rabbitManagementUrl}/api/queues/${encodeURIComponent(vhost)}`, {
    headers: { authorization: `Basic ${btoa(`${testInfra.rabbitUser}:${testInfra.rabbitPassword}`)}` },
  })
  if (!response.ok) throw new Error(`RabbitMQ GET /queues: ${response.status}`)
  const queues = (await response.json()) as { name: string }[]
  return queues.map((queue) => queue.name).filter((name) => name.startsWith(prefix))
}
