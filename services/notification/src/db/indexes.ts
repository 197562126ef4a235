import type { ConcurrentIndex } from '@parley/common/postgres'
import { PROCESSED_EVENTS_AGE_INDEX } from '@parley/common/retention'

/** Indexes built concurrently after the drizzle migrations (see ConcurrentIndex): those the retention purges scan. */
export const INDEXES: readonly ConcurrentIndex[] = [
  PROCESSED_EVENTS_AGE_INDEX,
  { name: 'notifications_created_at_idx', on: 'notifications (created_at)' },
  // `message.deleted` finds the notifications that quote the message, whoever received them.
  {
    name: 'notifications_message_id_idx',
    on: "notifications ((payload->>'messageId')) where type = 'message.received'",
  },
  {
    name: 'notifications_mention_message_id_idx',
    on: "notifications ((payload->>'messageId')) where type = 'mention'",
  },
  // Partial: `sending` rows (completed_at null) are never purged, so they need no entry.
  {
    name: 'email_deliveries_completed_at_idx',
    on: 'email_deliveries (completed_at) where completed_at is not null',
  },
]
