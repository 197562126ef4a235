import { t } from 'elysia'
import { Id } from '../conversations/model'

export const ReactionParams = t.Object({
  id: Id('Conversation id'),
  messageId: Id('Message id'),
  // The precise rule (one RGI emoji) is checked by the service, which names this field.
  emoji: t.String({
    minLength: 1,
    maxLength: 64,
    description:
      'One emoji, URL-encoded: a single RGI emoji (Unicode emoji-test "fully-qualified": skin tones, ZWJ sequences, flags and keycaps included); a pictograph without its U+FE0F (e.g. ❤) counts as the emoji form (❤️)',
  }),
})

export const Reaction = t.Object({
  emoji: t.String({ description: 'The emoji as stored: NFC, fully-qualified (❤️, not ❤)' }),
  count: t.Integer({ minimum: 1, description: 'How many users reacted with it' }),
  me: t.Boolean({ description: 'Whether the caller is one of them' }),
})
export type Reaction = typeof Reaction.static

export const Reactions = t.Array(Reaction, {
  description: 'One entry per emoji, most used first (ties: by emoji)',
})

export const MessageReactions = t.Object({
  messageId: t.String({ description: 'The message these reactions are on' }),
  reactions: Reactions,
})
export type MessageReactions = typeof MessageReactions.static
