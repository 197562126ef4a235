import type { CloudEvent, EventData, EventType } from '@parley/contracts'
import amqp, {
  type Channel,
  type ChannelModel,
  type ConfirmChannel,
  type ConsumeMessage,
  type RecoveringChannelModel,
} from 'amqplib'
import { errorKind, type Logger } from '../logger'
import type { Metrics } from '../metrics'
import { consumeTraced, startPublishSpan } from '../tracing'
import { assertCloudEvent, buildEvent, EventContractError } from './envelope'

export class BrokerUnavailableError extends Error {
  override name = 'BrokerUnavailableError'
}

/** What a handler gets besides the event: its retry attempt (0 first) and a logger naming the event. */
export type EventContext = { attempt: number; log: Logger }

/** Handles one event type; on a durable queue a rejection is retried after each delay, then dead-lettered. */
export type EventHandler<T extends EventType> = (event: CloudEvent<T>, context: EventContext) => Promise<void>

/**
 * One handler per event type the queue takes, keyed by type: the keys are the queue's
 * bindings (routing key = type), and each handler is typed by its key's contract.
 */
export type EventHandlers<T extends EventType> = { readonly [K in T]: EventHandler<K> }

export type Subscription<T extends EventType> = {
  /** Durable quorum queue name, e.g. `user.projection`. */
  queue: string
  handlers: EventHandlers<T>
  /** Delays before each retry of a failing handler; after the last one the message is dead-lettered. */
  retryDelaysMs?: readonly number[]
  /**
   * Never dead-letter a failing handler: after the last delay, retry at that delay for as long
   * as it takes (state that must not be lost, e.g. revocations waiting for Redis to return).
   * Invalid and unhandled events are still set aside.
   */
  retryForever?: boolean
  /**
   * A per-process, exclusive, auto-deleted queue (fan-out to every replica, e.g. gateway
   * WebSocket push). No retries and no `.dead` queue: an event whose handler failed, or
   * that has no handler, is logged and dropped.
   */
  transient?: boolean
  /**
   * One consumer at a time across every process (the broker fails over to the next), so
   * events are handled in queue order (e.g. appended to ordered streams).
   */
  singleActiveConsumer?: boolean
}

export type EventBusOptions = {
  url: string
  exchange: string
  /** CloudEvents `source` of events this process publishes. */
  source: string
  prefetch: number
  logger: Logger
  metrics: Metrics
  confirmTimeoutMs?: number
}

const ATTEMPT_HEADER = 'x-parley-attempt'
/** Why a message is in `.dead`: `invalid`, `unhandled` or `failed`; the error's text stays in the logs. */
const REASON_HEADER = 'x-parley-reason'
/** The error's class name (e.g. `EventContractError`) and code (e.g. SQLSTATE `23505`), never its message. */
const ERROR_HEADER = 'x-parley-error'
const ERROR_CODE_HEADER = 'x-parley-error-code'

/**
 * Dead-letter headers of a failure. Error messages quote data (a failed query's bound values,
 * an address, an event field), and a dead-letter queue is read by more people, for longer,
 * than the logs: headers carry the category and the error's kind only.
 */
function deadLetterHeaders(reason: 'invalid' | 'failed', error: unknown): Record<string, string> {
  const { name, code } = errorKind(error)
  return {
    [REASON_HEADER]: reason,
    [ERROR_HEADER]: name,
    ...(code === undefined ? {} : { [ERROR_CODE_HEADER]: code }),
  }
}
const DEFAULT_RETRY_DELAYS_MS = [1_000, 10_000, 60_000]
const DELIVERY_LIMIT = 20

type ActiveConsumer = { channel: Channel; consumerTag: string }

/** A subscription as the bus keeps it: handlers looked up by the delivery's type. */
type RegisteredSubscription = {
  queue: string
  handlers: ReadonlyMap<EventType, EventHandler<EventType>>
  retryDelaysMs: readonly number[]
  retryForever: boolean
  transient: boolean
  singleActiveConsumer: boolean
}

/**
 * Publishes and consumes CloudEvents on one durable topic exchange. Reconnects with
 * backoff and re-declares the whole topology (exchange, queues, bindings, consumers)
 * after every reconnect, so a broker restart needs no intervention.
 */
export class EventBus {
  private connection: RecoveringChannelModel | undefined
  private publisher: ConfirmChannel | undefined
  private readonly subscriptions: RegisteredSubscription[] = []
  private consumers: ActiveConsumer[] = []
  private consuming = true
  private inFlight = 0
  private readonly publishedTotal
  private readonly publishSeconds
  private readonly consumedTotal
  private readonly consumeSeconds
  private readonly log: Logger

