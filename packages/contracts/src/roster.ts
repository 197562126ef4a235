/**
 * The services of Parley: the one list that code reads (gateway upstreams and public routes,
 * the dev runner, the end-to-end stack, the environment table, each service's default port) and
 * that the deployment files are generated from and checked against (`bun scripts/roster.ts`).
 * Adding a service is its folder under services/, an entry here, and running that generator.
 */

/** Rate-limit policy of a route that needs no token (policies are defined by the gateway). */
export type PublicRoutePolicy = 'login' | 'register' | 'refresh' | 'anonymous'

export type PublicRoute = {
  method: 'GET' | 'HEAD' | 'POST'
  /** Service path (the public path minus /api/v1). */
  path: string
  policy: PublicRoutePolicy
  /** Also limited per email address in the body (credential stuffing across IPs). */
  keyedByEmail?: boolean
}

/** Rate-limit policy a route is charged on top of `authenticated` (policies are defined by the gateway). */
export type LimitedRoutePolicy = 'verification' | 'conversations' | 'invitations' | 'reactions'

/** An authenticated route with a limit of its own, counted per user. */
export type LimitedRoute = {
  method: 'POST' | 'PUT' | 'PATCH' | 'DELETE'
  /** Service path; `:name` matches one segment. */
  path: string
  policy: LimitedRoutePolicy
  /** Charged once per entry of this JSON body array (at least once), e.g. one per invited user. */
  perItemOf?: string
}

export type ServiceEntry = {
  name: string
  /** What it owns, in a few words (README table, chart comments). */
  summary: string
  /** HTTP port: the default of PORT, the container port, the compose and chart service port. */
  port: number
  /**
   * Ops port: the default of OPS_PORT, serving /health, /ready and /metrics to the kubelet,
   * Prometheus and `<binary> healthcheck`, never to API clients (the service port answers 404).
   */
  opsPort: number
  /** Service paths it owns behind the gateway (public path minus /api/v1); the gateway has none. */
  prefix: string | null
  /** More path prefixes routed to it by the gateway (e.g. chat's `/attachments`). */
  morePrefixes?: readonly string[]
  /** Its own store: a PostgreSQL database (migrated with drizzle), a MongoDB database, or none. */
  store: { kind: 'postgres'; database: string } | { kind: 'mongodb'; database: string } | null
  /** Time it has to answer the gateway with headers before the gateway answers 504. */
  upstreamTimeoutMs: number | null
  publicRoutes: readonly PublicRoute[]
  limitedRoutes?: readonly LimitedRoute[]
}

export const ROSTER = [
  {
    name: 'gateway',
    summary: 'routing, edge auth, rate limits, Swagger UI, WebSocket, presence',
    port: 4000,
    opsPort: 9400,
    prefix: null,
    store: null,
    upstreamTimeoutMs: null,
    publicRoutes: [],
  },
  {
    name: 'auth',
    summary: 'credentials, sessions, keys',
    port: 4003,
    opsPort: 9403,
    prefix: '/auth',
    store: { kind: 'postgres', database: 'parley_auth' },
    // Login and register hash passwords with argon2id, hence the longer default.
    upstreamTimeoutMs: 15_000,
    publicRoutes: [
      { method: 'POST', path: '/auth/register', policy: 'register' },
      { method: 'POST', path: '/auth/login', policy: 'login', keyedByEmail: true },
      { method: 'POST', path: '/auth/refresh', policy: 'refresh' },
      { method: 'GET', path: '/auth/.well-known/jwks.json', policy: 'anonymous' },
      { method: 'HEAD', path: '/auth/.well-known/jwks.json', policy: 'anonymous' },
    ],
    limitedRoutes: [
      { method: 'POST', path: '/auth/verify-email/request', policy: 'verification' },
      { method: 'POST', path: '/auth/verify-email/confirm', policy: 'verification' },
    ],
  },
  {
    name: 'user',
    summary: 'profiles, search',
    port: 4001,
    opsPort: 9401,
    prefix: '/users',
    store: { kind: 'postgres', database: 'parley_user' },
    upstreamTimeoutMs: 10_000,
    publicRoutes: [],
  },
  {
    name: 'chat',
    summary: 'conversations, messages',
    port: 4002,
    opsPort: 9402,
    prefix: '/conversations',
    morePrefixes: ['/attachments'],
    store: { kind: 'mongodb', database: 'parley_chat' },
    upstreamTimeoutMs: 10_000,
    publicRoutes: [],
    // Every invited user may be mailed: invitations are counted per invitee, not per request.
    limitedRoutes: [
      { method: 'POST', path: '/conversations', policy: 'conversations' },
      { method: 'POST', path: '/conversations', policy: 'invitations', perItemOf: 'participantIds' },
      {
        method: 'POST',
        path: '/conversations/:id/participants',
        policy: 'invitations',
        perItemOf: 'userIds',
      },
      { method: 'PUT', path: '/conversations/:id/messages/:messageId/reactions/:emoji', policy: 'reactions' },
      {
        method: 'DELETE',
        path: '/conversations/:id/messages/:messageId/reactions/:emoji',
        policy: 'reactions',
      },
    ],
  },
  {
    name: 'notification',
    summary: 'in-app notifications, email',
    port: 4004,
    opsPort: 9404,
    prefix: '/notifications',
    store: { kind: 'postgres', database: 'parley_notification' },
    upstreamTimeoutMs: 10_000,
    publicRoutes: [],
  },
] as const satisfies readonly ServiceEntry[]

export type ServiceName = (typeof ROSTER)[number]['name']

/** Services behind the gateway (those with a path prefix). */
export type UpstreamName = Extract<(typeof ROSTER)[number], { prefix: string }>['name']

export function serviceOf(name: ServiceName): ServiceEntry {
  const entry = ROSTER.find((service) => service.name === name)
  if (!entry) throw new Error(`unknown service ${name}`)
  return entry
}

export const UPSTREAMS = ROSTER.filter(
  (service): service is Extract<(typeof ROSTER)[number], { prefix: string }> => service.prefix !== null,
)

/** PostgreSQL databases of the services that have one. */
export const POSTGRES_DATABASES = ROSTER.flatMap((service) =>
  service.store?.kind === 'postgres' ? [service.store.database] : [],
)
