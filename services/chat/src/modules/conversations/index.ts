import { type AccessTokenVerifier, authPlugin, problemResponses, requestContext } from '@parley/common'
import { Elysia, t } from 'elysia'
import {
  AddParticipantsBody,
  Conversation,
  ConversationListQuery,
  ConversationPage,
  ConversationParams,
  CreateConversationBody,
  ParticipantParams,
  RenameConversationBody,
  SetRoleBody,
} from './model'
import type { ConversationService } from './service'

export function conversationRoutes(verifier: AccessTokenVerifier, conversations: ConversationService) {
  return new Elysia({ name: 'chat.conversations', detail: { tags: ['conversations'] } })
    .use(requestContext)
    .use(authPlugin(verifier))
    .post(
      '/conversations',
      async ({ identity, body, requestId, status }) => {
        const { created, conversation } = await conversations.create(identity.userId, body, requestId)
        return created ? status(201, conversation) : status(200, conversation)
      },
      {
        auth: true,
        body: CreateConversationBody,
        response: {
          200: Conversation,
          201: Conversation,
          ...problemResponses(400, 401, 403, 409, 422),
        },
        detail: {
          summary: 'Create a conversation, or find the direct one of a pair',
          description:
            'The caller is always a participant; every other id must be a known user (422 naming the unknown ones). 403 naming the field of each user who blocked the caller. With `direct: true`: exactly one other user (422 `body.participantIds` otherwise); the existing direct conversation of the pair is returned with 200 (also to a blocked caller), else one is created (201) — exactly one per pair even under concurrency (409 only if it was left while being looked up: try again). Publishes `conversation.created` when one was created.',
        },
      },
    )
    .get('/conversations', ({ identity, query }) => conversations.list(identity.userId, query), {
      auth: true,
      query: ConversationListQuery,
      response: { 200: ConversationPage, ...problemResponses(401, 422) },
      detail: {
        summary: "The caller's conversations, most recent activity first",
        description: 'With the last message and the unread count of each.',
      },
    })
    .get('/conversations/:id', ({ identity, params }) => conversations.get(identity.userId, params.id), {
      auth: true,
      params: ConversationParams,
      response: { 200: Conversation, ...problemResponses(401, 404, 422) },
      detail: {
        summary: 'A conversation of the caller (404 for anyone else)',
        description:
          "As the list shows it: participants with roles and read markers, the last message, and the caller's unread count and mute state. 422 naming `params.id` when it is not an id.",
      },
    })
    .patch(
      '/conversations/:id',
      ({ identity, params, body, requestId }) =>
        conversations.rename(identity.userId, params.id, body.title, requestId),
      {
        auth: true,
        params: ConversationParams,
        body: RenameConversationBody,
        response: { 200: Conversation, ...problemResponses(400, 401, 403, 404, 422) },
        detail: {
          summary: 'Rename a conversation (null clears the title)',
          description: 'Owners and admins only (403 for members). Publishes `conversation.updated`.',
        },
      },
    )
    .post(
      '/conversations/:id/participants',
      ({ identity, params, body, requestId }) =>
        conversations.addParticipants(identity.userId, params.id, body.userIds, requestId),
      {
        auth: true,
        params: ConversationParams,
        body: AddParticipantsBody,
        response: { 200: Conversation, ...problemResponses(400, 401, 403, 404, 409, 422) },
        detail: {
          summary: 'Add known users to a conversation',
          description:
            'Owners and admins only (403 for members); they join as members. 403 naming the field of each user who blocked the caller; 409 for a direct conversation (it never gains participants). Users already in it are ignored. Publishes `conversation.participants_added` when someone was added.',
        },
      },
    )
    .put(
      '/conversations/:id/mute',
      ({ identity, params, requestId }) =>
        conversations.setMuted(identity.userId, params.id, true, requestId),
      {
        auth: true,
        params: ConversationParams,
        response: { 200: Conversation, ...problemResponses(401, 404, 422) },
        detail: {
          summary: 'Mute a conversation for the caller',
          description:
            'No email or in-app notification for its messages from then on; unread counts still move. Idempotent; any participant (404 for anyone else). Publishes `conversation.muted` (to the caller only) when it changed.',
        },
      },
    )
    .delete(
      '/conversations/:id/mute',
      ({ identity, params, requestId }) =>
        conversations.setMuted(identity.userId, params.id, false, requestId),
      {
        auth: true,
        params: ConversationParams,
        response: { 200: Conversation, ...problemResponses(401, 404, 422) },
        detail: {
          summary: 'Unmute a conversation for the caller',
          description:
            'Idempotent; any participant (404 for anyone else). Publishes `conversation.unmuted` (to the caller only) when it changed.',
        },
      },
    )
    .delete(
      '/conversations/:id/participants/me',
      async ({ identity, params, requestId, status }) => {
        await conversations.leave(identity.userId, params.id, requestId)
        return status(204, undefined)
      },
      {
        auth: true,
        params: ConversationParams,
        response: { 204: t.Void(), ...problemResponses(401, 404, 422) },
        detail: {
          summary: 'Leave a conversation',
          description:
            'Publishes `conversation.participant_left`. When the last owner leaves, the oldest admin (else the oldest member) becomes owner: `conversation.role_changed`.',
        },
      },
    )
    .delete(
      '/conversations/:id/participants/:userId',
      async ({ identity, params, requestId, status }) => {
        await conversations.removeParticipant(identity.userId, params.id, params.userId, requestId)
        return status(204, undefined)
      },
      {
        auth: true,
        params: ParticipantParams,
        response: { 204: t.Void(), ...problemResponses(401, 403, 404, 422) },
        detail: {
          summary: 'Remove a participant',
          description:
            "Owners remove anyone, admins remove members (403 otherwise); one's own id is leaving. 404 when the user is not a participant. Publishes `conversation.participant_left` with `removedBy`.",
        },
      },
    )
    .put(
      '/conversations/:id/participants/:userId/role',
      ({ identity, params, body, requestId }) =>
        conversations.setRole(identity.userId, params.id, params.userId, body.role, requestId),
      {
        auth: true,
        params: ParticipantParams,
        body: SetRoleBody,
        response: { 200: Conversation, ...problemResponses(400, 401, 403, 404, 409, 422) },
        detail: {
          summary: "Set a participant's role",
          description:
            'Owners only (403 otherwise). 404 when the user is not a participant; 409 when no owner would remain. Publishes `conversation.role_changed` when the role changed.',
        },
      },
    )
}
