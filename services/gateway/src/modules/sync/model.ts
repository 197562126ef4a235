import { HttpProblem } from '@parley/common'
import {
  type EventData,
  EventSchemas,
  Problem,
  USER_STREAM_EVENT_TYPES,
  type UserStreamEventType,
} from '@parley/contracts'
import { type Static, Type as t } from '@sinclair/typebox'

export const Cursor = t.String({
  minLength: 1,
  maxLength: 200,
  // The shape decodeCursor accepts (base64url); what it encodes is the server's.
  pattern: '^[A-Za-z0-9_-]+$',
  description: 'Opaque position in the caller’s event stream; pass it back as `since` to resume after it',
})

/** An event of the user's stream as clients receive it, on the WebSocket and from `GET /sync`. */
export const StreamFrame = t.Union(
  USER_STREAM_EVENT_TYPES.map((type) =>
    t.Object({
      type: t.Literal(type, { description: 'The event type (CloudEvents `type`); says what `data` holds' }),
      id: t.String({ description: 'The event id (CloudEvents `id`), the same for every recipient' }),
      cursor: Cursor,
      data: EventSchemas[type],
    }),
  ),
)
/** Each type with its own data (the union above, typed per member). */
export type StreamFrame = {
  [T in UserStreamEventType]: { type: T; id: string; cursor: string; data: EventData<T> }
}[UserStreamEventType]

export const SYNC_MAX_LIMIT = 500

export const SyncQuery = t.Object({
  since: t.Optional(Cursor),
  limit: t.Optional(
    t.Integer({
      minimum: 1,
      maximum: SYNC_MAX_LIMIT,
      default: 100,
      description: `Most events to return, 1–${SYNC_MAX_LIMIT}`,
    }),
  ),
})
export type SyncQuery = Static<typeof SyncQuery>

export const SyncPage = t.Object({
  events: t.Array(StreamFrame, { description: 'Oldest first; empty without `since`' }),
  cursor: t.String({
    description: 'After the last event returned (or the current position): the next `since`',
  }),
  hasMore: t.Boolean({ description: 'More events follow: call again with `cursor` right away' }),
})

/** 410: the resume point is older than the stream keeps, or from a stream that was lost. */
export const ResyncRequiredProblem = t.Composite([
  Problem,
  t.Object({
    cursor: t.String({ description: 'The current position: refetch state, then continue from here' }),
  }),
])

/** Why a resume point cannot be served (the label of `realtime_resyncs_total`). */
export type ResyncReason =
  /** The cursor is of another stream generation: Redis lost the streams (e.g. restarted empty). */
  | 'epoch'
  /** Older than STREAM_RETENTION_DAYS. */
  | 'expired'
  /** Events after it were trimmed (STREAM_MAX_EVENTS per user). */
  | 'trimmed'

export class ResyncRequired extends HttpProblem {
  constructor(
    readonly cursor: string,
    readonly reason: ResyncReason,
    headers: Record<string, string> = {},
  ) {
    super(
      410,
      'Resync Required',
      'The events after this cursor are no longer kept: refetch state, then sync from `cursor`',
      'resync-required',
      undefined,
      headers,
    )
  }

  override toJSON(instance?: string): Problem & { cursor: string } {
    return { ...super.toJSON(instance), cursor: this.cursor }
  }
}

/** A position in one user's stream: the stream generation and a Redis stream entry id. */
export type StreamPosition = { epoch: string; id: string }

const STREAM_ID = /^(\d{1,16})-(\d{1,16})$/
const EPOCH = /^[0-9a-f]{16}$/

/** Opaque to clients: base64url of `<epoch>:<stream id>`. */
export function encodeCursor({ epoch, id }: StreamPosition): string {
  return Buffer.from(`${epoch}:${id}`).toString('base64url')
}

/** The position a cursor names, or undefined if it is not one this API issued. */
export function decodeCursor(cursor: string): StreamPosition | undefined {
  if (!/^[A-Za-z0-9_-]{1,200}$/.test(cursor)) return undefined
  const [epoch, id, ...rest] = Buffer.from(cursor, 'base64url').toString('latin1').split(':')
  if (rest.length > 0 || !epoch || !id || !EPOCH.test(epoch) || !STREAM_ID.test(id)) return undefined
  return { epoch, id }
}

function parts(id: string): [number, number] {
  const [, time, sequence] = STREAM_ID.exec(id) ?? ['', '0', '0']
  return [Number(time), Number(sequence)]
}

/** Orders Redis stream ids (`<ms>-<seq>`). */
export function compareStreamIds(a: string, b: string): number {
  const [aTime, aSequence] = parts(a)
  const [bTime, bSequence] = parts(b)
  return aTime - bTime || aSequence - bSequence
}

/** Epoch milliseconds of a stream id (Redis' clock when the entry was added). */
export function streamIdTime(id: string): number {
  return parts(id)[0]
}

/** An event as a user stream entry keeps it: `data` stays the JSON text it was published with. */
export type StreamEntry = {
  streamId: string
  type: UserStreamEventType
  id: string
  time: string
  data: string
}

/** The WebSocket frame of an entry, built without re-serialising its data. */
export function frameText(entry: Omit<StreamEntry, 'time'>, epoch: string): string {
  const cursor = encodeCursor({ epoch, id: entry.streamId })
  return `{"type":${JSON.stringify(entry.type)},"id":${JSON.stringify(entry.id)},"cursor":"${cursor}","data":${entry.data}}`
}

export function frameOf(entry: StreamEntry, epoch: string): StreamFrame {
  return {
    type: entry.type,
    id: entry.id,
    cursor: encodeCursor({ epoch, id: entry.streamId }),
    data: JSON.parse(entry.data),
  } as StreamFrame
}
