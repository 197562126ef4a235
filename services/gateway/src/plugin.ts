import type { Logger } from '@parley/common'
import { Elysia } from 'elysia'

/** What httpKit derives for every request; the gateway's plugins run behind it. */
export type EdgeContext = { requestId: string; traceparent: string; log: Logger }

type Empty = Record<never, never>

/** A named plugin whose handlers see httpKit's per-request context. */
export function gatewayPlugin(name: string) {
  return new Elysia<'', { decorator: Empty; store: Empty; derive: EdgeContext; resolve: Empty }>({ name })
}
