import { bearerToken, type ProblemFieldError, problems, requestContext } from '@parley/common'
import { Value } from '@sinclair/typebox/value'
import { Elysia } from 'elysia'
import type { EdgeAuth } from '../edge-auth/service'
import type { RateLimiter } from '../rate-limit/service'
import type { RealtimeHub } from '../realtime/service'
import { decodeCursor, encodeCursor, frameOf, ResyncRequired, type StreamFrame, SyncQuery } from './model'
import type { UserStreams } from './service'

export type SyncRouteOptions = {
  streams: UserStreams
  edgeAuth: EdgeAuth
  limiter: RateLimiter
  hub: RealtimeHub
}

/** The query, validated after authentication (so an anonymous caller learns nothing else). */
function syncQuery(url: URL): { since?: string; limit: number } {
  const raw = Object.fromEntries(url.searchParams)
  // Value.Convert would read `true` as 1: a limit is written in digits.
  if (raw.limit !== undefined && !/^[0-9]+$/.test(raw.limit))
    throw problems.validation([{ field: 'query.limit', message: 'Expected an integer' }])
  const query = Value.Default(SyncQuery, Value.Convert(SyncQuery, raw)) as SyncQuery
  const errors: ProblemFieldError[] = [...Value.Errors(SyncQuery, query)].map((error) => ({
    field: `query${error.path.replaceAll('/', '.')}`,
    message: error.message,
  }))
  if (errors.length > 0) throw problems.validation(errors)
  return { ...(query.since ? { since: query.since } : {}), limit: query.limit ?? 100 }
}

/**
 * `GET /api/v1/sync`: the caller's stream after `since`, for clients that poll (and to catch up
 * over HTTP). A gateway route, charged like proxied ones: edge authentication, the revocation
 * check and the `authenticated` limit, with the RateLimit headers on every answer.
 */
export function syncRoutes({ streams, edgeAuth, limiter, hub }: SyncRouteOptions) {
  return new Elysia({ name: 'gateway.sync' }).use(requestContext).get(
    '/api/v1/sync',
    async ({ request, set }) => {
      const { identity, limitHeaders } = await edgeAuth.admit(
        bearerToken(request.headers.get('authorization')),
        limiter,
        ({ userId }) => [{ policy: 'authenticated', subject: `user:${userId}` }],
      )
      Object.assign(set.headers, limitHeaders)

      const query = syncQuery(new URL(request.url))
      const since = query.since === undefined ? undefined : decodeCursor(query.since)
      if (query.since !== undefined && !since)
        throw problems.validation([{ field: 'query.since', message: 'Expected a cursor this API issued' }])
      const read = await streams.read(identity.userId, since, query.limit)
      if (read.resync) {
        throw new ResyncRequired(encodeCursor(read.position), read.reason, limitHeaders)
      }
      const events: StreamFrame[] = read.entries.map((entry) => frameOf(entry, read.position.epoch))
      if (since) hub.countSync(events.length)
      return { events, cursor: encodeCursor(read.position), hasMore: read.hasMore }
    },
    // Documented by hand in GATEWAY_DOCUMENT (docs/model.ts), like the WebSocket.
    { detail: { hide: true } },
  )
}
