import type { ConcurrentIndex } from '@parley/common/postgres'
import { PROCESSED_EVENTS_AGE_INDEX } from '@parley/common/retention'

/** Indexes built concurrently after the drizzle migrations (see ConcurrentIndex): those the retention purge scans. */
export const INDEXES: readonly ConcurrentIndex[] = [PROCESSED_EVENTS_AGE_INDEX]