  constructor(private readonly options: EventBusOptions) {
    const { metrics } = options
    this.log = options.logger.child({ component: 'events' })
    this.publishedTotal = metrics.counter('events_published_total', 'Events published', ['type', 'outcome'])
    this.publishSeconds = metrics.histogram('event_publish_duration_seconds', 'Publish-to-confirm latency', [
      'type',
    ])
    this.consumedTotal = metrics.counter('events_consumed_total', 'Events consumed by outcome', [
      'queue',
      'type',
      'outcome',
    ])
    this.consumeSeconds = metrics.histogram('event_consume_duration_seconds', 'Event handler latency', [
      'queue',
      'type',
    ])
  }

  /** Starts connecting in the background; the process keeps serving while the broker is down. */
  async start(): Promise<void> {
    if (this.connection) return
    const connection = await amqp.connect(this.options.url, {
      recovery: {
        waitForConnect: false,
        initialDelay: 200,
        maxDelay: 5_000,
        maxRetries: Number.POSITIVE_INFINITY,
        setup: (model: ChannelModel) => this.setup(model),
      },
    })
    connection.on('disconnect', (error: Error) => {
      this.publisher = undefined
      this.consumers = []
      this.log.warn({ err: error }, 'broker connection lost, reconnecting')
    })
    connection.on('error', (error: Error) => this.log.warn({ err: error }, 'broker error'))
    this.connection = connection
  }

