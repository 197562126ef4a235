import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { testInfra, waitFor } from '@parley/testkit'
import { BaseEnv, ConfigError, envSchema, parseConfig } from '../../packages/common/src/config'
import { type Stack, startStack } from '../e2e/stack'
import { type Jaeger, type JaegerSpan, startJaeger } from './jaeger'

/**
 * OpenTelemetry end to end: the five services export to a real Jaeger (v1 all-in-one, built from
 * the Go module proxy by scripts/jaeger.sh on first use), and one POST /messages through the
 * gateway becomes one trace across the proxy hop, the outbox and RabbitMQ.
 */

type Json = Record<string, unknown>

let jaeger: Jaeger
let stack: Stack

beforeAll(async () => {
  jaeger = await startJaeger()
  stack = await startStack({
    // Ratio 0: only callers that sampled their trace are recorded (parent-based), so the
    // request below without a traceparent proves the ratio is applied.
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: jaeger.otlpUrl, OTEL_TRACES_SAMPLER_ARG: '0', LOG_LEVEL: 'info' },
    captureLogs: true,
  })
}, 2_700_000)

afterAll(async () => {
  const codes = await stack?.stop()
  await jaeger?.stop()
  // Spans are flushed in the last shutdown step; every service still exits 0.
  for (const [name, code] of Object.entries(codes ?? {})) expect(`${name}:${code}`).toBe(`${name}:0`)
}, 60_000)

function hex(bytes: number): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(bytes))).toString('hex')
}

async function api(
  method: string,
  path: string,
  options: { body?: unknown; token?: string; traceparent?: string } = {},
) {
  const response = await fetch(`${stack.gateway.url}/api/v1${path}`, {
    method,
    headers: {
      ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
      ...(options.traceparent ? { traceparent: options.traceparent } : {}),
    },
    ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
  })
  const text = await response.text()
  return { status: response.status, body: (text ? JSON.parse(text) : undefined) as Json }
}

async function register(name: string, traceparent?: string) {
  const email = `${name}.${crypto.randomUUID().slice(0, 8)}@trace.parley.test`
  const response = await api('POST', '/auth/register', {
    body: { email, displayName: name, password: `pw-${crypto.randomUUID()}` },
    ...(traceparent ? { traceparent } : {}),
  })
  expect(response.status).toBe(201)
  return response.body as { accessToken: string; user: { id: string } }
}

/** A queue of the test's own in the stack's vhost, bound to the events of one type (a tap). */
async function tapQueue(type: string): Promise<string> {
  const queue = `trace-tap.${crypto.randomUUID()}`
  const vhost = encodeURIComponent(stack.vhost.name)
  const management = (method: string, path: string, body: unknown) =>
    fetch(`${testInfra.rabbitManagementUrl}/api${path}`, {
      method,
      headers: {
        authorization: `Basic ${btoa(`${testInfra.rabbitUser}:${testInfra.rabbitPassword}`)}`,
        'content-type': 'application/json',
      },
      body: JSON.stringify(body),
    })
  expect((await management('PUT', `/queues/${vhost}/${queue}`, { durable: false })).ok).toBe(true)
  const bound = await management('POST', `/bindings/${vhost}/e/parley.events/q/${queue}`, {
    routing_key: type,
  })
  expect(bound.ok).toBe(true)
  return queue
}

/** Log lines (JSON) of one stack process. */
function logsOf(service: { logLines: () => readonly string[] }): Json[] {
  return service.logLines().flatMap((line) => {
    try {
      return [JSON.parse(line) as Json]
    } catch {
      return []
    }
  })
}

