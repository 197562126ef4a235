import { type AccessTokenVerifier, authPlugin, problemResponses, requestContext } from '@parley/common'
import { Elysia, t } from 'elysia'
import { BlockList, BlockParams } from './model'
import type { BlockService } from './service'

const EFFECT =
  'A blocked user cannot start a direct conversation with the caller or add them to a conversation (403 naming the field); conversations already shared stay, and their messages are still delivered. Only the caller is told (their devices receive the event).'

export function blockRoutes(verifier: AccessTokenVerifier, blocks: BlockService) {
  return new Elysia({ name: 'chat.blocks', detail: { tags: ['blocks'] } })
    .use(requestContext)
    .use(authPlugin(verifier))
    .get('/conversations/blocks', ({ identity }) => blocks.list(identity.userId), {
      auth: true,
      response: { 200: BlockList, ...problemResponses(401) },
      detail: { summary: 'The users the caller blocked', description: EFFECT },
    })
    .put(
      '/conversations/blocks/:userId',
      async ({ identity, params, requestId, status }) => {
        await blocks.block(identity.userId, params.userId, requestId)
        return status(204, undefined)
      },
      {
        auth: true,
        params: BlockParams,
        response: { 204: t.Void(), ...problemResponses(401, 404, 409, 422) },
        detail: {
          summary: 'Block a user',
          description: `Idempotent. 404 for an unknown user, 409 for oneself, 422 naming \`params.userId\` for a malformed id. Publishes \`user.blocked\` when it was not blocked yet. ${EFFECT}`,
        },
      },
    )
    .delete(
      '/conversations/blocks/:userId',
      async ({ identity, params, requestId, status }) => {
        await blocks.unblock(identity.userId, params.userId, requestId)
        return status(204, undefined)
      },
      {
        auth: true,
        params: BlockParams,
        response: { 204: t.Void(), ...problemResponses(401, 404, 409, 422) },
        detail: {
          summary: 'Unblock a user',
          description:
            'Idempotent. 404 for an unknown user, 409 for oneself, 422 naming `params.userId` for a malformed id. Publishes `user.unblocked` when it was blocked.',
        },
      },
    )
}
