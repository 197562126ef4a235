import { type Metrics, problems } from '@parley/common'
import { buildEvent } from '@parley/common/events'
import type { MongoOutbox } from '@parley/common/mongo'
import type { Collection } from 'mongodb'
import type { PageReaction } from '../../cache'
import { MESSAGE_FIELDS, type MessageDoc, REACTION_FIELDS, type ReactionDoc } from '../../db'
import { writeSwitch } from '../../db/switch'
import { EVENT_SOURCE } from '../conversations/service'
import type { ConversationStore } from '../conversations/store'
import type { MessageReactions, Reaction } from './model'

const RGI_EMOJI = /^\p{RGI_Emoji}$/v
const VARIATION_SELECTOR_16 = '\uFE0F'

/**
 * The emoji as stored, or null when `raw` is not exactly one RGI emoji. A pictograph typed
 * without its emoji presentation selector (❤ rather than ❤️) is given it, so both count as one.
 */
export function normalizeEmoji(raw: string): string | null {
  const emoji = raw.normalize('NFC')
  if (RGI_EMOJI.test(emoji)) return emoji
  const presented = `${emoji}${VARIATION_SELECTOR_16}`
  return [...emoji].length === 1 && RGI_EMOJI.test(presented) ? presented : null
}

/** Counts per emoji of each message, `me` for `callerId`; most used first, then by emoji. */
export function summarize(reactions: readonly PageReaction[], callerId: string): Map<string, Reaction[]> {
  const byMessage = new Map<string, Map<string, Reaction>>()
  for (const { messageId, emoji, userId } of reactions) {
    const emojis = byMessage.get(messageId) ?? new Map<string, Reaction>()
    byMessage.set(messageId, emojis)
    const entry = emojis.get(emoji) ?? { emoji, count: 0, me: false }
    entry.count += 1
    entry.me ||= userId === callerId
    emojis.set(emoji, entry)
  }
  return new Map(
    [...byMessage].map(([messageId, emojis]) => [
      messageId,
      [...emojis.values()].sort((a, b) => b.count - a.count || (a.emoji < b.emoji ? -1 : 1)),
    ]),
  )
}

type Toggle = 'add' | 'remove'

/**
 * Reactions, one document per (message, emoji, user) (see ReactionDoc): adding and removing are
 * versioned writes of that document only, so concurrent reactions never lose one another.
 */
export class ReactionService {
  private readonly toggles

  constructor(
    private readonly reactions: Collection<ReactionDoc>,
    private readonly messages: Collection<MessageDoc>,
    private readonly store: ConversationStore,
    private readonly outbox: MongoOutbox,
    metrics: Metrics,
    private readonly maxPerMessage: number,
  ) {
    this.toggles = metrics.counter(
      'chat_reactions_total',
      'Reaction adds and removals that changed something (repeats are not counted)',
      ['action'],
    )
  }

  /** The active reactions to the messages of `blocks`: one equality lookup per block. */
  async ofBlocks(conversationId: string, blocks: Iterable<number>): Promise<PageReaction[]> {
    const found = await Promise.all(
      [...new Set(blocks)].map((seqBlock) =>
        this.reactions
          .find({ conversationId, seqBlock, active: true }, { projection: REACTION_FIELDS })
          .toArray(),
      ),
    )
    return found.flat().map(({ messageId, emoji, userId }) => ({ messageId, emoji, userId }))
  }

  /** Adds the caller's reaction (idempotent); publishes `message.reaction_added` when it was not there. */
  add(callerId: string, conversationId: string, messageId: string, rawEmoji: string, correlationId?: string) {
    return this.toggle('add', callerId, conversationId, messageId, rawEmoji, correlationId)
  }

  /** Removes the caller's reaction (idempotent); publishes `message.reaction_removed` when it was there. */
  remove(
    callerId: string,
    conversationId: string,
    messageId: string,
    rawEmoji: string,
    correlationId?: string,
  ) {
    return this.toggle('remove', callerId, conversationId, messageId, rawEmoji, correlationId)
  }

  private async toggle(
    action: Toggle,
    callerId: string,
    conversationId: string,
    messageId: string,
    rawEmoji: string,
    correlationId: string | undefined,
  ): Promise<MessageReactions> {
    const emoji = normalizeEmoji(rawEmoji)
    if (emoji === null)
      throw problems.validation([{ field: 'params.emoji', message: 'Must be exactly one emoji' }])
    const conversation = await this.store.forParticipant(conversationId, callerId)
    const message = await this.messages.findOne(
      { _id: messageId, conversationId },
      { projection: MESSAGE_FIELDS },
    )
    if (!message) throw problems.notFound('No such message')
    if (message.deletedAt) throw problems.conflict('The message was deleted')
    const current = await this.ofMessage(message)
    if (
      action === 'add' &&
      !current.some((reaction) => reaction.emoji === emoji) &&
      new Set(current.map((reaction) => reaction.emoji)).size >= this.maxPerMessage
    )
      throw problems.conflict(`A message carries at most ${this.maxPerMessage} different emoji`)

    const at = new Date()
    const event = buildEvent(
      EVENT_SOURCE,
      action === 'add' ? 'message.reaction_added' : 'message.reaction_removed',
      {
        messageId,
        conversationId,
        seq: message.seq,
        userId: callerId,
        emoji,
        participantIds: conversation.participantIds,
        at: at.toISOString(),
      },
      { correlationId },
    )
    const reactionId = `${messageId}:${emoji}:${callerId}`
    const changed = await writeSwitch(this.reactions, this.outbox, {
      id: reactionId,
      active: action === 'add',
      event,
      at,
      what: 'reaction',
      fresh: () => ({
        _id: reactionId,
        conversationId,
        seqBlock: message.seqBlock,
        messageId,
        emoji,
        userId: callerId,
        active: true,
        version: 1,
        at,
      }),
    })
    if (changed) {
      this.toggles.inc({ action })
      // The cached latest page carries reactions: a new messagesVersion retires it.
      await this.store.update({ _id: conversationId }, { $inc: { messagesVersion: 1 } })
    }
    const after = changed ? await this.ofMessage(message) : current
    return { messageId, reactions: summarize(after, callerId).get(messageId) ?? [] }
  }

  /** Drops the reactions of a deleted message (its `message.deleted` stands for their removal). */
  async removeAll(message: MessageDoc): Promise<void> {
    await this.reactions.deleteMany({
      conversationId: message.conversationId,
      seqBlock: message.seqBlock,
      messageId: message._id,
    })
  }

  private async ofMessage(message: MessageDoc): Promise<PageReaction[]> {
    const docs = await this.reactions
      .find(
        {
          conversationId: message.conversationId,
          seqBlock: message.seqBlock,
          messageId: message._id,
          active: true,
        },
        { projection: REACTION_FIELDS },
      )
      .toArray()
    return docs.map(({ messageId, emoji, userId }) => ({ messageId, emoji, userId }))
  }
}
