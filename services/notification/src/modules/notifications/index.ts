import { type AccessTokenVerifier, authPlugin, problemResponses, requestContext } from '@parley/common'
import { Elysia } from 'elysia'
import {
  ListQuery,
  MarkedRead,
  Notification,
  NotificationPage,
  NotificationParams,
  UNREAD_COUNT_CAP,
  UnreadCount,
} from './model'
import type { NotificationService } from './service'

/** The caller's in-app notifications. */
export function notificationRoutes(service: NotificationService, verifier: AccessTokenVerifier) {
  return new Elysia({ name: 'notification.routes', prefix: '/notifications' })
    .use(requestContext)
    .use(authPlugin(verifier))
    .get('', ({ identity, query }) => service.list(identity.userId, query), {
      auth: true,
      query: ListQuery,
      response: { 200: NotificationPage, ...problemResponses(401, 422) },
      detail: {
        summary: 'List my notifications, newest first',
        description: 'Cursor-paginated; `unread=true` lists only unread ones.',
        tags: ['notifications'],
      },
    })
    .get('/unread-count', ({ identity }) => service.unreadCount(identity.userId), {
      auth: true,
      response: { 200: UnreadCount, ...problemResponses(401) },
      detail: {
        summary: 'Count my unread notifications (for a badge)',
        description: `Counts stop at ${UNREAD_COUNT_CAP}: \`capped\` says there are more (show "${UNREAD_COUNT_CAP}+").`,
        tags: ['notifications'],
      },
    })
    .post('/:id/read', ({ identity, params }) => service.markRead(identity.userId, params.id), {
      auth: true,
      params: NotificationParams,
      response: { 200: Notification, ...problemResponses(401, 404, 422) },
      detail: {
        summary: 'Mark one of my notifications read',
        description:
          'Idempotent: a notification already read keeps its first `readAt`. Unknown ids and other users’ notifications answer 404.',
        tags: ['notifications'],
      },
    })
    .post('/read-all', async ({ identity }) => ({ markedRead: await service.markAllRead(identity.userId) }), {
      auth: true,
      response: { 200: MarkedRead, ...problemResponses(401) },
      detail: {
        summary: 'Mark all my notifications read',
        description:
          'Sets `readAt` on every unread one; answers how many that was (0 when none were unread).',
        tags: ['notifications'],
      },
    })
}
