import { afterAll, beforeAll, expect, test } from 'bun:test'
import { EventBus } from '@parley/common/events'
import { createPrivateRabbit, type PrivateRabbit, waitFor } from '@parley/testkit'
import { createHarness, type Harness, metricValue } from './harness'

// A broker of this file's own (testkit): stopping it disturbs no one else's tests. The auth
// app publishes to it; the harness's observer stays on the shared broker and is not used here.
let rabbit: PrivateRabbit
let h: Harness

beforeAll(async () => {
  rabbit = await createPrivateRabbit()
  await rabbit.start()
  h = await createHarness({ AMQP_URL: rabbit.url })
}, 120_000)

afterAll(async () => {
  await h.close()
  await rabbit.destroy()
})

test('registration succeeds while RabbitMQ is stopped; user.registered arrives after it restarts', async () => {
  const received: string[] = []
  const consumer = new EventBus({
    url: rabbit.url,
    exchange: 'parley.events',
    source: 'parley/test',
    prefetch: 10,
    logger: h.runtime.logger,
    metrics: h.runtime.metrics,
  })
  await consumer.subscribe({
    queue: 'test.registered',
    handlers: {
      'user.registered': async (event) => {
        received.push(event.data.userId)
      },
    },
  })
  await consumer.start()
  await consumer.connected(60_000)

  await rabbit.stop()
  await waitFor(() => !h.deps.bus.isConnected, { what: 'auth to notice the broker is gone' })
  const published = await metricValue(h.ops, 'outbox_published_total')
  const user = await h.register()
  // A few relay attempts (backoff 200, 400, 800 ms) fail: the event stays in the outbox.
  await Bun.sleep(1_500)
  const [pending] = await h.sql<{ type: string; user_id: string }[]>`
    select type, event->'data'->>'userId' as user_id from outbox`
  expect(pending).toEqual({ type: 'user.registered', user_id: user.id })
  expect(received).toEqual([])
  expect(await metricValue(h.ops, 'outbox_published_total')).toBe(published)

  await rabbit.start()
  await waitFor(() => received.includes(user.id), {
    timeoutMs: 60_000,
    what: 'user.registered after restart',
  })
  // Deleted once the broker confirmed, which may be just after the consumer got it.
  await waitFor(async () => (await h.count('outbox')) === 0, { what: 'the published row to be deleted' })
  await consumer.close()
}, 180_000)
