import {
  type Attributes,
  type Context,
  context,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type Tracer,
  trace,
} from '@opentelemetry/api'
import type { SpanExporter, TracerProvider } from '@opentelemetry/sdk-trace'
import type { Counter } from 'prom-client'
import type { Metrics } from './metrics'

/**
 * OpenTelemetry tracing, created explicitly in the shared code (no auto-instrumentation: it
 * patches Node modules and does not fit Bun). Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set:
 * then no provider is registered, the SDK is never loaded, and every helper here returns
 * undefined or {} after one boolean test, so the hot paths create no span objects.
 *
 * The active span travels in OpenTelemetry's context, kept by an AsyncLocalStorage context
 * manager: httpKit runs each request inside its server span's context (an Elysia `wrap`), so
 * everything the request awaits, including `buildEvent` deep in a service, sees that span
 * without being handed it.
 */

export type TracingOptions = {
  /** `service.name` of the spans (OTEL_SERVICE_NAME, default the roster name). */
  service: string
  /** OTLP/HTTP collector base URL; spans are sent to `<endpoint>/v1/traces` (protobuf). */
  endpoint: string
  /** Share of new traces recorded (0..1); a caller's sampling decision is always followed. */
  samplingRatio: number
}

/** W3C trace context as headers or CloudEvents extension attributes (distributed tracing extension). */
export type TraceCarrier = { traceparent?: string; tracestate?: string }

let provider: TracerProvider | undefined
let tracer: Tracer = trace.getTracer('parley')
let exportedSpans: Counter<'outcome'> | undefined
const NO_TRACE: TraceCarrier = Object.freeze({})

/** Whether startTracing registered a provider in this process. */
export function tracingEnabled(): boolean {
  return provider !== undefined
}

/**
 * Registers the tracer provider (parent-based ratio sampler, batching OTLP exporter), the W3C
 * propagator and the context manager. Call once, before the logger and the apps are built.
 */
export async function startTracing(options: TracingOptions): Promise<void> {
  if (provider) return
  // Loaded only when tracing is on: a process without an endpoint never evaluates the SDK.
  const [
    sdk,
    { OTLPTraceExporter },
    { resourceFromAttributes },
    { ExportResultCode, W3CTraceContextPropagator },
    hooks,
    semconv,
  ] = await Promise.all([
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/exporter-trace-otlp-proto'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/core'),
    import('@opentelemetry/context-async-hooks'),
    import('@opentelemetry/semantic-conventions'),
  ])
  const otlp = new OTLPTraceExporter({ url: `${options.endpoint.replace(/\/+$/, '')}/v1/traces` })
  // Counted, because the SDK drops what the collector refuses without a word.
  const exporter: SpanExporter = {
    export: (spans, done) =>
      otlp.export(spans, (result) => {
        exportedSpans?.inc(
          { outcome: result.code === ExportResultCode.SUCCESS ? 'ok' : 'failed' },
          spans.length,
        )
        done(result)
      }),
    shutdown: () => otlp.shutdown(),
    forceFlush: () => otlp.forceFlush(),
  }
  provider = new sdk.TracerProvider({
    resource: resourceFromAttributes({ [semconv.ATTR_SERVICE_NAME]: options.service }),
    sampler: new sdk.ParentBasedSampler({ root: new sdk.TraceIdRatioBasedSampler(options.samplingRatio) }),
    spanProcessors: [new sdk.BatchSpanProcessor({ exporter })],
  })
  context.setGlobalContextManager(new hooks.AsyncLocalStorageContextManager().enable())
  propagation.setGlobalPropagator(new W3CTraceContextPropagator())
  trace.setGlobalTracerProvider(provider)
  tracer = trace.getTracer('parley')
}

/** Counts exported spans (`trace_spans_exported_total{outcome}`) in the process's registry. */
export function countSpanExports(metrics: Metrics): void {
  exportedSpans = metrics.counter(
    'trace_spans_exported_total',
    'Spans sent to the OTLP collector, by outcome',
    ['outcome'],
  )
}

/** Exports the spans still buffered and unregisters everything (the lifecycle's last step). */
export async function stopTracing(): Promise<void> {
  const current = provider
  if (!current) return
  provider = undefined
  try {
    await current.shutdown()
  } finally {
    trace.disable()
    propagation.disable()
    context.disable()
    tracer = trace.getTracer('parley')
  }
}

const headerGetter: TextMapGetter<Headers> = {
  get: (headers, key) => headers.get(key) ?? undefined,
  keys: (headers) => [...headers.keys()],
}

const recordGetter: TextMapGetter<Record<string, unknown>> = {
  get: (carrier, key) => {
    const value = carrier[key]
    return typeof value === 'string' ? value : undefined
  },
  keys: (carrier) => Object.keys(carrier),
}

/** The span context of `ctx` as traceparent/tracestate ({} without a span). */
function carrierOf(ctx: Context): TraceCarrier {
  const carrier: TraceCarrier = {}
  propagation.inject(ctx, carrier)
  return carrier
}

/** The context a carrier's traceparent/tracestate describe (the root context without one). */
function extractFrom(carrier: Record<string, unknown>): Context {
  return propagation.extract(ROOT_CONTEXT, carrier, recordGetter)
}

/** The active span's context as W3C fields, for an event staged now; {} when tracing is off. */
export function activeTraceCarrier(): TraceCarrier {
  if (!provider) return NO_TRACE
  return carrierOf(context.active())
}

/** The traceparent of the active span, if tracing is on and a span is active. */
export function activeTraceparent(): string | undefined {
  if (!provider) return undefined
  return carrierOf(context.active()).traceparent
}

