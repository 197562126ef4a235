import { HttpProblem, type Metrics, problems } from '@parley/common'
import { buildEvent } from '@parley/common/events'
import { findByIds, type MongoOutbox } from '@parley/common/mongo'
import type { Collection } from 'mongodb'
import { type BlockDoc, blockId } from '../../db'
import { writeSwitch } from '../../db/switch'
import { EVENT_SOURCE } from '../conversations/service'
import type { UserDirectory } from '../users/service'
import type { BlockList } from './model'

/** The most blocks a list returns (a user blocking more is not a use case worth paging). */
const BLOCK_LIST_LIMIT = 1000

type Toggle = 'block' | 'unblock'

/**
 * Who blocked whom, one document per pair (see BlockDoc). A block stops the blocked user from
 * starting a direct conversation with the blocker or adding them to a conversation; shared
 * conversations stay and messages are still delivered (clients may hide them).
 */
export class BlockService {
  private readonly toggles

  constructor(
    private readonly blocks: Collection<BlockDoc>,
    private readonly users: UserDirectory,
    private readonly outbox: MongoOutbox,
    metrics: Metrics,
  ) {
    this.toggles = metrics.counter(
      'chat_blocks_total',
      'Blocks and unblocks that changed something (repeats are not counted)',
      ['action'],
    )
  }

  async list(callerId: string): Promise<BlockList> {
    const docs = await this.blocks
      .find({ userId: callerId }, { projection: { blockedUserId: 1, active: 1, at: 1 } })
      .limit(BLOCK_LIST_LIMIT)
      .toArray()
    return {
      items: docs
        .filter((doc) => doc.active)
        .sort((a, b) => b.at.getTime() - a.at.getTime())
        .map((doc) => ({ userId: doc.blockedUserId, blockedAt: doc.at.toISOString() })),
    }
  }

  /** Blocks `userId` (idempotent); publishes `user.blocked` when it was not blocked yet. */
  block(callerId: string, userId: string, correlationId?: string): Promise<void> {
    return this.toggle('block', callerId, userId, correlationId)
  }

  /** Unblocks `userId` (idempotent); publishes `user.unblocked` when it was blocked. */
  unblock(callerId: string, userId: string, correlationId?: string): Promise<void> {
    return this.toggle('unblock', callerId, userId, correlationId)
  }

  /**
   * 403 naming the field of each of `userIds` (at its index in `requested`) who blocked `callerId`:
   * one lookup by id each (findByIds), never a scan.
   */
  async requireNotBlockedBy(
    callerId: string,
    userIds: readonly string[],
    field: string,
    requested: readonly string[],
  ): Promise<void> {
    const others = userIds.filter((userId) => userId !== callerId)
    const found = await findByIds(
      this.blocks,
      others.map((userId) => blockId(userId, callerId)),
      { userId: 1, active: 1 },
    )
    const blockers = found.filter((doc) => doc.active).map((doc) => doc.userId)
    if (blockers.length === 0) return
    throw new HttpProblem(
      403,
      'Forbidden',
      'Some of these users do not accept conversations with you',
      'forbidden',
      blockers.map((userId) => ({
        field: `${field}.${requested.indexOf(userId)}`,
        message: `User ${userId} does not accept conversations with you`,
      })),
    )
  }

  private async toggle(
    action: Toggle,
    callerId: string,
    userId: string,
    correlationId: string | undefined,
  ): Promise<void> {
    if (userId === callerId)
      // A conflict with who the caller is, not a malformed id.
      throw new HttpProblem(409, 'Conflict', 'You cannot block yourself', 'conflict', [
        { field: 'params.userId', message: 'You cannot block yourself' },
      ])
    if ((await this.users.unknownIds([userId])).length > 0) throw problems.notFound('No such user')
    const id = blockId(callerId, userId)
    const at = new Date()
    const event = buildEvent(
      EVENT_SOURCE,
      action === 'block' ? 'user.blocked' : 'user.unblocked',
      { userId: callerId, blockedUserId: userId, at: at.toISOString() },
      { correlationId },
    )
    const written = await writeSwitch(this.blocks, this.outbox, {
      id,
      active: action === 'block',
      event,
      at,
      what: 'block',
      fresh: () => ({ _id: id, userId: callerId, blockedUserId: userId, active: true, version: 1, at }),
    })
    if (written) this.toggles.inc({ action })
  }
}
