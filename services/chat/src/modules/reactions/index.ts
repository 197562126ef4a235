import { type AccessTokenVerifier, authPlugin, problemResponses, requestContext } from '@parley/common'
import { Elysia } from 'elysia'
import { MessageReactions, ReactionParams } from './model'
import type { ReactionService } from './service'

const ERRORS =
  '404 for a non-participant or an unknown message, 409 for a deleted message, 422 naming `params.emoji` when it is not one emoji; rate-limited at the gateway (`reactions` policy).'

export function reactionRoutes(verifier: AccessTokenVerifier, reactions: ReactionService) {
  return new Elysia({ name: 'chat.reactions', detail: { tags: ['messages'] } })
    .use(requestContext)
    .use(authPlugin(verifier))
    .put(
      '/conversations/:id/messages/:messageId/reactions/:emoji',
      ({ identity, params, requestId }) =>
        reactions.add(identity.userId, params.id, params.messageId, params.emoji, requestId),
      {
        auth: true,
        params: ReactionParams,
        response: { 200: MessageReactions, ...problemResponses(401, 404, 409, 422) },
        detail: {
          summary: 'React to a message with one emoji',
          description: `Idempotent: the reactions of the message after it. Publishes \`message.reaction_added\` when it was not there yet. 409 also when the message already carries the maximum of different emoji (CHAT_MAX_REACTIONS_PER_MESSAGE, default 20). ${ERRORS}`,
        },
      },
    )
    .delete(
      '/conversations/:id/messages/:messageId/reactions/:emoji',
      ({ identity, params, requestId }) =>
        reactions.remove(identity.userId, params.id, params.messageId, params.emoji, requestId),
      {
        auth: true,
        params: ReactionParams,
        response: { 200: MessageReactions, ...problemResponses(401, 404, 409, 422) },
        detail: {
          summary: "Remove the caller's reaction",
          description: `Idempotent: the reactions of the message after it. Publishes \`message.reaction_removed\` when it was there. ${ERRORS}`,
        },
      },
    )
}
