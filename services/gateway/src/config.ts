import { AmqpEnv, BaseEnv, envSchema, JwtVerifyEnv, RedisEnv } from '@parley/common'
import { PRESENCE_HEARTBEAT_MS } from '@parley/contracts'
import { type Static, Type as t } from '@sinclair/typebox'

const upstreamUrl = (service: string, port: number) =>
  t.String({
    pattern: '^https?://',
    default: `http://127.0.0.1:${port}`,
    description: `Base URL of the ${service} service`,
  })

const upstreamTimeout = (service: string, defaultMs: number) =>
  t.Integer({
    minimum: 100,
    default: defaultMs,
    description: `Time the ${service} service has to answer with headers before the gateway answers 504`,
  })

export const Env = envSchema({
  ...BaseEnv,
  ...RedisEnv,
  ...AmqpEnv,
  ...JwtVerifyEnv,
  PORT: t.Integer({
    minimum: 1,
    maximum: 65535,
    default: 4000,
    description: 'HTTP port of the gateway service',
  }),
  AUTH_URL: upstreamUrl('auth', 4003),
  USER_URL: upstreamUrl('user', 4001),
  CHAT_URL: upstreamUrl('chat', 4002),
  NOTIFICATION_URL: upstreamUrl('notification', 4004),
  // Login and register hash passwords with argon2id, hence the longer default.
  AUTH_TIMEOUT_MS: upstreamTimeout('auth', 15_000),
  USER_TIMEOUT_MS: upstreamTimeout('user', 10_000),
  CHAT_TIMEOUT_MS: upstreamTimeout('chat', 10_000),
  NOTIFICATION_TIMEOUT_MS: upstreamTimeout('notification', 10_000),
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
      'JSON overriding rate-limit policies by name (login, register, refresh, verification, anonymous, authenticated), e.g. {"login":{"limit":5,"windowSeconds":60}}',
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
})

export type Config = Static<typeof Env>
