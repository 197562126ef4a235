import { type AccessTokenVerifier, httpKit, type ReadinessCheck, type Runtime } from '@parley/common'
import { Elysia } from 'elysia'
import type { Config } from './config'
import { attachmentRoutes } from './modules/attachments/index'
import type { AttachmentService } from './modules/attachments/service'
import { blockRoutes } from './modules/blocks/index'
import { conversationRoutes } from './modules/conversations/index'
import type { ConversationService } from './modules/conversations/service'
import { messageRoutes } from './modules/messages/index'
import type { MessageService } from './modules/messages/service'
import { pinRoutes } from './modules/pins/index'
import { reactionRoutes } from './modules/reactions/index'

export type AppDeps = {
  runtime: Runtime
  config: Config
  /** Checks behind the ops port's /ready (runService serves them with opsApp). */
  readiness: ReadinessCheck[]
  verifier: AccessTokenVerifier
  conversations: ConversationService
  messages: MessageService
  /** Files in messages (absent in benchmarks of text only: its routes answer 503). */
  attachments?: AttachmentService
}

/** Builds the chat service; index.ts connects the clients and listens. */
export function buildApp({ runtime, config, verifier, conversations, messages, attachments }: AppDeps) {
  return new Elysia()
    .use(
      httpKit({
        service: 'chat',
        description: 'Conversations and messages',
        logger: runtime.logger,
        metrics: runtime.metrics,
        bodyLimitBytes: config.BODY_LIMIT_BYTES,
      }),
    )
    .use(blockRoutes(verifier, conversations.blocks))
    .use(conversationRoutes(verifier, conversations))
    .use(messageRoutes(verifier, messages))
    .use(reactionRoutes(verifier, messages.reactions))
    .use(pinRoutes(verifier, messages.pins))
    .use(attachmentRoutes(verifier, attachments))
}

export type App = ReturnType<typeof buildApp>
