import { t } from 'elysia'
import { Id, Timestamp } from '../conversations/model'
import { Message } from '../messages/model'

/** The most messages a conversation keeps pinned: pins live on the conversation document. */
export const MAX_PINS_PER_CONVERSATION = 50

export const PinParams = t.Object({ id: Id('Conversation id'), messageId: Id('Message id') })

export const Pin = t.Object({
  message: Message,
  pinnedBy: t.String({ description: 'The participant who pinned it' }),
  pinnedAt: Timestamp('When it was pinned'),
})
export type Pin = typeof Pin.static

export const PinList = t.Object({
  items: t.Array(Pin, {
    maxItems: MAX_PINS_PER_CONVERSATION,
    description:
      'Most recently pinned first; a pinned message deleted since is listed as its tombstone (`deletedAt`, empty body) until unpinned',
  }),
})
export type PinList = typeof PinList.static
