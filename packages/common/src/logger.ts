import pino, { type Logger } from 'pino'
import { traceLogFields, tracingEnabled } from './tracing'

export type { Logger }

/** Paths that must never reach a log line, whatever object carries them. */
export const REDACTED_PATHS = [
  'password',
  '*.password',
  'newPassword',
  '*.newPassword',
  'token',
  '*.token',
  'accessToken',
  '*.accessToken',
  'refreshToken',
  '*.refreshToken',
  'code',
  '*.code',
  '*.data.code',
  'authorization',
  '*.authorization',
  '*.headers.authorization',
  '*.headers.cookie',
  '*.headers["set-cookie"]',
  'cookie',
  '*.cookie',
  'secret',
  '*.secret',
]

/** An error as logged: its kind, a code and a message without data (see serializeError). */
export type SerializedError = {
  type: string
  message: string
  /** PostgreSQL SQLSTATE (e.g. `23505`), MongoDB or system code. Not `code`: that path is redacted. */
  errorCode?: string
  constraint?: string
  table?: string
  column?: string
  stack?: string
  cause?: SerializedError
  aggregateErrors?: SerializedError[]
}

const ERROR_NAME = /^[A-Za-z_$][A-Za-z0-9_$]{0,63}$/
const ERROR_CODE = /^[A-Za-z0-9_.-]{1,64}$/
/** Identifiers (constraint, table, column names) are schema, not data: safe to keep. */
const IDENTIFIER = /^[A-Za-z0-9_.$-]{1,128}$/

function stringField(value: unknown, pattern: RegExp): string | undefined {
  const text = typeof value === 'number' ? String(value) : value
  return typeof text === 'string' && pattern.test(text) ? text : undefined
}

/**
 * An error's class name and code, never its message: what may leave the process in a broker
 * header or a metric label. DrizzleQueryError keeps `name === 'Error'`, hence the constructor.
 */
export function errorKind(error: unknown): { name: string; code?: string } {
  if (!(error instanceof Error)) return { name: typeof error }
  const constructorName = error.constructor?.name
  const name =
    stringField(constructorName && constructorName !== 'Error' ? constructorName : error.name, ERROR_NAME) ??
    'Error'
  const own = (error as { code?: unknown }).code
  const code = stringField(own, ERROR_CODE) ?? (error.cause ? errorKind(error.cause).code : undefined)
  return code === undefined ? { name } : { name, code }
}

/**
 * Error text without the data it may quote: drizzle's `Failed query: <sql>\nparams: <values>`,
 * PostgreSQL's `...: "<value>"` (e.g. invalid input syntax) and MongoDB's `dup key: { ... }`.
 */
export function scrubErrorText(text: string): string {
  return text
    .replace(/Failed query:[\s\S]*$/, 'Failed query (query text and parameters omitted)')
    .replace(/\n?\s*params:[\s\S]*$/, '')
    .replace(/\s*dup key: \{[\s\S]*\}/, ' dup key: { [omitted] }')
    .replace(/(:\s*)"[^"]*"/g, '$1"[omitted]"')
}

/**
 * pino's `err` serializer. The default one copies every enumerable property, so a failed query
 * logged whole would write its SQL and bound values (emails, password hashes, event JSON), and
 * a PostgreSQL error's `detail` (`Key (email)=(...) already exists`). This keeps the kind, the
 * code, schema identifiers and a scrubbed message and stack, and drops everything else.
 */
export function serializeError(value: unknown): unknown {
  return value instanceof Error
    ? serializeErrorObject(value, 0)
    : typeof value === 'string'
      ? scrubErrorText(value)
      : value
}

function serializeErrorObject(error: Error, depth: number): SerializedError {
  const type = errorKind(error).name
  const code = stringField((error as { code?: unknown }).code, ERROR_CODE)
  const message = scrubErrorText(String(error.message))
  const fields = error as Error & { constraint_name?: unknown; table_name?: unknown; column_name?: unknown }
  // The stack's first lines repeat the message: rebuild it from the scrubbed one and the frames.
  const frames = (error.stack ?? '').split('\n').filter((line) => /^\s+at /.test(line))
  const serialized: SerializedError = {
    type,
    message,
    ...(code === undefined ? {} : { errorCode: code }),
    stack: [`${type}: ${message}`, ...frames].join('\n'),
  }
  const constraint = stringField(fields.constraint_name, IDENTIFIER)
  const table = stringField(fields.table_name, IDENTIFIER)
  const column = stringField(fields.column_name, IDENTIFIER)
  if (constraint) serialized.constraint = constraint
  if (table) serialized.table = table
  if (column) serialized.column = column
  if (depth < 5 && error.cause instanceof Error) {
    serialized.cause = serializeErrorObject(error.cause, depth + 1)
    // Lift the cause's code (drizzle wraps the PostgreSQL error) so it is searchable at the top.
    serialized.errorCode ??= serialized.cause.errorCode
  }
  if (depth < 5 && error instanceof AggregateError && Array.isArray(error.errors)) {
    serialized.aggregateErrors = error.errors
      .filter((inner): inner is Error => inner instanceof Error)
      .map((inner) => serializeErrorObject(inner, depth + 1))
  }
  return serialized
}

export function createLogger(
  service: string,
  level: string = process.env.LOG_LEVEL ?? 'info',
  destination?: pino.DestinationStream,
): Logger {
  return pino(
    {
      level,
      base: { service },
      messageKey: 'msg',
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      serializers: { err: serializeError, error: serializeError },
      // `trace_id`/`span_id` of the active span on every line, only in a process that traces.
      ...(tracingEnabled() ? { mixin: traceLogFields } : {}),
    },
    destination,
  )
}
