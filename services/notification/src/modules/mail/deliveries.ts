import { and, eq, inArray, sql } from 'drizzle-orm'
import type { Db } from '../../db'
import { type EmailDeliveryStatus, emailDeliveries } from '../../db/schema'
import type { TemplateName } from './templates'

/** `owned`: this attempt sends it; `done`: sent, skipped or rejected before; `busy`: another attempt holds it. */
export type DeliveryClaim = 'owned' | 'done' | 'busy'

/** Longer than one send can take (connect + greeting + socket timeouts), so a live attempt keeps its claim. */
const CLAIM_LEASE_MS = 120_000

/** Ledger of the emails of each event, one row per recipient. */
export class EmailDeliveries {
  constructor(private readonly db: Db) {}

  /** Claims the recipients of an event not yet mailed; a lapsed claim (crashed attempt) is taken over. */
  async claim(
    eventId: string,
    template: TemplateName,
    recipientIds: readonly string[],
  ): Promise<Map<string, DeliveryClaim>> {
    const claims = new Map<string, DeliveryClaim>()
    if (recipientIds.length === 0) return claims
    const claimedUntil = sql`now() + ${CLAIM_LEASE_MS} * interval '1 millisecond'`
    const owned = await this.db
      .insert(emailDeliveries)
      .values(
        recipientIds.map((recipientId) => ({
          eventId,
          recipientId,
          template,
          status: 'sending' as const,
          claimedUntil,
        })),
      )
      .onConflictDoUpdate({
        target: [emailDeliveries.eventId, emailDeliveries.recipientId],
        set: { claimedUntil },
        setWhere: sql`${emailDeliveries.status} = 'sending' and ${emailDeliveries.claimedUntil} < now()`,
      })
      .returning({ recipientId: emailDeliveries.recipientId })
    for (const { recipientId } of owned) claims.set(recipientId, 'owned')
    const others = recipientIds.filter((recipientId) => !claims.has(recipientId))
    if (others.length > 0) {
      const rows = await this.db
        .select({ recipientId: emailDeliveries.recipientId, status: emailDeliveries.status })
        .from(emailDeliveries)
        .where(and(eq(emailDeliveries.eventId, eventId), inArray(emailDeliveries.recipientId, others)))
      for (const row of rows) claims.set(row.recipientId, row.status === 'sending' ? 'busy' : 'done')
    }
    return claims
  }

  async complete(
    eventId: string,
    recipientId: string,
    status: Exclude<EmailDeliveryStatus, 'sending'>,
    reason: string | null = null,
  ): Promise<void> {
    await this.db
      .update(emailDeliveries)
      .set({ status, reason, completedAt: sql`now()` })
      .where(and(eq(emailDeliveries.eventId, eventId), eq(emailDeliveries.recipientId, recipientId)))
  }

  /** Lets the next attempt take the claim at once instead of waiting for the lease to lapse. */
  async release(eventId: string, recipientId: string): Promise<void> {
    await this.db
      .update(emailDeliveries)
      .set({ claimedUntil: sql`'-infinity'::timestamptz` })
      .where(
        and(
          eq(emailDeliveries.eventId, eventId),
          eq(emailDeliveries.recipientId, recipientId),
          eq(emailDeliveries.status, 'sending'),
        ),
      )
  }
}
