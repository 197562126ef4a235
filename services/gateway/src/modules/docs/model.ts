import { Problem, USER_STREAM_EVENT_TYPES } from '@parley/contracts'
import { Cursor, ResyncRequiredProblem, SYNC_MAX_LIMIT, SyncPage, SyncQuery } from '../sync/model'
import type { OpenApiDocument } from './service'

/** The shared Problem schema, as the services' own routes document their problem answers. */
const problemContent = { 'application/json': { schema: Problem } }
/** The gateway's own routes answer problems with their real media type. */
const problemJson = { 'application/problem+json': { schema: Problem } }

const STREAM_EVENTS = USER_STREAM_EVENT_TYPES.join(', ')

/** The gateway's own part of the public API document; the services' paths are merged into it. */
export const GATEWAY_DOCUMENT: OpenApiDocument = {
  openapi: '3.0.3',
  info: {
    title: 'Parley API',
    version: '1.0.0',
    description:
      'Every public route of every Parley service, as served through the gateway under /api/v1. ' +
      'Errors are RFC 9457 problem+json. Rate-limited routes answer `RateLimit-Policy` and `RateLimit` ' +
      'headers, and 429 with `Retry-After` when the quota is exhausted. A path of this document asked with a ' +
      'method it does not list answers 405 with `Allow`; request bodies are `application/json` only (415 otherwise).',
  },
  // One entry, relative: the document describes the gateway that serves it, wherever it is mounted.
  servers: [{ url: '/', description: 'This gateway' }],
  components: {
    securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } },
  },
  tags: [
    {
      name: 'gateway',
      description: "The gateway's own routes: the user's event stream (WebSocket push and resume, /sync)",
    },
  ],
  paths: {
    '/api/v1/ws': {
      get: {
        tags: ['gateway'],
        summary: 'Real-time events (WebSocket)',
        description:
          'Open a WebSocket offering the subprotocols `parley.v1` and `parley.bearer.<access token>` ' +
          "(browsers: `new WebSocket(url, ['parley.v1', 'parley.bearer.' + token])`); the server selects " +
          '`parley.v1`. The token is never accepted in the query string (it would reach access logs). ' +
          "Stream events (each an event of the user's stream: " +
          STREAM_EVENTS +
          ', see `GET /api/v1/sync` for their data) are pushed as ' +
          '`{"type":"<event type>","id":"<event id>","cursor":"<cursor>","data":{…}}`; `cursor` is the position ' +
          'after that event. Resume: reconnect with `?since=<the last cursor received>` (not secret; a malformed ' +
          'one is refused with 422 before the upgrade): the events missed are replayed in order, then ' +
          '`{"type":"ready","cursor":"<cursor>"}` marks the switch to live pushes (each event exactly once, in ' +
          'stream order). Without `since` the first frame is `ready` with the current cursor. A resume point ' +
          'older than the retention (STREAM_RETENTION_DAYS, STREAM_MAX_EVENTS per user) or from a stream that ' +
          'was lost is answered `{"type":"resync_required","cursor":"<current cursor>"}` (then `ready`): ' +
          'refetch state over REST, then continue from that cursor; never a silent gap. ' +
          'The server pings; an unanswered ping closes the socket. Send `{"type":"ping"}` for an ' +
          'application-level `{"type":"pong"}`. Ephemeral frames (never stored): send ' +
          '`{"type":"typing","conversationId","state":"start"|"stop"}` (participants only, rate-limited; the ' +
          'others receive `{"type":"typing","conversationId","userId","state"}`, a `start` lapsing after 8 s) and ' +
          '`{"type":"presence","status":"away"|"online"}`; users sharing a conversation receive ' +
          '`{"type":"presence","userId","status":"online"|"away"|"offline"}`, and each socket starts with ' +
          '`{"type":"presence.snapshot","contacts":[{"userId","status"}]}`. A refused frame is answered with ' +
          '`{"type":"error","code":"invalid_frame"|"not_participant"|"rate_limited"|"unavailable",…}` ' +
          '(`field` names the bad field). Close codes: 1008 too many connections for the user, ' +
          '1013 slow consumer, 1001 server shutting down, 4401 access token expired or session revoked ' +
          '(reconnect with a fresh token).',
        security: [{ bearer: [] }],
        parameters: [
          {
            name: 'since',
            in: 'query',
            required: false,
            description: 'Resume after this cursor (the `cursor` of the last frame received)',
            schema: Cursor,
          },
        ],
        responses: {
          '101': { description: 'Switching Protocols' },
          '401': {
            description: 'Missing, invalid, expired or revoked access token',
            content: problemContent,
          },
          '422': { description: '`since` is not a cursor this API issued', content: problemContent },
          '429': { description: 'Rate limit exceeded', content: problemContent },
        },
      },
    },
    '/api/v1/sync': {
      get: {
        tags: ['gateway'],
        summary: "The caller's event stream after a cursor (polling, catch-up)",
        description:
          "Every event the caller sees goes into their ordered stream: the WebSocket's stream events (" +
          STREAM_EVENTS +
          '), as the same frames. Without `since`: no events and the current cursor. With it: up to `limit` ' +
          'events after it, oldest first, and the cursor after the last; `hasMore` means call again right ' +
          'away. The stream keeps STREAM_RETENTION_DAYS and about STREAM_MAX_EVENTS events per user: a ' +
          'cursor older than that, or of a stream that was lost, is answered 410 `resync-required` with a ' +
          'current `cursor`: refetch state, then continue from it. Charged to the `authenticated` limit.',
        security: [{ bearer: [] }],
        parameters: [
          {
            name: 'since',
            in: 'query',
            required: false,
            description: 'Return the events after this cursor; absent: none, only the current cursor',
            schema: Cursor,
          },
          {
            name: 'limit',
            in: 'query',
            required: false,
            description: `Most events to return, 1–${SYNC_MAX_LIMIT}`,
            schema: SyncQuery.properties.limit,
          },
        ],
        responses: {
          '200': {
            description: 'A page of the stream',
            content: { 'application/json': { schema: SyncPage } },
          },
          '401': { description: 'Missing, invalid, expired or revoked access token', content: problemJson },
          '410': {
            description: 'Resync required: the events after `since` are no longer kept',
            content: { 'application/problem+json': { schema: ResyncRequiredProblem } },
          },
          '422': {
            description: '`limit` out of range or `since` not a cursor (`errors` names it)',
            content: problemJson,
          },
          '429': { description: 'Rate limit exceeded (`Retry-After`)', content: problemJson },
        },
      },
    },
  },
}