describe('tracing through gateway, chat, the outbox and RabbitMQ', () => {
  test('one POST /messages is one trace: gateway → chat → outbox publish → notification consumer', async () => {
    const alice = await register('Alice')
    const bob = await register('Bob')
    const conversation = await waitFor(
      async () => {
        const created = await api('POST', '/conversations', {
          token: alice.accessToken,
          body: { title: 'Traced', participantIds: [bob.user.id] },
        })
        return created.status === 201 ? created.body : undefined
      },
      { timeoutMs: 20_000, what: 'conversation creation (user.registered projected)' },
    )

    // Not sampled by the caller, and the ratio is 0: this one must never reach Jaeger.
    const unsampled = await api('POST', `/conversations/${conversation.id}/messages`, {
      token: alice.accessToken,
      body: { body: 'not traced' },
    })
    expect(unsampled.status).toBe(201)

    const tap = await tapQueue('message.sent')
    // Bob has no socket open: notification takes message.sent (inbox) for an offline recipient.
    const traceId = hex(16)
    const sent = await api('POST', `/conversations/${conversation.id}/messages`, {
      token: alice.accessToken,
      traceparent: `00-${traceId}-${hex(8)}-01`,
      body: { body: 'traced lunch?' },
    })
    expect(sent.status).toBe(201)

    const byKind = (spans: JaegerSpan[], service: string, kind: string, name?: string) =>
      spans.find(
        (span) =>
          span.service === service &&
          span.kind === kind &&
          (name === undefined || span.operationName === name),
      )
    const spans = await waitFor(
      async () => {
        const found = await jaeger.trace(traceId)
        return byKind(found, 'notification', 'consumer', 'process message.sent') ? found : undefined
      },
      { timeoutMs: 60_000, intervalMs: 500, what: `trace ${traceId} with the notification consumer span` },
    )

    const gatewayServer = byKind(spans, 'gateway', 'server')
    expect(gatewayServer?.operationName).toBe('POST /api/v1/*')
    expect(gatewayServer?.tags['http.response.status_code']).toBe(201)
    const gatewayClient = byKind(spans, 'gateway', 'client', 'POST chat')
    expect(gatewayClient?.parentSpanID).toBe(gatewayServer?.spanID)
    // Across the proxy hop: the gateway injected its client span's traceparent upstream.
    const chatServer = byKind(spans, 'chat', 'server', 'POST /conversations/:id/messages')
    expect(chatServer?.parentSpanID).toBe(gatewayClient?.spanID)
    // Across the outbox: staged inside chat's request span, published as its child.
    const publish = byKind(spans, 'chat', 'producer', 'publish message.sent')
    expect(publish?.parentSpanID).toBe(chatServer?.spanID)
    expect(publish?.tags['messaging.message.id']).toBeString()
    // Across RabbitMQ: the consumer continues the publish span (traceparent header).
    const consumer = byKind(spans, 'notification', 'consumer', 'process message.sent')
    expect(consumer?.parentSpanID).toBe(publish?.spanID)
    expect(consumer?.tags['messaging.destination.name']).toBeString()

    // On the wire: the event keeps the context it was created in (CloudEvents distributed tracing
    // extension), the AMQP header carries the publish span's.
    const delivered = await waitFor(
      async () =>
        (await stack.vhost.getMessages(tap, 10)).find((message) => message.payload.includes(traceId)),
      { what: 'the traced message.sent in the tap queue' },
    )
    expect((JSON.parse(delivered.payload) as Json).traceparent).toBe(`00-${traceId}-${chatServer?.spanID}-01`)
    expect(delivered.properties.headers?.traceparent).toBe(`00-${traceId}-${publish?.spanID}-01`)

    // Log lines carry the trace id: chat's access line of that request and notification's consumer.
    const chatLine = await waitFor(
      () => logsOf(stack.chat).find((line) => line.trace_id === traceId && line.msg === 'request'),
      { what: "chat's access log line with the trace id" },
    )
    expect(chatLine.span_id).toBe(chatServer?.spanID)
    expect(chatLine.traceparent).toBe(`00-${traceId}-${chatServer?.spanID}-01`)

    // The unsampled request had a trace id (in the gateway's access line) but nothing was exported.
    const unsampledLine = logsOf(stack.gateway).find(
      (line) =>
        line.msg === 'request' &&
        String(line.path).endsWith('/messages') &&
        line.status === 201 &&
        line.trace_id !== traceId,
    )
    const unsampledTraceId = unsampledLine?.trace_id
    expect(unsampledTraceId).toBeString()
    expect(String(unsampledLine?.traceparent).endsWith('-00')).toBe(true)
    expect(await jaeger.trace(String(unsampledTraceId))).toEqual([])
  }, 120_000)

  test("an event published by the outbox relay (auth's PostgreSQL outbox) continues the request's trace", async () => {
    const traceId = hex(16)
    await register('Relayed', `00-${traceId}-${hex(8)}-01`)
    const spans = await waitFor(
      async () => {
        const found = await jaeger.trace(traceId)
        return found.some(
          (span) => span.service === 'user' && span.operationName === 'process user.registered',
        )
          ? found
          : undefined
      },
      {
        timeoutMs: 60_000,
        intervalMs: 500,
        what: `trace ${traceId} with user's projection of user.registered`,
      },
    )
    const authServer = spans.find(
      (span) => span.service === 'auth' && span.operationName === 'POST /auth/register',
    )
    const publish = spans.find(
      (span) => span.service === 'auth' && span.operationName === 'publish user.registered',
    )
    // Published by the relay's own loop, yet a child of the request that staged it.
    expect(publish?.parentSpanID).toBe(authServer?.spanID)
    const consumer = spans.find(
      (span) => span.service === 'user' && span.operationName === 'process user.registered',
    )
    expect(consumer?.parentSpanID).toBe(publish?.spanID)
  }, 90_000)

  test('the spans exported are counted on /metrics', async () => {
    const metrics = await (await fetch(`${stack.chat.opsUrl}/metrics`)).text()
    const exported = /trace_spans_exported_total\{[^}]*outcome="ok"[^}]*\} (\d+)/.exec(metrics)
    expect(Number(exported?.[1])).toBeGreaterThan(0)
  })
})

describe('tracing configuration', () => {
  const schema = envSchema(BaseEnv)

  test('tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT is set; the ratio defaults to 1', () => {
    const config = parseConfig(schema, {})
    expect(config.OTEL_EXPORTER_OTLP_ENDPOINT).toBeUndefined()
    expect(config.OTEL_TRACES_SAMPLER_ARG).toBe(1)
    expect(parseConfig(schema, { OTEL_TRACES_SAMPLER_ARG: '0.25' }).OTEL_TRACES_SAMPLER_ARG).toBe(0.25)
  })

  test('a sampling ratio outside 0..1 or an endpoint that is not a URL is refused by name', () => {
    expect(() => parseConfig(schema, { OTEL_TRACES_SAMPLER_ARG: '1.5' })).toThrow(ConfigError)
    expect(() => parseConfig(schema, { OTEL_TRACES_SAMPLER_ARG: '-1' })).toThrow(
      'invalid configuration: OTEL_TRACES_SAMPLER_ARG must be a number from 0 to 1',
    )
    expect(() => parseConfig(schema, { OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' })).toThrow(
      /OTEL_EXPORTER_OTLP_ENDPOINT must be a string matching/,
    )
  })
})
