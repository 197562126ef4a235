import { t } from 'elysia'
import { Id, Timestamp } from '../conversations/model'

export const BlockParams = t.Object({ userId: Id('The user to block or unblock') })

export const BlockList = t.Object({
  items: t.Array(
    t.Object({
      userId: Id('A user the caller blocked'),
      blockedAt: Timestamp('When the caller blocked them'),
    }),
    { description: 'Most recent first' },
  ),
})
export type BlockList = typeof BlockList.static
