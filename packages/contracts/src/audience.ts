import type { CloudEvent, EventType } from './events'

/**
 * The events a user sees: each goes into the per-user stream (resume, sync) of everyone in its
 * audience and is pushed to their sockets. Adding a type here means adding its case below.
 */
export const USER_STREAM_EVENT_TYPES = [
  'conversation.created',
  'conversation.updated',
  'conversation.participants_added',
  'conversation.participant_left',
  'conversation.read',
  'conversation.role_changed',
  'conversation.muted',
  'conversation.unmuted',
  'user.blocked',
  'user.unblocked',
  'message.sent',
  'message.updated',
  'message.deleted',
  'message.reaction_added',
  'message.reaction_removed',
  'message.pinned',
  'message.unpinned',
  'notification.created',
] as const satisfies readonly EventType[]

export type UserStreamEventType = (typeof USER_STREAM_EVENT_TYPES)[number]

export function isUserStreamEvent(event: CloudEvent): event is CloudEvent<UserStreamEventType> {
  return (USER_STREAM_EVENT_TYPES as readonly string[]).includes(event.type)
}

/** Who sees an event, each user once: every participant (the actor's other devices included). */
export function audienceOf(event: CloudEvent<UserStreamEventType>): string[] {
  const users = (() => {
    switch (event.type) {
      case 'message.sent': {
        const { senderId, recipientIds } = (event as CloudEvent<'message.sent'>).data
        return [senderId, ...recipientIds]
      }
      case 'conversation.participant_left': {
        // The one who left learns it too (their other devices drop the conversation).
        const { userId, participantIds } = (event as CloudEvent<'conversation.participant_left'>).data
        return [userId, ...participantIds]
      }
      case 'notification.created':
        return [(event as CloudEvent<'notification.created'>).data.userId]
      // Private to the one who muted or blocked: nobody else is told.
      case 'conversation.muted':
      case 'conversation.unmuted':
      case 'user.blocked':
      case 'user.unblocked':
        return [
          (
            event as CloudEvent<
              'conversation.muted' | 'conversation.unmuted' | 'user.blocked' | 'user.unblocked'
            >
          ).data.userId,
        ]
      default:
        return (
          event as CloudEvent<
            | 'conversation.created'
            | 'conversation.updated'
            | 'conversation.participants_added'
            | 'conversation.read'
            | 'conversation.role_changed'
            | 'message.updated'
            | 'message.deleted'
            | 'message.reaction_added'
            | 'message.reaction_removed'
            | 'message.pinned'
            | 'message.unpinned'
          >
        ).data.participantIds
    }
  })()
  return [...new Set(users)]
}
