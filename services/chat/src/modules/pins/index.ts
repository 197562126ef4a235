import { type AccessTokenVerifier, authPlugin, problemResponses, requestContext } from '@parley/common'
import { Elysia } from 'elysia'
import { ConversationParams } from '../conversations/model'
import { PinList, PinParams } from './model'
import type { PinService } from './service'

const ERRORS =
  'Any participant (404 for anyone else, and for a message not in the conversation); 422 naming `params.id` or `params.messageId` when it is not an id.'

export function pinRoutes(verifier: AccessTokenVerifier, pins: PinService) {
  return new Elysia({ name: 'chat.pins', detail: { tags: ['messages'] } })
    .use(requestContext)
    .use(authPlugin(verifier))
    .get('/conversations/:id/pins', ({ identity, params }) => pins.list(identity.userId, params.id), {
      auth: true,
      params: ConversationParams,
      response: { 200: PinList, ...problemResponses(401, 404, 422) },
      detail: {
        summary: 'The pinned messages of a conversation',
        description: 'Most recently pinned first. Any participant (404 for anyone else).',
      },
    })
    .put(
      '/conversations/:id/pins/:messageId',
      ({ identity, params, requestId }) => pins.pin(identity.userId, params.id, params.messageId, requestId),
      {
        auth: true,
        params: PinParams,
        response: { 200: PinList, ...problemResponses(401, 404, 409, 422) },
        detail: {
          summary: 'Pin a message',
          description: `Idempotent: the pinned messages after it. Publishes \`message.pinned\` to every participant when it was not pinned yet. 409 for a deleted message, or when 50 messages are pinned already. ${ERRORS}`,
        },
      },
    )
    .delete(
      '/conversations/:id/pins/:messageId',
      ({ identity, params, requestId }) =>
        pins.unpin(identity.userId, params.id, params.messageId, requestId),
      {
        auth: true,
        params: PinParams,
        response: { 200: PinList, ...problemResponses(401, 404, 422) },
        detail: {
          summary: 'Unpin a message',
          description: `Idempotent: the pinned messages after it. Publishes \`message.unpinned\` to every participant when it was pinned. ${ERRORS}`,
        },
      },
    )
}