/** `trace_id` and `span_id` of the active span: pino's mixin while tracing is on. */
export function traceLogFields(): { trace_id?: string; span_id?: string } {
  const span = trace.getSpan(context.active())
  if (!span) return {}
  const { traceId, spanId } = span.spanContext()
  return { trace_id: traceId, span_id: spanId }
}

function endWithStatus(span: Span, status: number, serverSide: boolean): void {
  span.setAttribute('http.response.status_code', status)
  // A 4xx is the client's failure, not the server's (semantic conventions): only a client span marks it.
  if (status >= 500 || (!serverSide && status >= 400)) span.setStatus({ code: SpanStatusCode.ERROR })
  span.end()
}

/** The span of the request httpKit is serving, so hooks can name it once the route is known. */
const serverSpans = new WeakMap<Request, Span>()

/**
 * Serves `request` inside a server span continuing the caller's `traceparent`: httpKit's
 * Elysia `wrap` when tracing is on. The span ends when the response (its headers) is ready.
 */
export function serveTraced(
  request: Request,
  handle: (request: Request) => Response | undefined | Promise<Response | undefined>,
): Promise<Response | undefined> {
  const url = new URL(request.url)
  const parent = propagation.extract(ROOT_CONTEXT, request.headers, headerGetter)
  const span = tracer.startSpan(
    request.method,
    {
      kind: SpanKind.SERVER,
      attributes: {
        'http.request.method': request.method,
        'url.path': url.pathname,
        'url.scheme': url.protocol.replace(/:$/, ''),
        'server.port': Number(url.port) || undefined,
      },
    },
    parent,
  )
  serverSpans.set(request, span)
  return context.with(trace.setSpan(parent, span), async () => {
    try {
      const response = await handle(request)
      // No response: the request was upgraded to a WebSocket.
      endWithStatus(span, response?.status ?? 101, true)
      return response
    } catch (error) {
      span.recordException(error instanceof Error ? error : String(error))
      endWithStatus(span, 500, true)
      throw error
    }
  })
}

/** Names a server span after its route template (`POST /conversations/:id/messages`). */
export function nameServerSpan(request: Request, route: string): void {
  const span = serverSpans.get(request)
  if (!span) return
  span.updateName(`${request.method} ${route}`)
  span.setAttribute('http.route', route)
}

/** An outgoing HTTP call's span; `traceparent` is what the callee must receive. */
export type ClientSpan = TraceCarrier & { traceparent: string; end: (status: number) => void }

/** Starts a client span under the active span (the gateway's call to an upstream); undefined when off. */
export function startClientSpan(name: string, attributes: Attributes): ClientSpan | undefined {
  if (!provider) return undefined
  const span = tracer.startSpan(name, { kind: SpanKind.CLIENT, attributes })
  const carrier = carrierOf(trace.setSpan(context.active(), span))
  return {
    ...carrier,
    traceparent: carrier.traceparent ?? '',
    end: (status) => endWithStatus(span, status, false),
  }
}

/** What a span around publishing or handling an event needs to know of it. */
type TracedEvent = TraceCarrier & { id: string; type: string }

/** A publish span; `headers` carry its context to the consumers (AMQP application headers). */
export type PublishSpan = { headers: TraceCarrier; end: (error?: unknown) => void }

function endWithError(span: Span, error: unknown): void {
  if (error !== undefined) {
    span.recordException(error instanceof Error ? error : String(error))
    span.setStatus({ code: SpanStatusCode.ERROR })
  }
  span.end()
}

/**
 * A producer span for publishing `event`, a child of the context the event was staged in (its
 * `traceparent` extension), not of whatever is active: the outbox relay publishes long after
 * the request, from its own loop. Undefined when tracing is off.
 */
export function startPublishSpan(event: TracedEvent, exchange: string): PublishSpan | undefined {
  if (!provider) return undefined
  const parent = extractFrom(event)
  const span = tracer.startSpan(
    `publish ${event.type}`,
    {
      kind: SpanKind.PRODUCER,
      attributes: {
        'messaging.system': 'rabbitmq',
        'messaging.operation.type': 'send',
        'messaging.operation.name': 'publish',
        'messaging.destination.name': exchange,
        'messaging.rabbitmq.destination.routing_key': event.type,
        'messaging.message.id': event.id,
      },
    },
    parent,
  )
  return { headers: carrierOf(trace.setSpan(parent, span)), end: (error) => endWithError(span, error) }
}

/**
 * Runs a consumer's handler inside a consumer span continuing the publish span (the delivery's
 * `traceparent` header), or the event's own `traceparent` for a message published without one.
 * Calls `handle` directly when tracing is off.
 */
export function consumeTraced<T>(
  event: TracedEvent,
  queue: string,
  headers: Record<string, unknown> | undefined,
  handle: () => Promise<T>,
): Promise<T> {
  if (!provider) return handle()
  const parent =
    headers && typeof headers.traceparent === 'string' ? extractFrom(headers) : extractFrom(event)
  const span = tracer.startSpan(
    `process ${event.type}`,
    {
      kind: SpanKind.CONSUMER,
      attributes: {
        'messaging.system': 'rabbitmq',
        'messaging.operation.type': 'process',
        'messaging.destination.name': queue,
        'messaging.message.id': event.id,
      },
    },
    parent,
  )
  return context.with(trace.setSpan(parent, span), async () => {
    try {
      const result = await handle()
      endWithError(span, undefined)
      return result
    } catch (error) {
      endWithError(span, error)
      throw error
    }
  })
}
