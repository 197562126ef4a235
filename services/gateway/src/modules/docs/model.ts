import { Problem } from '@parley/contracts'
import type { OpenApiDocument } from './service'

/** The shared Problem schema, as the services' own routes document their problem answers. */
const problemContent = { 'application/json': { schema: Problem } }

/** The gateway's own part of the public API document; the services' paths are merged into it. */
export const GATEWAY_DOCUMENT: OpenApiDocument = {
  openapi: '3.0.3',
  info: {
    title: 'Parley API',
    version: '1.0.0',
    description:
      'Every public route of every Parley service, as served through the gateway under /api/v1. ' +
      'Errors are RFC 9457 problem+json. Rate-limited routes answer `RateLimit-Policy` and `RateLimit` ' +
      'headers, and 429 with `Retry-After` when the quota is exhausted.',
  },
  components: {
    securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } },
  },
  tags: [{ name: 'realtime', description: 'WebSocket push of chat events' }],
  paths: {
    '/api/v1/ws': {
      get: {
        tags: ['realtime'],
        summary: 'Real-time events (WebSocket)',
        description:
          'Open a WebSocket offering the subprotocols `parley.v1` and `parley.bearer.<access token>` ' +
          "(browsers: `new WebSocket(url, ['parley.v1', 'parley.bearer.' + token])`); the server selects " +
          '`parley.v1`. The token is never accepted in the query string (it would reach access logs). ' +
          'Frames pushed: `{"type":"message.sent"|"conversation.created","id":"<event id>","data":{…}}`. ' +
          'The server pings; an unanswered ping closes the socket. Send `{"type":"ping"}` for an ' +
          'application-level `{"type":"pong"}`. Close codes: 1008 too many connections for the user, ' +
          '1013 slow consumer, 1001 server shutting down, 4401 access token expired or session revoked ' +
          '(reconnect with a fresh token).',
        security: [{ bearer: [] }],
        responses: {
          '101': { description: 'Switching Protocols' },
          '401': {
            description: 'Missing, invalid, expired or revoked access token',
            content: problemContent,
          },
          '429': { description: 'Rate limit exceeded', content: problemContent },
        },
      },
    },
  },
}
