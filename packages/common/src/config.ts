import { type ServiceName, serviceOf } from '@parley/contracts'
import { type Static, type TObject, type TProperties, Type as t } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { DEFAULT_OUTBOX_MAX_ATTEMPTS } from './outbox'

export class ConfigError extends Error {
  override name = 'ConfigError'
  constructor(
    readonly variable: string,
    readonly expected: string,
  ) {
    super(`invalid configuration: ${variable} ${expected}`)
  }
}

/**
 * A schema option: the value a variable takes when unset and PARLEY_ENV=development. Outside
 * development such a variable has no default, so a production install that lost it stops at
 * start-up (requiredSetting, where its client is built) instead of quietly talking to 127.0.0.1.
 * The schema marks it optional only so that a process that never builds the client (`migrate`,
 * tests of other settings) does not need it.
 */
export const DEVELOPMENT_DEFAULT = 'developmentDefault'

/** OpenTelemetry tracing (see tracing.ts): the standard variable names, part of BaseEnv. */
export const TracingEnv = {
  OTEL_EXPORTER_OTLP_ENDPOINT: t.Optional(
    t.String({
      pattern: '^https?://',
      description: 'OTLP/HTTP collector base URL; spans go to <url>/v1/traces (protobuf). Unset: tracing off',
    }),
  ),
  OTEL_TRACES_SAMPLER_ARG: t.Number({
    minimum: 0,
    maximum: 1,
    default: 1,
    description:
      "Share of new traces recorded (parent-based ratio sampler: a caller's sampled or unsampled trace is followed)",
  }),
  OTEL_SERVICE_NAME: t.Optional(
    t.String({ minLength: 1, description: 'service.name of the spans (default: the service roster name)' }),
  ),
}

/** Environment variables every service reads. */
export const BaseEnv = {
  PARLEY_ENV: t.Union([t.Literal('development'), t.Literal('production')], {
    default: 'production',
    description:
      'Deployment kind; only development lets REDIS_URL and AMQP_URL default to local servers and auth run without JWT_PRIVATE_KEY (a key is generated)',
  }),
  HOST: t.String({ default: '127.0.0.1', description: 'Interface to listen on (0.0.0.0 in containers)' }),
  LOG_LEVEL: t.Union(
    ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].map((level) => t.Literal(level)),
    { default: 'info', description: 'pino log level' },
  ),
  SHUTDOWN_GRACE_MS: t.Integer({
    minimum: 0,
    default: 10_000,
    description: 'Time allowed for in-flight work to finish after SIGTERM',
  }),
  SHUTDOWN_DELAY_MS: t.Integer({
    minimum: 0,
    default: 0,
    description: 'Time between readiness going false and the listener closing (endpoint propagation)',
  }),
  BODY_LIMIT_BYTES: t.Integer({
    minimum: 1024,
    default: 1_048_576,
    description: 'Largest accepted request body',
  }),
  ...TracingEnv,
}

export const PostgresEnv = {
  DATABASE_URL: t.String({ pattern: '^postgres(ql)?://', description: 'PostgreSQL connection URL' }),
  DATABASE_POOL_MAX: t.Integer({ minimum: 1, default: 10, description: 'PostgreSQL pool size' }),
  DATABASE_STATEMENT_TIMEOUT_MS: t.Integer({
    minimum: 0,
    default: 10_000,
    description: 'statement_timeout of every pooled connection (0: none); migrations run without it',
  }),
  MIGRATIONS_DIR: t.Optional(
    t.String({
      minLength: 1,
      description: 'Folder of the committed migrations (default: the service folder drizzle/)',
    }),
  ),
}

export const RedisEnv = {
  REDIS_URL: t.Optional(
    t.String({
      pattern: '^rediss?://',
      [DEVELOPMENT_DEFAULT]: 'redis://127.0.0.1:6379',
      description: 'Redis URL; required unless PARLEY_ENV=development (then redis://127.0.0.1:6379)',
    }),
  ),
}

export const AmqpEnv = {
  AMQP_URL: t.Optional(
    t.String({
      pattern: '^amqps?://',
      [DEVELOPMENT_DEFAULT]: 'amqp://guest:guest@127.0.0.1:5672/%2F',
      description:
        'RabbitMQ URL; required unless PARLEY_ENV=development (then amqp://guest:guest@127.0.0.1:5672/%2F)',
    }),
  ),
  AMQP_EXCHANGE: t.String({
    minLength: 1,
    default: 'parley.events',
    description: 'Durable topic exchange of domain events',
  }),
  AMQP_PREFETCH: t.Integer({
    minimum: 1,
    maximum: 1000,
    default: 20,
    description: 'Unacknowledged deliveries per consumer',
  }),
}

/** The outbox relay of the services that publish events. */
export const OutboxEnv = {
  OUTBOX_MAX_ATTEMPTS: t.Integer({
    minimum: 1,
    default: DEFAULT_OUTBOX_MAX_ATTEMPTS,
    description:
      'Failed publishes of one outbox event (retried after 1 s, doubling up to 60 s) before the relay moves it to outbox_dead; a broker outage counts none',
  }),
}

