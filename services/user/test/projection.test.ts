import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { Metrics, newId } from '@parley/common'
import { buildEvent } from '@parley/common/events'
import { testInfra, testLogger, waitFor } from '@parley/testkit'
import { eq } from 'drizzle-orm'
import { pendingEmailVerifications, processedEvents, profiles } from '../src/db/schema'
import { ProfileCache } from '../src/modules/profiles/cache'
import { ProfileProjection } from '../src/modules/projection/service'
import { type Harness, registration, startUserService } from './harness'

let user: Harness
/** The same projection the consumer runs, called directly to control ordering and concurrency. */
let projection: ProfileProjection

beforeAll(async () => {
  user = await startUserService()
  projection = new ProfileProjection(
    user.db,
    new ProfileCache(user.redis, 300, new Metrics('test'), testLogger()),
  )
})

afterAll(async () => {
  await user.stop()
})

async function profile(id: string) {
  const [row] = await user.db.select().from(profiles).where(eq(profiles.id, id))
  return row
}

function verification(userId: string) {
  return { userId, email: `${userId.slice(-12)}@example.com`, verifiedAt: new Date().toISOString() }
}

describe('user.registered', () => {
  test('creates the profile from the event', async () => {
    const id = newId()
    const createdAt = '2026-01-02T03:04:05.678Z'
    await user.publish(
      'user.registered',
      registration(id, { email: 'New.User@Example.COM', displayName: 'New User', createdAt }),
    )
    const row = await waitFor(() => profile(id), { what: 'profile created' })
    expect(row).toMatchObject({
      email: 'new.user@example.com',
      displayName: 'New User',
      searchName: 'new user',
      emailVerified: false,
      version: 1,
    })
    expect(row.createdAt.toISOString()).toBe(createdAt)
  })

  test('a redelivered event is applied once', async () => {
    const id = newId()
    const eventId = newId()
    await user.publish('user.registered', registration(id), { id: eventId })
    await waitFor(() => profile(id), { what: 'profile created' })
    await user.publish('user.registered', registration(id, { displayName: 'Second Copy' }), { id: eventId })
    // A marker event published after the duplicate: once it is applied, the duplicate was consumed too.
    const marker = newId()
    await user.publish('user.registered', registration(marker))
    await waitFor(() => profile(marker), { what: 'marker applied' })
    const inbox = await user.db.select().from(processedEvents).where(eq(processedEvents.eventId, eventId))
    expect(inbox).toHaveLength(1)
    expect((await profile(id))?.displayName).toBe(`User ${id.slice(-6)}`)
  })

  test('a second registration event never overwrites what the user changed since', async () => {
    const id = newId()
    await projection.registered(buildEvent('parley/auth', 'user.registered', registration(id)))
    await user.request('PATCH', '/users/me', { token: await user.token(id), body: { displayName: 'Edited' } })
    await projection.registered(
      buildEvent('parley/auth', 'user.registered', registration(id, { displayName: 'Replayed' })),
    )
    expect(await profile(id)).toMatchObject({ displayName: 'Edited', version: 2 })
  })

  test('a registration that is already verified sets the flag', async () => {
    const id = newId()
    await projection.registered(
      buildEvent('parley/auth', 'user.registered', registration(id, { emailVerified: true })),
    )
    expect((await profile(id))?.emailVerified).toBe(true)
  })
})

describe('user.email_verified', () => {
  test('sets the flag once, however often it arrives', async () => {
    const id = newId()
    await projection.registered(buildEvent('parley/auth', 'user.registered', registration(id)))
    const event = buildEvent('parley/auth', 'user.email_verified', verification(id))
    await projection.emailVerified(event)
    await projection.emailVerified(event)
    await projection.emailVerified(buildEvent('parley/auth', 'user.email_verified', verification(id)))
    expect(await profile(id)).toMatchObject({ emailVerified: true, version: 2 })
  })

  test('before user.registered (through the broker) is kept and applied on registration', async () => {
    const id = newId()
    await user.publish('user.email_verified', verification(id))
    await waitFor(
      async () =>
        (
          await user.db
            .select()
            .from(pendingEmailVerifications)
            .where(eq(pendingEmailVerifications.userId, id))
        ).length === 1,
      { what: 'verification parked' },
    )
    await user.publish('user.registered', registration(id))
    const row = await waitFor(() => profile(id), { what: 'profile created' })
    expect(row.emailVerified).toBe(true)
    const parked = await user.db
      .select()
      .from(pendingEmailVerifications)
      .where(eq(pendingEmailVerifications.userId, id))
    expect(parked).toHaveLength(0)
    const me = await user.request('GET', '/users/me', { token: await user.token(id) })
    expect(me.body.emailVerified).toBe(true)
  })

  test('racing user.registered is never lost, in either order', async () => {
    const ids = Array.from({ length: 20 }, () => newId())
    await Promise.all(
      ids.map((id, index) => {
        const register = () =>
          projection.registered(buildEvent('parley/auth', 'user.registered', registration(id)))
        const verify = () =>
          projection.emailVerified(buildEvent('parley/auth', 'user.email_verified', verification(id)))
        return Promise.all(index % 2 === 0 ? [register(), verify()] : [verify(), register()])
      }),
    )
    const rows = await Promise.all(ids.map(profile))
    expect(rows.map((row) => row?.emailVerified)).toEqual(ids.map(() => true))
  }, 20_000)
})

describe('bad events', () => {
  test('an event that breaks its contract is dead-lettered and writes nothing', async () => {
    const id = newId()
    const invalid = {
      ...buildEvent('parley/auth', 'user.registered', registration(id)),
      data: { userId: id },
    }
    const response = await fetch(
      `${testInfra.rabbitManagementUrl}/api/exchanges/${user.vhost.name}/${user.config.AMQP_EXCHANGE}/publish`,
      {
        method: 'POST',
        headers: {
          authorization: `Basic ${btoa(`${testInfra.rabbitUser}:${testInfra.rabbitPassword}`)}`,
          'content-type': 'application/json',
        },
        body: JSON.stringify({
          routing_key: 'user.registered',
          payload: JSON.stringify(invalid),
          payload_encoding: 'string',
          properties: { delivery_mode: 2 },
        }),
      },
    )
    expect(((await response.json()) as { routed: boolean }).routed).toBe(true)
    await waitFor(async () => ((await user.vhost.getMessages('user.projection.dead', 10)) ?? []).length > 0, {
      what: 'dead-lettered',
    })
    expect(await profile(id)).toBeUndefined()
  })
})
