/**
 * The dashboards, alerts and metric catalogue against a real Prometheus scraping the end-to-end
 * stack: traffic that exercises every panel (errors, 429s, retries, dead letters, WebSockets, a
 * Redis outage of the stack's own Redis), then every panel query, variable query and rule
 * expression through Prometheus' HTTP API.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { mailsTo, uniqueName, waitFor } from '@parley/testkit'
import { openSocket, type TestSocket } from '../../services/gateway/test/harness'
import { type Stack, startStack } from '../e2e/stack'
import { panelQueries, RULES_FILE, variableQueries, type Window } from './dashboards'
import { type Prometheus, type Sample, startPrometheus } from './prometheus'

type Json = Record<string, unknown>
type User = { accessToken: string; user: { id: string; email: string }; password: string }

const ROOT = join(import.meta.dir, '..', '..')
const SCRAPE_SECONDS = 1
const RABBITMQ_PROMETHEUS = process.env.RABBITMQ_PROMETHEUS_URL ?? 'http://127.0.0.1:15692'
/** Ratio panels whose numerator is a failure: 0 while nothing fails, never "No data". */
const FAILURE_RATIOS = [
  '5xx ratio',
  'Error ratio by service (5xx)',
  'Rate-limited share',
  'Limits in memory (Redis down)',
  'Denied share by policy',
  'Email failure ratio',
]

/** Range counts and what the traffic makes them at least. */
const COUNTED_IN_RANGE: Record<string, number> = {
  'Dead-lettered (range)': 1,
  'Dead-lettered events in range': 1,
  'Throttled (range)': 1,
  'Hourly caps hit (range)': 1,
}

let stack: Stack
let prometheus: Prometheus
const namespace = uniqueName('obs')
let startedAt = 0
/** Healthy traffic ran between startedAt and quietUntil: no 5xx, 429 or Redis outage yet. */
let quietUntil = 0
let endedAt = 0

const now = () => Date.now() / 1000

beforeAll(async () => {
  stack = await startStack({
    gatewayEnv: {
      RATE_LIMIT_POLICIES: JSON.stringify({
        login: { limit: 2, windowSeconds: 60 },
        register: { limit: 100, windowSeconds: 60 },
      }),
    },
    // The second new-message email to one recipient within the hour hits the cap.
    serviceEnv: { notification: { MESSAGE_EMAIL_HOURLY_CAP: '1' } },
  })
  const services = [stack.gateway, stack.gateway2, stack.auth, stack.user, stack.chat, stack.notification]
  prometheus = await startPrometheus({
    ruleFiles: [RULES_FILE],
    jobs: [
      {
        job: 'parley',
        targets: services.map((service) => new URL(service.opsUrl).host),
        // What Kubernetes service discovery adds; the dashboards filter on it.
        labels: { namespace },
      },
      {
        job: 'rabbitmq',
        targets: [new URL(RABBITMQ_PROMETHEUS).host],
        metricsPath: '/metrics/detailed',
        // Only this stack's vhost: the shared broker holds every other test's queues too.
        params: { vhost: stack.vhost.name, family: 'queue_coarse_metrics' },
        labels: { namespace },
      },
    ],
  })
  await waitFor(
    async () => {
      const targets = await prometheus.targets()
      return targets.length === services.length + 1 && targets.every((target) => target.health === 'up')
    },
    { timeoutMs: 20_000, intervalMs: 250, what: 'every scrape target up' },
  )
  startedAt = now()
}, 120_000)

afterAll(async () => {
  await prometheus?.stop()
  await stack?.stop()
}, 60_000)

async function api(
  method: string,
  path: string,
  options: { body?: unknown; token?: string; gateway?: string } = {},
) {
  const response = await fetch(`${options.gateway ?? stack.gateway.url}/api/v1${path}`, {
    method,
    headers: {
      ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
    },
    ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
  })
  const text = await response.text()
  return { status: response.status, body: (text ? JSON.parse(text) : undefined) as Json }
}

async function register(name: string): Promise<User> {
  const password = `pw-${crypto.randomUUID()}`
  const email = `${name}.${crypto.randomUUID().slice(0, 8)}@obs.parley.test`
  const response = await api('POST', '/auth/register', { body: { email, displayName: name, password } })
  expect(response.status).toBe(201)
  return { ...(response.body as unknown as Omit<User, 'password'>), password }
}

