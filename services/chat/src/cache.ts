import { cacheMetrics, type Logger, type Metrics } from '@parley/common'
import type { Redis } from '@parley/common/redis'
import type { ConversationDoc, MessageDoc, ReactionDoc } from './db'

/** How many of the newest messages of a conversation are cached (the largest page a client may ask for). */
export const LATEST_PAGE_SIZE = 100

/** A reaction as a page needs it (the caller's `me` is worked out per request). */
export type PageReaction = Pick<ReactionDoc, 'messageId' | 'emoji' | 'userId'>

/**
 * The newest messages of a conversation, oldest first, whether older ones exist, and the
 * reactions to them, as read after the conversation was at `messagesVersion` (edits, deletes
 * and reactions bump it too).
 */
export type LatestPage = {
  messagesVersion: number
  messages: MessageDoc[]
  hasOlder: boolean
  reactions: PageReaction[]
}

/** Stores the payload unless the cached copy is already at a newer version (concurrent writers, stale fills). */
const SET_IF_NEWER = `
local current = redis.call('HGET', KEYS[1], 'version')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'payload', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`

const conversationKey = (id: string) => `chat:conversation:${id}`
const userKey = (id: string) => `chat:user:${id}`
const latestPageKey = (conversationId: string) => `chat:latest:${conversationId}`

function reviveConversation(json: string): ConversationDoc {
  const doc = JSON.parse(json) as ConversationDoc
  doc.createdAt = new Date(doc.createdAt)
  doc.updatedAt = new Date(doc.updatedAt)
  if (doc.lastMessage) doc.lastMessage.createdAt = new Date(doc.lastMessage.createdAt)
  return doc
}

function reviveLatestPage(json: string): LatestPage {
  const page = JSON.parse(json) as LatestPage
  for (const message of page.messages) {
    message.createdAt = new Date(message.createdAt)
    if (message.editedAt) message.editedAt = new Date(message.editedAt)
    if (message.deletedAt) message.deletedAt = new Date(message.deletedAt)
    if (message.thread) message.thread.lastReplyAt = new Date(message.thread.lastReplyAt)
  }
  return page
}

type CacheName = 'conversation' | 'latest_messages' | 'display_names'

/**
 * Cache-aside in Redis for conversation metadata and the latest message page. Every Redis
 * failure is a miss (or a skipped write): the caller reads MongoDB and the request succeeds.
 *
 * Freshness: writers store the conversation returned by their update, ordered by `version`, so
 * a slow writer or a reader filling from an older read cannot overwrite a newer copy. A latest
 * page is read from MongoDB after the conversation was seen at some `messagesVersion` and is
 * used only while the conversation is still at that version: a message is inserted before the
 * conversation update that bumps it, so a page can never miss a message its tag accounts for,
 * and a new message invalidates the page without a delete that could race with a fill.
 */
export class ChatCache {
  private readonly requests

  constructor(
    private readonly redis: Redis,
    metrics: Metrics,
    private readonly logger: Logger,
    private readonly ttlSeconds: number,
  ) {
    this.requests = cacheMetrics(metrics)
  }

  async conversation(id: string): Promise<ConversationDoc | undefined> {
    return this.lookup('conversation', async () => {
      const payload = await this.redis.hget(conversationKey(id), 'payload')
      return payload === null ? undefined : reviveConversation(payload)
    })
  }

  async storeConversation(doc: ConversationDoc): Promise<void> {
    await this.write('conversation', () =>
      this.redis.eval(
        SET_IF_NEWER,
        1,
        conversationKey(doc._id),
        doc.version,
        JSON.stringify(doc),
        this.ttlSeconds * 1000,
      ),
    )
  }

  /** The cached latest page, if it was read at the conversation's current `messagesVersion`. */
  async latestPage(conversation: ConversationDoc): Promise<LatestPage | undefined> {
    return this.lookup('latest_messages', async () => {
      const payload = await this.redis.hget(latestPageKey(conversation._id), 'payload')
      if (payload === null) return undefined
      const page = reviveLatestPage(payload)
      // A page cached by a previous version has no seqs or no reactions: a miss.
      const current =
        page.messagesVersion === conversation.messagesVersion &&
        Array.isArray(page.reactions) &&
        page.messages.every((message) => typeof message.seq === 'number')
      return current ? page : undefined
    })
  }

  async storeLatestPage(conversationId: string, page: LatestPage): Promise<void> {
    await this.write('latest_messages', () =>
      this.redis.eval(
        SET_IF_NEWER,
        1,
        latestPageKey(conversationId),
        page.messagesVersion,
        JSON.stringify(page),
        this.ttlSeconds * 1000,
      ),
    )
  }

  /**
   * The cached display names of `ids` (those missing are left out). Read with one round trip:
   * a conversation view names every participant, and FerretDB answers one lookup per id.
   */
  async displayNames(ids: readonly string[]): Promise<Map<string, string>> {
    if (ids.length === 0) return new Map()
    const found = await this.lookup('display_names', async () => {
      const pipeline = this.redis.pipeline()
      for (const id of ids) pipeline.hget(userKey(id), 'payload')
      const results = (await pipeline.exec()) ?? []
      const names = new Map<string, string>()
      results.forEach(([error, name], index) => {
        if (!error && typeof name === 'string') names.set(ids[index] as string, name)
      })
      return names.size === 0 ? undefined : names
    })
    return found ?? new Map()
  }

  /** Stores display names unless a newer one is cached (the projection's `updatedAt` orders them). */
  async storeDisplayNames(
    users: readonly { id: string; displayName: string; updatedAt: Date }[],
  ): Promise<void> {
    if (users.length === 0) return
    await this.write('display_names', async () => {
      const pipeline = this.redis.pipeline()
      for (const user of users)
        pipeline.eval(
          SET_IF_NEWER,
          1,
          userKey(user.id),
          user.updatedAt.getTime(),
          user.displayName,
          this.ttlSeconds * 1000,
        )
      await pipeline.exec()
    })
  }

  private async lookup<T>(cache: CacheName, get: () => Promise<T | undefined>): Promise<T | undefined> {
    try {
      const value = await get()
      this.requests.inc({ cache, result: value === undefined ? 'miss' : 'hit' })
      return value
    } catch (error) {
      this.requests.inc({ cache, result: 'error' })
      this.logger.debug({ err: error instanceof Error ? error.message : error, cache }, 'cache read bypassed')
      return undefined
    }
  }

  private async write(cache: CacheName, set: () => Promise<unknown>): Promise<void> {
    try {
      await set()
    } catch (error) {
      this.logger.debug({ err: error instanceof Error ? error.message : error, cache }, 'cache write skipped')
    }
  }
}
