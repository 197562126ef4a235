import { AmqpEnv, BaseEnv, envSchema, JwtVerifyEnv, portEnv, RedisEnv } from '@parley/common'
import { PRESENCE_HEARTBEAT_MS, UPSTREAMS, type UpstreamName } from '@parley/contracts'
import { type Static, type TInteger, type TString, Type as t } from '@sinclair/typebox'

/** `<NAME>_URL` and `<NAME>_TIMEOUT_MS` of every upstream in the roster. */
type UpstreamEnv = { [N in UpstreamName as `${Uppercase<N>}_URL`]: TString } & {
  [N in UpstreamName as `${Uppercase<N>}_TIMEOUT_MS`]: TInteger
}

export const upstreamUrlKey = <N extends UpstreamName>(name: N) =>
  `${name.toUpperCase()}_URL` as `${Uppercase<N>}_URL`
export const upstreamTimeoutKey = <N extends UpstreamName>(name: N) =>
  `${name.toUpperCase()}_TIMEOUT_MS` as `${Uppercase<N>}_TIMEOUT_MS`

function upstreamEnv(): UpstreamEnv {
  const properties: Record<string, TString | TInteger> = {}
  for (const upstream of UPSTREAMS) {
    properties[upstreamUrlKey(upstream.name)] = t.String({
      pattern: '^https?://',
      default: `http://127.0.0.1:${upstream.port}`,
      description: `Base URL of the ${upstream.name} service`,
    })
    properties[upstreamTimeoutKey(upstream.name)] = t.Integer({
      minimum: 100,
      default: upstream.upstreamTimeoutMs,
      description: `Time the ${upstream.name} service has to answer with headers before the gateway answers 504`,
    })
  }
  return properties as UpstreamEnv
}

export const Env = envSchema({
  ...BaseEnv,
  ...RedisEnv,
  ...AmqpEnv,
  ...JwtVerifyEnv,
  ...portEnv('gateway'),
  ...upstreamEnv(),
  CORS_ORIGINS: t.String({
    default: '',
    description: 'Comma-separated origins allowed by CORS (e.g. https://app.example.com); empty allows none',
  }),
  TRUST_PROXY_HOPS: t.Integer({
    minimum: 0,
    maximum: 10,
    default: 0,
    description:
      'Reverse proxies in front of the gateway whose X-Forwarded-For entries are trusted (0: use the socket address)',
  }),
  HSTS_MAX_AGE: t.Integer({
    minimum: 0,
    default: 0,
    description:
      'Strict-Transport-Security max-age in seconds; 0 sends no HSTS header (TLS terminated elsewhere)',
  }),
  RATE_LIMIT_POLICIES: t.String({
    default: '{}',
    description:
      'JSON overriding rate-limit policies by name (login, loginEmail, register, refresh, verification, conversations, invitations, reactions, anonymous, typing, presence, authenticated), e.g. {"login":{"limit":5,"windowSeconds":60}}',
  }),
  JWKS_REFETCH_COOLDOWN_MS: t.Integer({
    minimum: 0,
    default: 30_000,
    description: 'Minimum time between JWKS refetches triggered by an unknown key id',
  }),
  REVOCATION_TTL_SECONDS: t.Integer({
    minimum: 60,
    default: 86_400,
    description: 'How long a session revocation is remembered; must exceed the access-token lifetime',
  }),
  REVOCATION_CACHE_MS: t.Integer({
    minimum: 0,
    default: 1_000,
    description:
      "How long a replica reuses a user's revocation lookup; bounds how late another replica's revocation applies here",
  }),
  DOCS_REFRESH_MS: t.Integer({
    minimum: 1_000,
    default: 60_000,
    description: "Age after which the merged OpenAPI document refetches the services' specs",
  }),
  DOCS_FETCH_TIMEOUT_MS: t.Integer({
    minimum: 100,
    default: 2_000,
    description: 'Time each service has to answer its /docs/json when the gateway merges the docs',
  }),
  PRESENCE_CONTACT_LOADS: t.Integer({
    minimum: 1,
    default: 4,
    description:
      "Contact lists (a user's conversations) a replica asks chat for at once when sockets open; more wait, so a reconnect storm cannot flood chat",
  }),
  WS_MAX_CONNECTIONS_PER_USER: t.Integer({
    minimum: 1,
    default: 5,
    description:
      'WebSocket connections one user may hold across all gateway replicas (more are closed with 1008)',
  }),
  WS_PING_INTERVAL_MS: t.Integer({
    minimum: 100,
    maximum: 30_000,
    default: PRESENCE_HEARTBEAT_MS,
    description:
      'Interval of server pings and presence refreshes; a socket that has not answered the previous ping is closed',
  }),
  WS_MAX_BUFFERED_BYTES: t.Integer({
    minimum: 1024,
    default: 1_048_576,
    description: 'Unsent bytes a WebSocket may accumulate before it is closed as a slow consumer (1013)',
  }),
  STREAM_RETENTION_DAYS: t.Integer({
    minimum: 1,
    maximum: 90,
    default: 7,
    description:
      'Days the per-user event streams keep events (resume and /sync); an older resume point answers resync_required',
  }),
  STREAM_MAX_EVENTS: t.Integer({
    minimum: 10,
    default: 10_000,
    description:
      'Events kept per user (about: trimmed by whole Redis stream nodes); resuming before the oldest kept answers resync_required',
  }),
})

export type Config = Static<typeof Env>
