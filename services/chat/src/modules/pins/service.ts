import { type Metrics, problems } from '@parley/common'
import { buildEvent } from '@parley/common/events'
import { findByIds } from '@parley/common/mongo'
import type { Collection } from 'mongodb'
import { type ConversationDoc, MESSAGE_FIELDS, type MessageDoc } from '../../db'
import type { AttachmentService } from '../attachments/service'
import { EVENT_SOURCE } from '../conversations/service'
import type { ConversationStore } from '../conversations/store'
import { toMessage } from '../messages/service'
import { type ReactionService, summarize } from '../reactions/service'
import { MAX_PINS_PER_CONVERSATION, type PinList } from './model'

const MESSAGE_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** The document path of a pin. Message ids become field names, so only a lowercase UUID may. */
function pinPath(messageId: string): `pins.${string}` {
  if (!MESSAGE_ID.test(messageId))
    throw problems.validation([{ field: 'params.messageId', message: 'Must be a message id' }])
  return `pins.${messageId}`
}

/**
 * Pinned messages, kept on the conversation document (messageId → who and when): a pin is a
 * versioned change of the conversation (ConversationStore.change), so the limit holds under
 * concurrency and the cached conversation follows.
 */
export class PinService {
  private readonly toggles

  constructor(
    private readonly messages: Collection<MessageDoc>,
    private readonly store: ConversationStore,
    private readonly reactions: ReactionService,
    metrics: Metrics,
    /** The message views' attachment downloads (none without an object store). */
    private readonly attachments?: Pick<AttachmentService, 'views'>,
  ) {
    this.toggles = metrics.counter(
      'chat_pins_total',
      'Pins and unpins that changed something (repeats are not counted)',
      ['action'],
    )
  }

  /** The pinned messages, most recently pinned first; one lookup by id each (findByIds). */
  async list(callerId: string, conversationId: string): Promise<PinList> {
    return this.view(callerId, await this.store.forParticipant(conversationId, callerId))
  }

  /** Pins the message (idempotent); publishes `message.pinned` when it was not pinned yet. */
  async pin(callerId: string, conversationId: string, messageId: string, correlationId?: string) {
    const path = pinPath(messageId)
    await this.store.forParticipant(conversationId, callerId)
    const message = await this.messages.findOne(
      { _id: messageId, conversationId },
      { projection: { seq: 1, deletedAt: 1 } },
    )
    if (!message) throw problems.notFound('No such message')
    if (message.deletedAt) throw problems.conflict('The message was deleted')
    const { seq } = message
    const at = new Date().toISOString()
    const { doc, event } = await this.store.change(conversationId, callerId, (current) => {
      const pins = current.pins ?? {}
      if (pins[messageId]) return null
      if (Object.keys(pins).length >= MAX_PINS_PER_CONVERSATION)
        throw problems.conflict(`A conversation keeps at most ${MAX_PINS_PER_CONVERSATION} pinned messages`)
      return {
        update: { $set: { [path]: { seq, userId: callerId, at } } },
        event: buildEvent(
          EVENT_SOURCE,
          'message.pinned',
          {
            messageId,
            conversationId,
            seq,
            userId: callerId,
            participantIds: current.participantIds,
            at,
          },
          { correlationId },
        ),
      }
    })
    if (event) this.toggles.inc({ action: 'pin' })
    return this.view(callerId, doc)
  }

  /** Unpins the message (idempotent); publishes `message.unpinned` when it was pinned. */
  async unpin(callerId: string, conversationId: string, messageId: string, correlationId?: string) {
    const path = pinPath(messageId)
    const at = new Date().toISOString()
    const { doc, event } = await this.store.change(conversationId, callerId, (current) => {
      const pinned = current.pins?.[messageId]
      if (!pinned) return null
      return {
        update: { $unset: { [path]: '' } },
        event: buildEvent(
          EVENT_SOURCE,
          'message.unpinned',
          {
            messageId,
            conversationId,
            seq: pinned.seq,
            userId: callerId,
            participantIds: current.participantIds,
            at,
          },
          { correlationId },
        ),
      }
    })
    if (event) this.toggles.inc({ action: 'unpin' })
    return this.view(callerId, doc)
  }

  private async view(callerId: string, conversation: ConversationDoc): Promise<PinList> {
    const pins = Object.entries(conversation.pins ?? {}).sort(([, a], [, b]) => (a.at < b.at ? 1 : -1))
    const found = await findByIds(
      this.messages,
      pins.map(([messageId]) => messageId),
      MESSAGE_FIELDS,
    )
    // A pinned message deleted since stays, as its tombstone: it still takes one of the 50 places.
    const live = new Map(
      found
        .filter((message) => message.conversationId === conversation._id)
        .map((message) => [message._id, message]),
    )
    const reactions = summarize(
      await this.reactions.ofBlocks(
        conversation._id,
        [...live.values()].map((message) => message.seqBlock),
      ),
      callerId,
    )
    return {
      items: pins.flatMap(([messageId, pin]) => {
        const message = live.get(messageId)
        if (!message) return []
        return [
          {
            message: toMessage(
              message,
              reactions.get(messageId) ?? [],
              this.attachments?.views(message.attachments),
            ),
            pinnedBy: pin.userId,
            pinnedAt: pin.at,
          },
        ]
      }),
    }
  }
}