export const MongoEnv = {
  MONGO_URL: t.String({ pattern: '^mongodb(\\+srv)?://', description: 'MongoDB URL' }),
  MONGO_DB: t.String({ minLength: 1, default: 'parley_chat', description: 'MongoDB database name' }),
}

export const JwtVerifyEnv = {
  JWKS_URL: t.String({
    pattern: '^https?://',
    description: 'Auth service JWKS used to verify access tokens',
  }),
  JWT_ISSUER: t.String({
    minLength: 1,
    default: 'parley-auth',
    description: 'Expected `iss` of access tokens',
  }),
  JWT_AUDIENCE: t.String({ minLength: 1, default: 'parley', description: 'Expected `aud` of access tokens' }),
  JWKS_CACHE_MAX_AGE_MS: t.Integer({
    minimum: 1_000,
    default: 600_000,
    description:
      'Age after which the cached JWKS is refreshed in the background; the last good keys stay in use while auth is unreachable',
  }),
}

/** PORT and OPS_PORT of a service, defaulting to its ports in the roster. */
export function portEnv(service: ServiceName) {
  return {
    PORT: t.Integer({
      minimum: 1,
      maximum: 65535,
      default: serviceOf(service).port,
      description: `HTTP port of the ${service} service`,
    }),
    OPS_PORT: t.Integer({
      minimum: 1,
      maximum: 65535,
      default: serviceOf(service).opsPort,
      description:
        'Ops listener port: /health, /ready and /metrics for probes and Prometheus (PORT has no /ready or /metrics)',
    }),
  }
}

/** A service's environment schema: the shared blocks plus its own variables. */
export function envSchema<P extends TProperties>(properties: P): TObject<P> {
  return t.Object(properties, { additionalProperties: true })
}

function describeExpected(schema: unknown): string {
  const s = schema as {
    description?: string
    pattern?: string
    minimum?: number
    maximum?: number
    type?: string
    anyOf?: { const?: unknown }[]
  }
  if (s.anyOf?.every((member) => member.const !== undefined)) {
    return `one of ${s.anyOf.map((member) => String(member.const)).join('|')}`
  }
  if (s.pattern) return `a string matching ${s.pattern}`
  if (s.type === 'integer') return s.minimum !== undefined ? `an integer >= ${s.minimum}` : 'an integer'
  if (s.type === 'boolean') return 'true or false'
  if (s.type === 'number' && s.minimum !== undefined && s.maximum !== undefined)
    return `a number from ${s.minimum} to ${s.maximum}`
  return s.type ? `a ${s.type}` : 'a valid value'
}

/**
 * Parses `env` against `schema`: applies defaults, converts numbers/booleans and throws a
 * ConfigError naming the first bad variable. Never echoes the value (it may be a secret).
 */
export function parseConfig<S extends TObject>(
  schema: S,
  env: Record<string, string | undefined>,
): Static<S> {
  const input: Record<string, unknown> = {}
  const development = env.PARLEY_ENV === 'development'
  for (const [key, property] of Object.entries(schema.properties)) {
    const raw = env[key]
    if (raw !== undefined && raw !== '') input[key] = raw
    else if (development) {
      const fallback = (property as Record<string, unknown>)[DEVELOPMENT_DEFAULT]
      if (fallback !== undefined) input[key] = fallback
    }
  }
  const candidate = Value.Convert(schema, Value.Default(schema, input))
  const error = Value.Errors(schema, candidate).First()
  if (!error) return Value.Clean(schema, candidate) as Static<S>
  const variable = error.path.split('/')[1] ?? error.path
  const missing = (candidate as Record<string, unknown>)[variable] === undefined
  const propertySchema = schema.properties[variable]
  throw new ConfigError(
    variable,
    missing
      ? `is required (${describeExpected(propertySchema)})`
      : `must be ${describeExpected(propertySchema)}`,
  )
}

/**
 * The value of a variable that only development may leave unset (see DEVELOPMENT_DEFAULT);
 * throws a ConfigError naming it otherwise. Called where the client that needs it is built.
 */
export function requiredSetting<K extends string>(
  config: { readonly [P in K]?: string },
  variable: K,
): string {
  const value = config[variable]
  if (value !== undefined) return value
  const schema = { ...RedisEnv, ...AmqpEnv }[variable as string]
  throw new ConfigError(
    variable,
    `is required unless PARLEY_ENV=development (${schema ? describeExpected(schema) : 'a valid value'})`,
  )
}

/** Like parseConfig, but a bad variable stops the process with one clear line. */
export function loadConfig<S extends TObject>(
  schema: S,
  env: Record<string, string | undefined> = process.env,
): Static<S> {
  try {
    return parseConfig(schema, env)
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`)
      process.exit(78)
    }
    throw error
  }
}