async function verifyEmail(user: User) {
  expect((await api('POST', '/auth/verify-email/request', { token: user.accessToken })).status).toBe(202)
  const mail = await waitFor(
    async () => (await mailsTo(user.user.email)).find((m) => /\b\d{6}\b/.test(m.text)),
    { timeoutMs: 20_000, what: 'the verification email' },
  )
  const code = /\b(\d{6})\b/.exec(mail.text)?.[1]
  const confirmed = await api('POST', '/auth/verify-email/confirm', {
    token: user.accessToken,
    body: { code },
  })
  expect(confirmed.status).toBe(200)
}

const wsUrl = (gateway: string, since?: string) =>
  `${gateway.replace('http', 'ws')}/api/v1/ws${since ? `?since=${encodeURIComponent(since)}` : ''}`

async function createConversation(owner: User, participants: User[]) {
  return waitFor(
    async () => {
      const created = await api('POST', '/conversations', {
        token: owner.accessToken,
        body: { title: uniqueName('c'), participantIds: participants.map((p) => p.user.id) },
      })
      return created.status === 201 ? (created.body as { id: string }) : undefined
    },
    { timeoutMs: 20_000, what: 'conversation creation' },
  )
}

async function send(from: User, conversationId: string, body: string) {
  const sent = await api('POST', `/conversations/${conversationId}/messages`, {
    token: from.accessToken,
    body: { body, clientMessageId: crypto.randomUUID() },
  })
  return sent
}

/** The sum of a metric on a service's own /metrics. */
async function serviceMetric(opsUrl: string, name: string, labels: Record<string, string> = {}) {
  const text = await (await fetch(`${opsUrl}/metrics`)).text()
  let total = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue
    if (!Object.entries(labels).every(([key, value]) => line.includes(`${key}="${value}"`))) continue
    total += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return total
}

/** Waits until Prometheus has scraped a moment later than now (and evaluated its rules). */
async function settle() {
  await Bun.sleep(3 * SCRAPE_SECONDS * 1000)
}

const hasData = (samples: Sample[]) =>
  samples.some((sample) =>
    (sample.values ?? (sample.value ? [sample.value] : [])).some(([, value]) =>
      Number.isFinite(Number(value)),
    ),
  )

