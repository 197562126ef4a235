import { type AccessTokenVerifier, authPlugin } from '@parley/common'
import { Problem } from '@parley/contracts'
import { Elysia } from 'elysia'
import {
  ListQuery,
  MarkedRead,
  Notification,
  NotificationPage,
  NotificationParams,
  UnreadCount,
} from './model'
import type { NotificationService } from './service'

const errors = { 401: Problem, 404: Problem, 422: Problem }

/** The caller's in-app notifications. */
export function notificationRoutes(service: NotificationService, verifier: AccessTokenVerifier) {
  return new Elysia({ name: 'notification.routes', prefix: '/notifications' })
    .use(authPlugin(verifier))
    .get('', ({ identity, query }) => service.list(identity.userId, query), {
      auth: true,
      query: ListQuery,
      response: { 200: NotificationPage, 401: errors[401], 422: errors[422] },
      detail: {
        summary: 'List my notifications, newest first',
        description: 'Cursor-paginated; `unread=true` lists only unread ones.',
        tags: ['notifications'],
      },
    })
    .get('/unread-count', ({ identity }) => service.unreadCount(identity.userId), {
      auth: true,
      response: { 200: UnreadCount, 401: errors[401] },
      detail: { summary: 'Count my unread notifications (for a badge)', tags: ['notifications'] },
    })
    .post('/:id/read', ({ identity, params }) => service.markRead(identity.userId, params.id), {
      auth: true,
      params: NotificationParams,
      response: { 200: Notification, 401: errors[401], 404: errors[404], 422: errors[422] },
      detail: {
        summary: 'Mark one of my notifications read',
        description:
          'Idempotent: a notification already read keeps its first `readAt`. Unknown ids and other users’ notifications answer 404.',
        tags: ['notifications'],
      },
    })
    .post('/read-all', async ({ identity }) => ({ markedRead: await service.markAllRead(identity.userId) }), {
      auth: true,
      response: { 200: MarkedRead, 401: errors[401] },
      detail: { summary: 'Mark all my notifications read', tags: ['notifications'] },
    })
}