  /** Resolves once connected (tests, start-up ordering). */
  async connected(timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!this.publisher) {
      if (Date.now() > deadline) throw new BrokerUnavailableError('broker not connected')
      await Bun.sleep(25)
    }
  }

  get isConnected(): boolean {
    return this.publisher !== undefined
  }

  /** Readiness check. */
  async check(): Promise<void> {
    if (!this.publisher) throw new BrokerUnavailableError('broker not connected')
  }

  /** Registers a consumer; it starts now if connected and again after every reconnect. */
  async subscribe<T extends EventType>(subscription: Subscription<T>): Promise<void> {
    const {
      queue,
      handlers,
      retryDelaysMs = DEFAULT_RETRY_DELAYS_MS,
      retryForever = false,
      transient = false,
      singleActiveConsumer = false,
    } = subscription
    // Widened for the lookup; sound because deliver calls a handler only with an event of its key's type.
    const byType = new Map(Object.entries(handlers) as [EventType, EventHandler<EventType>][])
    if (byType.size === 0) throw new Error(`subscription ${queue} has no handlers`)
    if (retryForever && retryDelaysMs.length === 0)
      throw new Error(`subscription ${queue} retries forever but has no retry delays`)
    const registered: RegisteredSubscription = {
      queue,
      handlers: byType,
      retryDelaysMs,
      retryForever,
      transient,
      singleActiveConsumer,
    }
    this.subscriptions.push(registered)
    const model = this.currentModel
    if (model && this.consuming) await this.startConsumer(model, registered)
  }

  private currentModel: ChannelModel | undefined

  private async setup(model: ChannelModel): Promise<void> {
    this.currentModel = model
    const publisher = await model.createConfirmChannel()
    publisher.on('error', (error: Error) => this.log.warn({ err: error }, 'publisher channel error'))
    await publisher.assertExchange(this.options.exchange, 'topic', { durable: true })
    this.consumers = []
    if (this.consuming) {
      for (const subscription of this.subscriptions) await this.startConsumer(model, subscription)
    }
    this.publisher = publisher
    this.log.info({ exchange: this.options.exchange }, 'broker connected')
  }

  private async startConsumer(model: ChannelModel, subscription: RegisteredSubscription): Promise<void> {
    const channel = await model.createConfirmChannel()
    channel.on('error', (error: Error) =>
      this.log.warn({ err: error, queue: subscription.queue }, 'consumer channel error'),
    )
    await channel.assertExchange(this.options.exchange, 'topic', { durable: true })
    await channel.prefetch(this.options.prefetch)
    let queue = subscription.queue
    if (subscription.transient) {
      const declared = await channel.assertQueue(`${subscription.queue}.${crypto.randomUUID()}`, {
        exclusive: true,
        autoDelete: true,
        durable: false,
      })
      queue = declared.queue
    } else {
      await this.declareDurableQueues(channel, subscription)
    }
    for (const type of subscription.handlers.keys())
      await channel.bindQueue(queue, this.options.exchange, type)
    const { consumerTag } = await channel.consume(queue, (message) => {
      if (message) void this.deliver(channel, subscription, message)
    })
    this.consumers.push({ channel, consumerTag })
  }

  private async declareDurableQueues(channel: Channel, subscription: RegisteredSubscription): Promise<void> {
    const { queue } = subscription
    const quorum = { 'x-queue-type': 'quorum' }
    await channel.assertQueue(`${queue}.dead`, { durable: true, arguments: quorum })
    await channel.assertQueue(queue, {
      durable: true,
      arguments: {
        ...quorum,
        // Poison-message guard for crashes mid-handler; handler failures go through retry queues.
        'x-delivery-limit': DELIVERY_LIMIT,
        'x-dead-letter-exchange': '',
        'x-dead-letter-routing-key': `${queue}.dead`,
        ...(subscription.singleActiveConsumer ? { 'x-single-active-consumer': true } : {}),
      },
    })
    for (const [index, delay] of subscription.retryDelaysMs.entries()) {
      await channel.assertQueue(`${queue}.retry.${index + 1}`, {
        durable: true,
        arguments: {
          ...quorum,
          'x-message-ttl': delay,
          'x-dead-letter-exchange': '',
          'x-dead-letter-routing-key': queue,
        },
      })
    }
  }

  private async deliver(
    channel: ConfirmChannel,
    subscription: RegisteredSubscription,
    message: ConsumeMessage,
  ) {
    this.inFlight++
    const started = performance.now()
    const attempt = Number(message.properties.headers?.[ATTEMPT_HEADER] ?? 0)
    let type = 'unknown'
    try {
      let event: unknown
      try {
        event = JSON.parse(message.content.toString('utf8'))
        assertCloudEvent(event)
      } catch (error) {
        await this.rejectInvalid(channel, subscription, message, error)
        return
      }
      type = event.type
      const log = this.log.child({
        queue: subscription.queue,
        eventId: event.id,
        type,
        correlationId: event.correlationid,
      })
      const handler = subscription.handlers.get(event.type)
      if (!handler) {
        await this.rejectUnhandled(channel, subscription, message, event.type, log)
        return
      }
      try {
        const delivered = event
        await consumeTraced(delivered, subscription.queue, message.properties.headers, () =>
          handler(delivered, { attempt, log }),
        )
        channel.ack(message)
        this.consumedTotal.inc({ queue: subscription.queue, type, outcome: 'ok' })
      } catch (error) {
        await this.retryOrDeadLetter(channel, subscription, message, attempt, error, log)
      }
    } catch (error) {
      // The channel died while settling; the broker redelivers the unacked message.
      this.log.warn({ err: error, queue: subscription.queue }, 'delivery not settled')
    } finally {
      this.consumeSeconds.observe({ queue: subscription.queue, type }, (performance.now() - started) / 1000)
      this.inFlight--
    }
  }

  private async rejectInvalid(
    channel: ConfirmChannel,
    subscription: RegisteredSubscription,
    message: ConsumeMessage,
    error: unknown,
  ) {
    this.log.error({ queue: subscription.queue, err: error }, 'invalid event dead-lettered')
    this.consumedTotal.inc({
      queue: subscription.queue,
      type: String(message.properties.type ?? 'unknown'),
      outcome: 'invalid',
    })
    if (subscription.transient) return channel.ack(message)
    await this.forward(channel, `${subscription.queue}.dead`, message, deadLetterHeaders('invalid', error))
    channel.ack(message)
  }

  /**
   * A valid event of a type this queue has no handler for (a binding left by an earlier
   * version, or added by hand): dead-lettered like an invalid one, never acked unseen.
   */
  private async rejectUnhandled(
    channel: ConfirmChannel,
    subscription: RegisteredSubscription,
    message: ConsumeMessage,
    type: EventType,
    log: Logger,
  ) {
    const reason = `no handler for ${type}`
    if (subscription.transient) {
      log.error({ reason }, 'unhandled event dropped')
    } else {
      log.error({ reason }, 'unhandled event dead-lettered')
      await this.forward(channel, `${subscription.queue}.dead`, message, {
        [REASON_HEADER]: 'unhandled',
      })
    }
    this.consumedTotal.inc({ queue: subscription.queue, type, outcome: 'unhandled' })
    channel.ack(message)
  }

  private async retryOrDeadLetter(
    channel: ConfirmChannel,
    subscription: RegisteredSubscription,
    message: ConsumeMessage,
    attempt: number,
    error: unknown,
    log: Logger,
  ) {
    const type = String(message.properties.type ?? 'unknown')
    const delays = subscription.retryDelaysMs
    if (subscription.transient) {
      log.warn({ err: error }, 'transient handler failed, dropped')
      this.consumedTotal.inc({ queue: subscription.queue, type, outcome: 'dropped' })
      return channel.ack(message)
    }
    if (attempt < delays.length || subscription.retryForever) {
      // Retrying forever stays on the last (longest) retry queue.
      const stage = Math.min(attempt, delays.length - 1)
      log.warn({ err: error, attempt: attempt + 1, delayMs: delays[stage] }, 'handler failed, retrying later')
      await this.forward(channel, `${subscription.queue}.retry.${stage + 1}`, message, {
        [ATTEMPT_HEADER]: attempt + 1,
      })
      this.consumedTotal.inc({ queue: subscription.queue, type, outcome: 'retry' })
    } else {
      log.error({ err: error, attempts: attempt + 1 }, 'handler failed, dead-lettered')
      await this.forward(channel, `${subscription.queue}.dead`, message, deadLetterHeaders('failed', error))
      this.consumedTotal.inc({ queue: subscription.queue, type, outcome: 'dead' })
    }
    channel.ack(message)
  }

  /** Copies a delivery to a queue (default exchange) and waits for the broker's confirm. */
  private async forward(
    channel: ConfirmChannel,
    queue: string,
    message: ConsumeMessage,
    headers: Record<string, unknown>,
  ) {
    const { properties } = message
    channel.sendToQueue(queue, message.content, {
      persistent: true,
      messageId: properties.messageId,
      type: properties.type,
      contentType: properties.contentType,
      headers: { ...properties.headers, ...headers },
    })
    await channel.waitForConfirms()
  }

  /** Builds, checks and publishes an event, resolving once the broker confirmed it. */
  async publish<T extends EventType>(type: T, data: EventData<T>, options: { correlationId?: string } = {}) {
    const event = buildEvent(this.options.source, type, data, options)
    await this.publishEvent(event)
    return event
  }

  /** Publishes an already-built envelope (the outbox relays call this). */
  async publishEvent(event: CloudEvent): Promise<void> {
    assertCloudEvent(event)
    const publisher = this.publisher
    if (!publisher) {
      this.publishedTotal.inc({ type: event.type, outcome: 'unavailable' })
      throw new BrokerUnavailableError('broker not connected')
    }
    const started = performance.now()
    // Its context goes to the consumers in the `traceparent` header; the event's own extension
    // keeps the context the event was created in (CloudEvents: intermediaries leave it alone).
    const span = startPublishSpan(event, this.options.exchange)
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new BrokerUnavailableError('publish not confirmed in time')),
          this.options.confirmTimeoutMs ?? 10_000,
        )
        publisher.publish(
          this.options.exchange,
          event.type,
          Buffer.from(JSON.stringify(event)),
          {
            persistent: true,
            messageId: event.id,
            type: event.type,
            contentType: 'application/cloudevents+json',
            timestamp: Math.floor(Date.parse(event.time) / 1000),
            ...(event.correlationid ? { correlationId: event.correlationid } : {}),
            ...(span ? { headers: span.headers } : {}),
          },
          (error) => {
            clearTimeout(timer)
            if (error) reject(new BrokerUnavailableError(`publish nacked: ${String(error)}`))
            else resolve()
          },
        )
      })
      this.publishedTotal.inc({ type: event.type, outcome: 'ok' })
      this.publishSeconds.observe({ type: event.type }, (performance.now() - started) / 1000)
      span?.end()
    } catch (error) {
      this.publishedTotal.inc({ type: event.type, outcome: 'failed' })
      span?.end(error)
      throw error
    }
  }

  /** Stops taking deliveries and waits (bounded) for handlers in progress to settle. */
  async stopConsuming(timeoutMs = 10_000): Promise<void> {
    this.consuming = false
    await Promise.all(
      this.consumers.map(({ channel, consumerTag }) => channel.cancel(consumerTag).catch(() => undefined)),
    )
    const deadline = Date.now() + timeoutMs
    while (this.inFlight > 0 && Date.now() < deadline) await Bun.sleep(10)
  }

  async close(): Promise<void> {
    this.consuming = false
    const connection = this.connection
    this.connection = undefined
    this.publisher = undefined
    await connection?.close().catch(() => undefined)
  }
}

export { EventContractError }
