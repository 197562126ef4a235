import {
  type CloudEvent,
  CloudEventEnvelope,
  type EventData,
  EventSchemas,
  type EventType,
  isEventType,
} from '@parley/contracts'
import type { TSchema } from '@sinclair/typebox'
import { type TypeCheck, TypeCompiler } from '@sinclair/typebox/compiler'
import { newId } from '../ids'
import { activeTraceCarrier } from '../tracing'

export class EventContractError extends Error {
  override name = 'EventContractError'
}

const envelopeCheck = TypeCompiler.Compile(CloudEventEnvelope)
const dataChecks: Record<string, TypeCheck<TSchema>> = Object.fromEntries(
  Object.entries(EventSchemas).map(([type, schema]) => [type, TypeCompiler.Compile(schema as TSchema)]),
)

/** Throws EventContractError unless `value` is a CloudEvent whose data matches its type's contract. */
export function assertCloudEvent(value: unknown): asserts value is CloudEvent {
  if (!envelopeCheck.Check(value)) {
    const first = envelopeCheck.Errors(value).First()
    throw new EventContractError(`invalid envelope at ${first?.path || '/'}: ${first?.message}`)
  }
  if (!isEventType(value.type)) throw new EventContractError(`unknown event type ${value.type}`)
  const check = dataChecks[value.type]
  if (!check?.Check(value.data)) {
    const first = check?.Errors(value.data).First()
    throw new EventContractError(`invalid ${value.type} data at ${first?.path || '/'}: ${first?.message}`)
  }
}

/**
 * Builds a CloudEvents 1.0 envelope, checking `data` against the contract first. With tracing
 * on, it carries the active span's context (`traceparent`, `tracestate`): built while a request
 * or a handler stages it, so the trace survives the outbox however late the event is published.
 */
export function buildEvent<T extends EventType>(
  source: string,
  type: T,
  data: EventData<T>,
  options: { correlationId?: string; id?: string; time?: Date } = {},
): CloudEvent<T> {
  const event = {
    specversion: '1.0' as const,
    id: options.id ?? newId(),
    source,
    type,
    time: (options.time ?? new Date()).toISOString(),
    datacontenttype: 'application/json' as const,
    ...(options.correlationId ? { correlationid: options.correlationId } : {}),
    ...activeTraceCarrier(),
    data,
  }
  assertCloudEvent(event)
  return event as CloudEvent<T>
}
