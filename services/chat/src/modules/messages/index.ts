import { type AccessTokenVerifier, authPlugin, problemResponses, requestContext } from '@parley/common'
import { Elysia, t } from 'elysia'
import { ConversationParams } from '../conversations/model'
import {
  EditMessageBody,
  Message,
  MessagePage,
  MessagePageQuery,
  MessageParams,
  ReadBody,
  ReadReceipt,
  RepliesQuery,
  SendMessageBody,
} from './model'
import type { MessageService } from './service'

export function messageRoutes(verifier: AccessTokenVerifier, messages: MessageService) {
  return new Elysia({ name: 'chat.messages', detail: { tags: ['messages'] } })
    .use(requestContext)
    .use(authPlugin(verifier))
    .post(
      '/conversations/:id/messages',
      async ({ identity, params, body, requestId, status }) => {
        const { created, message } = await messages.send(identity.userId, params.id, body, requestId)
        return created ? status(201, message) : status(200, message)
      },
      {
        auth: true,
        params: ConversationParams,
        body: SendMessageBody,
        response: { 200: Message, 201: Message, ...problemResponses(400, 401, 404, 422, 503) },
        detail: {
          summary: 'Send a message',
          description:
            "Idempotent per (sender, clientMessageId): 201 the first time, 200 with the same message after. `replyTo` makes it a reply (422 naming `body.replyTo` for a message not in this conversation): the thread's first message counts it in its `thread` summary. `mentions` names participants (422 naming `body.mentions.<index>` for each other one). Publishes `message.sent` (with `replyTo`, `mutedUserIds`: the recipients who muted the conversation, and `mentionedUserIds`: the mentioned recipients, notified even when muted). `attachmentIds` (≤ 10, see POST /attachments) attach the sender's uploads, checked now if they were not (422 naming `body.attachmentIds.<index>`; 503 while the object store is unavailable, nothing written); `body` may then be empty. Views carry `attachments` with presigned downloads, for participants only.",
        },
      },
    )
    .get(
      '/conversations/:id/messages',
      ({ identity, params, query }) => messages.page(identity.userId, params.id, query),
      {
        auth: true,
        params: ConversationParams,
        query: MessagePageQuery,
        response: { 200: MessagePage, ...problemResponses(401, 404, 422) },
        detail: {
          summary: 'Page through messages',
          description:
            'Without a cursor: the latest page. `before`/`after` page along sequence numbers; each message appears exactly once across pages, and paging `after` the last cursor never skips a message sent concurrently.',
        },
      },
    )
    .get(
      '/conversations/:id/messages/:messageId/replies',
      ({ identity, params, query }) =>
        messages.repliesOf(identity.userId, params.id, params.messageId, query),
      {
        auth: true,
        params: MessageParams,
        query: RepliesQuery,
        response: { 200: MessagePage, ...problemResponses(401, 404, 422) },
        detail: {
          summary: "A thread's replies, oldest first",
          description:
            '404 for a non-participant or a message not in the conversation. `nextCursor` (pass as `after`) continues; null at the end.',
        },
      },
    )
    .patch(
      '/conversations/:id/messages/:messageId',
      ({ identity, params, body, requestId }) =>
        messages.edit(identity.userId, params.id, params.messageId, body, requestId),
      {
        auth: true,
        params: MessageParams,
        body: EditMessageBody,
        response: { 200: Message, ...problemResponses(400, 401, 403, 404, 409, 422) },
        detail: {
          summary: 'Edit a message',
          description:
            "The author only, within CHAT_MESSAGE_EDIT_WINDOW_SECONDS of sending (default 48 h): 403 otherwise; 409 for a deleted message; 404 for a non-participant or an unknown message. Sets `editedAt`; the conversation's `lastMessage` preview follows. Publishes `message.updated` (not when the body is unchanged).",
        },
      },
    )
    .delete(
      '/conversations/:id/messages/:messageId',
      async ({ identity, params, requestId, status }) => {
        await messages.delete(identity.userId, params.id, params.messageId, requestId)
        return status(204, undefined)
      },
      {
        auth: true,
        params: MessageParams,
        response: { 204: t.Void(), ...problemResponses(401, 403, 404, 422) },
        detail: {
          summary: 'Delete a message',
          description:
            'The author, or an owner or admin of the conversation (403 otherwise); 404 for a non-participant or an unknown message. Leaves a tombstone: `deletedAt` set, body and reactions removed, seq kept. Idempotent. Publishes `message.deleted` (once).',
        },
      },
    )
    .post(
      '/conversations/:id/read',
      ({ identity, params, body, requestId }) =>
        messages.markRead(identity.userId, params.id, body.messageId, requestId),
      {
        auth: true,
        params: ConversationParams,
        body: ReadBody,
        response: { 200: ReadReceipt, ...problemResponses(400, 401, 404, 422) },
        detail: {
          summary: 'Mark messages read up to a message (read receipt)',
          description: 'The marker moves by seq, never back. Publishes `conversation.read` when it moved.',
        },
      },
    )
}
