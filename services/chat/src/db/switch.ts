import { problems } from '@parley/common'
import { isDuplicateKeyError, type MongoOutbox, outboxChangeUpdate } from '@parley/common/mongo'
import type { CloudEvent } from '@parley/contracts'
import type { Collection, Filter, OptionalUnlessRequiredId, UpdateFilter } from 'mongodb'

/** A document that is on or off (a reaction, a block), versioned, with its outbox change ids. */
export type SwitchDoc = {
  _id: string
  active: boolean
  version: number
  at: Date
  outboxChanges?: Record<string, string>
}

/**
 * Turns the switch document `id` on or off by a write conditional on the version it read, which
 * records `event`'s id at the new version (the outbox subject): the event goes out if and only if
 * that write happened. A missing document is created from `fresh` (a concurrent creation: read
 * again). False when it already was so; 503 naming `what` when it keeps changing under us.
 */
export async function writeSwitch<T extends SwitchDoc>(
  collection: Collection<T>,
  outbox: MongoOutbox,
  change: { id: string; active: boolean; event: CloudEvent; at: Date; fresh: () => T; what: string },
): Promise<boolean> {
  const { id, active, event, at } = change
  const byId = { _id: id } as Filter<T>
  for (let attempt = 1; attempt <= 5; attempt++) {
    const stored = await collection.findOne(byId, { projection: { active: 1, version: 1 } })
    if ((stored?.active ?? false) === active) return false
    const version = (stored?.version ?? 0) + 1
    const recorded = outboxChangeUpdate({ version, id: event.id })
    await outbox.stage({ collection: collection.collectionName, id, change: { version, id: event.id } }, [
      event,
    ])
    let written: boolean
    try {
      if (!stored) {
        const doc = { ...change.fresh(), version, outboxChanges: { [`v${version}`]: event.id } }
        await collection.insertOne(doc as OptionalUnlessRequiredId<T>)
        written = true
      } else {
        const update = {
          $set: { active, version, at, ...recorded.$set },
          ...(Object.keys(recorded.$unset).length > 0 && { $unset: recorded.$unset }),
        } as UpdateFilter<T>
        const result = await collection.updateOne({ _id: id, version: stored.version } as Filter<T>, update)
        written = result.modifiedCount === 1
      }
    } catch (error) {
      await outbox.discard([event]).catch(() => undefined)
      // Someone else created it first: look again.
      if (!isDuplicateKeyError(error)) throw error
      continue
    }
    if (written) {
      outbox.committed([event])
      return true
    }
    await outbox.discard([event]).catch(() => undefined)
  }
  throw problems.serviceUnavailable(`This ${change.what} is changing too fast, try again`)
}