describe('observability on real engines', () => {
  test('traffic that exercises every panel: healthy first, then 429s, a Redis outage, retries, dead letters', async () => {
    const alice = await register('Alice')
    const bob = await register('Bob')
    const carol = await register('Carol')
    const dave = await register('Dave')
    // Only verified addresses get new-message emails; two codes make the email rates non-zero.
    await verifyEmail(bob)
    // A scrape between the two, so the rate of sent emails is not 0 everywhere.
    await Bun.sleep(2 * SCRAPE_SECONDS * 1000)
    await verifyEmail(carol)

    let aliceSocket: TestSocket = await openSocket(wsUrl(stack.gateway.url), alice.accessToken)
    const carolSocket = await openSocket(wsUrl(stack.gateway2.url), carol.accessToken)
    const daveSocket = await openSocket(wsUrl(stack.gateway.url), dave.accessToken)

    // Bob stays offline: his first new-message email is sent, the second of the conversation
    // throttled, the first of another conversation over his hourly cap of 1.
    const plans = await createConversation(alice, [bob, carol])
    const first = await send(alice, plans.id, 'Lunch at noon?')
    expect(first.status).toBe(201)
    const pushed = await aliceSocket.next<{ type: string; cursor: string; data: { messageId: string } }>(
      (frame) => frame.type === 'message.sent' && frame.data.messageId === first.body.id,
      20_000,
    )
    await waitFor(
      async () =>
        (await serviceMetric(stack.notification.opsUrl, 'notifications_emails_sent_total', {
          outcome: 'sent',
        })) >= 1,
      { timeoutMs: 20_000, what: 'the new-message email' },
    )
    expect((await send(alice, plans.id, 'Or one?')).status).toBe(201)
    const other = await createConversation(alice, [bob])
    expect((await send(alice, other.id, 'Another thread')).status).toBe(201)
    await waitFor(
      async () =>
        (await serviceMetric(stack.notification.opsUrl, 'notifications_emails_sent_total', {
          outcome: 'hourly_cap',
        })) >= 1 &&
        (await serviceMetric(stack.notification.opsUrl, 'notifications_emails_sent_total', {
          outcome: 'throttled',
        })) >= 1,
      { timeoutMs: 20_000, what: 'throttled and capped emails' },
    )

    // Typing and presence across the two replicas; a typing frame for a foreign conversation is refused.
    aliceSocket.socket.send(JSON.stringify({ type: 'typing', conversationId: plans.id, state: 'start' }))
    await carolSocket.next<{ type: string }>((frame) => frame.type === 'typing')
    aliceSocket.socket.send(
      JSON.stringify({ type: 'typing', conversationId: crypto.randomUUID(), state: 'start' }),
    )
    await aliceSocket.next<{ type: string; code?: string }>((frame) => frame.type === 'error')
    carolSocket.socket.send(JSON.stringify({ type: 'presence', status: 'away' }))
    await aliceSocket.next<{ type: string; status?: string }>(
      (frame) => frame.type === 'presence' && frame.status === 'away',
    )

    // Resumes: a reconnect with ?since= and a GET /sync replay what came after the cursor.
    aliceSocket.close()
    expect((await send(carol, plans.id, 'While you were away')).status).toBe(201)
    aliceSocket = await openSocket(wsUrl(stack.gateway2.url, pushed.cursor), alice.accessToken)
    await aliceSocket.next<{ type: string }>((frame) => frame.type === 'ready')
    const synced = await api('GET', `/sync?since=${encodeURIComponent(pushed.cursor)}`, {
      token: alice.accessToken,
    })
    expect(synced.status).toBe(200)

    // Cache lookups (profiles: a miss, then hits), listings, and 4xx answers.
    for (let index = 0; index < 3; index++) {
      expect((await api('GET', `/users/${bob.user.id}`, { token: alice.accessToken })).status).toBe(200)
      expect((await api('GET', '/conversations', { token: alice.accessToken })).status).toBe(200)
      expect(
        (await api('GET', `/conversations/${plans.id}/messages`, { token: bob.accessToken })).status,
      ).toBe(200)
    }
    expect((await api('GET', '/users/me')).status).toBe(401)
    expect((await api('GET', '/notifications', { token: bob.accessToken })).status).toBe(200)
    await settle()
    quietUntil = now()

    // 429: the third login attempt for one email within the minute.
    const statuses = []
    for (let index = 0; index < 3; index++)
      statuses.push(
        (await api('POST', '/auth/login', { body: { email: dave.user.email, password: 'wrong' } })).status,
      )
    expect(statuses).toEqual([401, 401, 429])

    // Redis outage (the stack's own Redis): limits fall back to memory; the message sent meanwhile
    // fails the stream append and the email's presence check, is retried and dead-lettered.
    const deadBefore = await serviceMetric(stack.notification.opsUrl, 'events_consumed_total', {
      outcome: 'dead',
    })
    await stack.redis.stop()
    try {
      const outageStatuses = new Set<string>()
      expect((await send(alice, plans.id, 'Is Redis down?')).status).toBe(201)
      const until = Date.now() + 4_000
      while (Date.now() < until) {
        outageStatuses.add(`me ${(await api('GET', '/users/me', { token: alice.accessToken })).status}`)
        outageStatuses.add(`sync ${(await api('GET', '/sync', { token: alice.accessToken })).status}`)
        await Bun.sleep(200)
      }
      // Proxied routes are served; the streams live in Redis, so /sync fails (5xx: the error panels).
      expect(outageStatuses.has('me 200')).toBe(true)
      expect([...outageStatuses].some((status) => /^sync 5\d\d$/.test(status))).toBe(true)
      await waitFor(
        async () =>
          (await serviceMetric(stack.notification.opsUrl, 'events_consumed_total', { outcome: 'dead' })) >
          deadBefore,
        { timeoutMs: 20_000, what: 'a dead-lettered event' },
      )
      expect(
        await serviceMetric(stack.gateway.opsUrl, 'ratelimit_decisions_total', { store: 'memory' }),
      ).toBeGreaterThan(0)
    } finally {
      await stack.redis.start()
    }
    // Redis lost the streams: an old resume point asks for a resync.
    const resumed = await openSocket(wsUrl(stack.gateway.url, pushed.cursor), alice.accessToken)
    await resumed.next<{ type: string }>((frame) => frame.type === 'resync_required', 20_000)
    resumed.close()

    // A revoked session closes its socket (websocket_closed_total{reason="revoked"}).
    expect((await api('POST', '/auth/revoke', { token: dave.accessToken })).status).toBe(204)
    await daveSocket.closed
    aliceSocket.close()
    carolSocket.close()
    await settle()
    endedAt = now()
  }, 120_000)

  test('every dashboard panel query evaluates and returns data', async () => {
    expect(endedAt).toBeGreaterThan(0)
    const window: Window = {
      rangeSeconds: Math.ceil(endedAt - startedAt),
      stepSeconds: SCRAPE_SECONDS,
      scrapeIntervalSeconds: SCRAPE_SECONDS,
    }
    const queries = panelQueries(window)
    const empty: string[] = []
    for (const query of queries) {
      const result = query.instant
        ? await prometheus.query(query.expr, endedAt)
        : await prometheus.queryRange(query.expr, startedAt, endedAt, window.stepSeconds)
      if (!hasData(result.result))
        empty.push(`${query.dashboard} / ${query.panel} (${query.refId}): ${query.expr}`)
    }
    const panels = new Set(queries.map((query) => `${query.dashboard} / ${query.panel}`))
    console.log(
      `${panels.size} panels, ${queries.length} queries, ${queries.length - empty.length} with data`,
    )
    expect(empty).toEqual([])
    // The counts over the range see events whose series first appeared in it.
    for (const [panel, atLeast] of Object.entries(COUNTED_IN_RANGE)) {
      const query = queries.find((candidate) => candidate.panel === panel)
      const result = await prometheus.query(query?.expr ?? '', endedAt)
      const total = result.result.reduce((sum, sample) => sum + Number(sample.value?.[1]), 0)
      expect({ panel, atLeast: total >= atLeast }).toEqual({ panel, atLeast: true })
    }
  }, 60_000)

  test('failure ratios are 0, not "No data", while nothing fails', async () => {
    const window: Window = {
      rangeSeconds: Math.ceil(quietUntil - startedAt),
      stepSeconds: SCRAPE_SECONDS,
      scrapeIntervalSeconds: SCRAPE_SECONDS,
    }
    const ratios = panelQueries(window).filter((query) => FAILURE_RATIOS.includes(query.panel))
    expect(ratios.map((query) => query.panel).sort()).toEqual([...FAILURE_RATIOS].sort())
    for (const query of ratios) {
      const result = await prometheus.queryRange(query.expr, startedAt, quietUntil, window.stepSeconds)
      const values = result.result
        .flatMap((sample) => (sample.values ?? []).map(([, value]) => Number(value)))
        .filter(Number.isFinite)
      expect({ panel: query.panel, hasData: values.length > 0 }).toEqual({
        panel: query.panel,
        hasData: true,
      })
      expect({ panel: query.panel, max: Math.max(...values) }).toEqual({ panel: query.panel, max: 0 })
    }
  }, 60_000)

  test('the template variables resolve to the scraped namespace and services', async () => {
    const window: Window = { rangeSeconds: 60, stepSeconds: 1, scrapeIntervalSeconds: 1 }
    for (const variable of variableQueries(window)) {
      const values = await prometheus.labelValues(variable.label, variable.match, startedAt, endedAt)
      if (variable.name === 'namespace') expect(values).toContain(namespace)
      if (variable.name === 'service')
        expect(values.sort()).toEqual(['auth', 'chat', 'gateway', 'notification', 'user'])
    }
  })

  test('every alert and recording rule evaluates without error; the outage and dead letters show', async () => {
    const rules = await prometheus.rules()
    const fileRules = readFileSync(RULES_FILE, 'utf8').match(/^\s+- (alert|record): /gm) ?? []
    expect(rules.length).toBe(fileRules.length)
    for (const rule of rules) {
      expect({ rule: rule.name, health: rule.health, error: rule.lastError ?? '' }).toEqual({
        rule: rule.name,
        health: 'ok',
        error: '',
      })
      // Also as a query over the whole run, the way someone debugging the alert would.
      const result = await prometheus.queryRange(rule.query, startedAt, endedAt, SCRAPE_SECONDS)
      expect(result.resultType).toBe('matrix')
    }
    const state = (name: string) => rules.find((rule) => rule.name === name)?.state
    // No `for`: fires on the dead letter of the outage. The fallback needs 5 minutes to fire.
    expect(state('ParleyEventsDeadLettered')).toBe('firing')
    expect(state('ParleyRedisFallback')).toBe('pending')
    // The failed /sync calls of the outage are well over 5% of a quiet stack's requests.
    expect(state('ParleyHighErrorRatio')).toBe('pending')
    expect(state('ParleyOutboxDeadEvents')).toBe('inactive')
  })

  test('the metric catalogue (docs/metrics.md) is what the services export', async () => {
    const catalogue = new Map<string, { type: string; services: string[]; labels: string[] }>()
    for (const line of readFileSync(join(ROOT, 'docs', 'metrics.md'), 'utf8').split('\n')) {
      const cells = line.split('|').map((cell) => cell.trim())
      const name = /^`([a-z_:]+)`$/.exec(cells[1] ?? '')?.[1]
      if (!name) continue
      catalogue.set(name, {
        type: cells[2] ?? '',
        labels: [...(cells[3] ?? '').matchAll(/`(\w+)`/g)].map((match) => match[1] as string),
        services: (cells[4] ?? '').split(',').map((service) => service.trim()),
      })
    }
    const exported = new Map<string, { type: string; services: Set<string>; labels: Set<string> }>()
    const scrapes: [string, string][] = [
      ['gateway', `${stack.gateway.opsUrl}/metrics`],
      ['auth', `${stack.auth.opsUrl}/metrics`],
      ['user', `${stack.user.opsUrl}/metrics`],
      ['chat', `${stack.chat.opsUrl}/metrics`],
      ['notification', `${stack.notification.opsUrl}/metrics`],
      [
        'rabbitmq',
        `${RABBITMQ_PROMETHEUS}/metrics/detailed?vhost=${stack.vhost.name}&family=queue_coarse_metrics`,
      ],
    ]
    for (const [service, url] of scrapes) {
      const text = await (await fetch(url)).text()
      for (const line of text.split('\n')) {
        const typed = /^# TYPE (\S+) (\S+)$/.exec(line)
        if (typed) {
          const [, name, type] = typed as unknown as [string, string, string]
          if (/^(process|nodejs)_/.test(name)) continue
          if (service === 'rabbitmq' && !/_messages_(ready|unacked)$/.test(name)) continue
          const entry = exported.get(name) ?? { type, services: new Set(), labels: new Set() }
          entry.services.add(service)
          exported.set(name, entry)
          continue
        }
        const sample = /^([a-z_:]+?)(?:_bucket|_sum|_count)?\{(.*)\} /.exec(line)
        const entry =
          sample && (exported.get(sample[1] as string) ?? exported.get(line.split('{')[0] as string))
        if (!entry) continue
        for (const [, label] of (sample?.[2] ?? '').matchAll(/(\w+)="/g)) entry.labels.add(label as string)
      }
    }
    const seen = [...exported].map(([name, entry]) => ({
      name,
      type: entry.type,
      services: [...entry.services].sort(),
      labels: [...entry.labels].filter((label) => label !== 'service' && label !== 'le').sort(),
    }))
    const documented = seen.map(({ name, labels }) => {
      const row = catalogue.get(name)
      return {
        name,
        type: row?.type,
        services: row?.services.sort(),
        // Labels appear once a series was counted: the ones seen must be documented.
        labels: labels.filter((label) => row?.labels.includes(label)),
      }
    })
    expect(documented).toEqual(seen)
    expect([...catalogue.keys()].filter((name) => !exported.has(name))).toEqual([])
    // Every metric a dashboard or rule names is in the catalogue (or a prom-client default).
    const promql = [
      ...panelQueries({ rangeSeconds: 60, stepSeconds: 1, scrapeIntervalSeconds: 1 }).map(
        (query) => query.expr,
      ),
      ...(await prometheus.rules()).map((rule) => rule.query),
    ]
    const named = new Set(
      promql.flatMap((expr) => [...expr.matchAll(/([a-z_:]+)\{/g)].map((match) => match[1] as string)),
    )
    const unknown = [...named].filter(
      (name) =>
        !catalogue.has(name.replace(/_(bucket|sum|count)$/, '')) &&
        !/^(process|nodejs)_/.test(name) &&
        name !== 'up',
    )
    expect(unknown).toEqual([])
  })
})
