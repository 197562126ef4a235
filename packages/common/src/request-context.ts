import { Elysia } from 'elysia'
import type { LogFn } from 'pino'
import type { Logger } from './logger'

type LogLevel = 'debug' | 'info' | 'warn' | 'error'

/** Pino's level methods, writing lines bound to the request's `requestId` and `traceparent`. */
export type RequestLogger = Pick<Logger, LogLevel>

/** What every route handler sees of the request it serves. */
export type RequestContext = {
  /** The `x-request-id` of the response; events the request causes carry it as `correlationid`. */
  requestId: string
  /** This hop's W3C traceparent (the caller's trace id, a new span id). */
  traceparent: string
  log: RequestLogger
}

const writeNothing: LogFn = () => {}

/**
 * What httpKit records for a request when it arrives (ids, start time) and the request's
 * logger. Its pino child logger is created on first use: most requests log nothing but the
 * access line, which httpKit writes with per-line bindings instead.
 */
export class RequestState implements RequestLogger {
  readonly startedAt = performance.now()
  #child: Logger | undefined

  constructor(
    private readonly logger: Logger,
    readonly requestId: string,
    readonly traceparent: string,
  ) {}

  get debug(): LogFn {
    return this.method('debug')
  }

  get info(): LogFn {
    return this.method('info')
  }

  get warn(): LogFn {
    return this.method('warn')
  }

  get error(): LogFn {
    return this.method('error')
  }

  private method(level: LogLevel): LogFn {
    // A level that writes nothing (debug in production) needs no child logger.
    if (!this.logger.isLevelEnabled(level)) return writeNothing
    this.#child ??= this.logger.child({ requestId: this.requestId, traceparent: this.traceparent })
    return this.#child[level].bind(this.#child)
  }
}

const states = new WeakMap<Request, RequestState>()

export function recordRequest(request: Request, state: RequestState): void {
  states.set(request, state)
}

export function requestStateOf(request: Request): RequestState | undefined {
  return states.get(request)
}

/**
 * Gives a module's handlers `requestId`, `traceparent` and `log` (in their types too):
 * `.use(requestContext)` in every route module. Scoped, so it reaches the module that uses it
 * and no further; deduplicated by name, so a module using it twice (directly and through a
 * sub-plugin) still derives once per request. The state comes from httpKit's request hook.
 */
export const requestContext = new Elysia({ name: 'parley.request-context' }).derive(
  { as: 'scoped' },
  ({ request }): RequestContext => {
    const state = states.get(request)
    if (!state) throw new Error('requestContext is used in an app without httpKit')
    return { requestId: state.requestId, traceparent: state.traceparent, log: state }
  },
)
