import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createRuntime, newId } from '@parley/common'
import { buildEvent, EventBus } from '@parley/common/events'
import { MongoOutbox } from '@parley/common/mongo'
import type { CloudEvent } from '@parley/contracts'
import { testLogger, waitFor } from '@parley/testkit'
import type { UserDoc } from '../src/db'
import type { Conversation } from '../src/modules/conversations/model'
import type { Message } from '../src/modules/messages/model'
import { createEventSink, createHarness, type Harness } from './harness'

let chat: Harness
let sink: Awaited<ReturnType<typeof createEventSink>>
let publisher: EventBus

beforeAll(async () => {
  chat = await createHarness()
  sink = await createEventSink(chat.vhost.url, [
    'conversation.created',
    'conversation.updated',
    'conversation.participants_added',
    'conversation.participant_left',
    'conversation.read',
    'message.sent',
  ])
  const runtime = createRuntime('auth', 'silent', testLogger('auth'))
  publisher = new EventBus({
    url: chat.vhost.url,
    exchange: 'parley.events',
    source: 'parley/auth',
    prefetch: 10,
    logger: runtime.logger,
    metrics: runtime.metrics,
  })
  await publisher.start()
  await publisher.connected()
})

afterAll(async () => {
  await publisher.close()
  await sink.close()
  await chat.close()
})

const users = () => chat.deps.db.collection<UserDoc>('users')

function registered(userId: string, displayName: string, createdAt = new Date()) {
  return buildEvent('parley/auth', 'user.registered', {
    userId,
    email: `${userId}@example.test`,
    displayName,
    emailVerified: false,
    roles: ['user'],
    createdAt: createdAt.toISOString(),
  })
}

function profileUpdated(userId: string, displayName: string, updatedAt: Date) {
  return buildEvent('parley/user', 'user.profile_updated', {
    userId,
    displayName,
    bio: null,
    avatarUrl: null,
    updatedAt: updatedAt.toISOString(),
  })
}

const displayNameOf = async (userId: string) => (await users().findOne({ _id: userId }))?.displayName

function eventsOf<T extends CloudEvent['type']>(type: T, match: (event: CloudEvent<T>) => boolean) {
  return sink.events.filter(
    (event): event is CloudEvent<T> => event.type === type && match(event as CloudEvent<T>),
  )
}

describe('users projection (real consumer)', () => {
  test('user.registered makes a user known to chat; user.profile_updated renames it', async () => {
    const owner = await chat.newUser('Owner')
    const userId = Bun.randomUUIDv7()
    const before = await chat.call(owner, 'POST', '/conversations', { participantIds: [userId] })
    expect(before.status).toBe(422)

    await publisher.publishEvent(registered(userId, 'Newcomer'))
    await waitFor(() => displayNameOf(userId), { what: 'the projected user' })
    const created = await chat.call<Conversation>(owner, 'POST', '/conversations', {
      participantIds: [userId],
    })
    expect(created.status).toBe(201)
    expect(created.body.participants.find((p) => p.userId === userId)?.displayName).toBe('Newcomer')

    await publisher.publishEvent(profileUpdated(userId, 'Renamed', new Date(Date.now() + 1000)))
    await waitFor(async () => (await displayNameOf(userId)) === 'Renamed', { what: 'the rename' })
    const read = await chat.call<Conversation>(owner, 'GET', `/conversations/${created.body.id}`)
    expect(read.body.participants.find((p) => p.userId === userId)?.displayName).toBe('Renamed')
  })

  test('redelivered and out-of-order events leave the newest profile', async () => {
    const userId = Bun.randomUUIDv7()
    const newest = profileUpdated(userId, 'Newest', new Date(Date.now() + 2000))
    await publisher.publishEvent(newest)
    await waitFor(async () => (await displayNameOf(userId)) === 'Newest', { what: 'the newest profile' })

    const stale = registered(userId, 'Stale', new Date(Date.now() - 60_000))
    await publisher.publishEvent(stale)
    await publisher.publishEvent(newest)
    const markers = chat.deps.db.collection('processed_events')
    await waitFor(() => markers.findOne({ _id: `chat.users:${stale.id}` as never }), {
      what: 'the stale event',
    })
    expect(await displayNameOf(userId)).toBe('Newest')
    expect(await markers.countDocuments({ _id: `chat.users:${newest.id}` as never })).toBe(1)
  })
})

describe('outbox', () => {
  test('conversation.created and message.sent carry the contract fields and the request id', async () => {
    const [alice, bob, carol] = await Promise.all([chat.newUser('A'), chat.newUser('B'), chat.newUser('C')])
    const created = await chat.call<Conversation>(alice, 'POST', '/conversations', {
      title: 'Events',
      participantIds: [bob, carol],
    })
    const conversationId = created.body.id
    const [conversationEvent] = await waitFor(() => {
      const found = eventsOf('conversation.created', (e) => e.data.conversationId === conversationId)
      return found.length > 0 && found
    })
    expect(conversationEvent?.source).toBe('parley/chat')
    expect(conversationEvent?.correlationid).toBe(created.headers.get('x-request-id') ?? '')
    expect(conversationEvent?.data).toEqual({
      conversationId,
      title: 'Events',
      createdBy: alice,
      participantIds: [alice, bob, carol],
      createdAt: created.body.createdAt,
    })

    const sent = await chat.call<Message>(bob, 'POST', `/conversations/${conversationId}/messages`, {
      body: `  ${'long '.repeat(100)}`,
      clientMessageId: 'evt-1',
    })
    expect(sent.status).toBe(201)
    const retried = await chat.call<Message>(bob, 'POST', `/conversations/${conversationId}/messages`, {
      body: 'long',
      clientMessageId: 'evt-1',
    })
    expect(retried.status).toBe(200)
    const [messageEvent] = await waitFor(() => {
      const found = eventsOf('message.sent', (e) => e.data.conversationId === conversationId)
      return found.length > 0 && found
    })
    expect(messageEvent?.correlationid).toBe(sent.headers.get('x-request-id') ?? '')
    expect(messageEvent?.data).toEqual({
      messageId: sent.body.id,
      conversationId,
      seq: 1,
      senderId: bob,
      recipientIds: [alice, carol],
      mutedUserIds: [],
      mentionedUserIds: [],
      preview: `${sent.body.body.slice(0, 199)}…`,
      createdAt: sent.body.createdAt,
    })
    // The outbox is drained and the retry published nothing.
    await waitFor(
      async () =>
        (await chat.deps.db
          .collection('outbox')
          .countDocuments({ 'event.data.conversationId': conversationId })) === 0,
      { what: 'the drained outbox' },
    )
    await Bun.sleep(200)
    expect(eventsOf('message.sent', (e) => e.data.conversationId === conversationId)).toHaveLength(1)
  })

  test('rename, add, read and leave each publish their event once, with the state after the change', async () => {
    const [alice, bob, carol] = await Promise.all([chat.newUser('A'), chat.newUser('B'), chat.newUser('C')])
    const created = await chat.call<Conversation>(alice, 'POST', '/conversations', { participantIds: [bob] })
    const conversationId = created.body.id
    const ofThis = <T extends CloudEvent['type']>(type: T) =>
      eventsOf(type, (e) => (e.data as { conversationId: string }).conversationId === conversationId)
    const once = async <T extends CloudEvent['type']>(type: T) => {
      const [event] = await waitFor(() => ofThis(type).length > 0 && ofThis(type), { what: type })
      return event as CloudEvent<T>
    }

    const renamed = await chat.call<Conversation>(alice, 'PATCH', `/conversations/${conversationId}`, {
      title: ' Renamed ',
    })
    expect(renamed.status).toBe(200)
    const updated = await once('conversation.updated')
    expect(updated.correlationid).toBe(renamed.headers.get('x-request-id') ?? '')
    expect(updated.data).toEqual({
      conversationId,
      title: 'Renamed',
      updatedBy: alice,
      participantIds: [alice, bob],
      updatedAt: renamed.body.updatedAt,
    })

    // Adding participants is for owners and admins.
    const promoted = await chat.call(
      alice,
      'PUT',
      `/conversations/${conversationId}/participants/${bob}/role`,
      {
        role: 'admin',
      },
    )
    expect(promoted.status).toBe(200)
    const added = await chat.call<Conversation>(
      bob,
      'POST',
      `/conversations/${conversationId}/participants`,
      {
        userIds: [carol, alice],
      },
    )
    expect(added.status).toBe(200)
    const participantsAdded = await once('conversation.participants_added')
    expect(participantsAdded.data).toEqual({
      conversationId,
      addedBy: bob,
      userIds: [carol],
      participantIds: [alice, bob, carol],
      addedAt: added.body.updatedAt,
    })
    // Adding someone already there changes nothing and publishes nothing.
    await chat.call(bob, 'POST', `/conversations/${conversationId}/participants`, { userIds: [carol] })

    const sent = await chat.call<Message>(alice, 'POST', `/conversations/${conversationId}/messages`, {
      body: 'read me',
    })
    const read = await chat.call(carol, 'POST', `/conversations/${conversationId}/read`, {
      messageId: sent.body.id,
    })
    expect(read.status).toBe(200)
    const readEvent = await once('conversation.read')
    expect(readEvent.data).toMatchObject({
      conversationId,
      userId: carol,
      seq: sent.body.seq,
      messageId: sent.body.id,
      participantIds: [alice, bob, carol],
    })
    // The marker did not move (again, and the sender's own message): no event.
    await chat.call(carol, 'POST', `/conversations/${conversationId}/read`, { messageId: sent.body.id })
    await chat.call(alice, 'POST', `/conversations/${conversationId}/read`, { messageId: sent.body.id })

    expect((await chat.call(bob, 'DELETE', `/conversations/${conversationId}/participants/me`)).status).toBe(
      204,
    )
    const left = await once('conversation.participant_left')
    expect(left.data).toMatchObject({ conversationId, userId: bob, participantIds: [alice, carol] })

    // A rename by someone who is no longer in it fails and publishes nothing.
    expect((await chat.call(bob, 'PATCH', `/conversations/${conversationId}`, { title: 'x' })).status).toBe(
      404,
    )
    await waitFor(
      async () =>
        (await chat.deps.db
          .collection('outbox')
          .countDocuments({ 'event.data.conversationId': conversationId })) === 0,
      { what: 'the drained outbox' },
    )
    await Bun.sleep(300)
    expect(ofThis('conversation.updated')).toHaveLength(1)
    expect(ofThis('conversation.participants_added')).toHaveLength(1)
    expect(ofThis('conversation.read')).toHaveLength(1)
    expect(ofThis('conversation.participant_left')).toHaveLength(1)
  })

  test('a change staged for an update that never happened is not published', async () => {
    const [alice, bob] = await Promise.all([chat.newUser('A'), chat.newUser('B')])
    const { body } = await chat.call<Conversation>(alice, 'POST', '/conversations', { participantIds: [bob] })
    // Staged for version 2, but the update never ran; a later rename creates version 2 itself.
    const orphan = buildEvent('parley/chat', 'conversation.updated', {
      conversationId: body.id,
      title: 'never applied',
      updatedBy: alice,
      participantIds: [alice, bob],
      updatedAt: new Date().toISOString(),
    })
    await new MongoOutbox(chat.deps.db).stage(
      { collection: 'conversations', id: body.id, change: { version: 2, id: orphan.id } },
      [orphan],
    )
    await chat.call(alice, 'PATCH', `/conversations/${body.id}`, { title: 'applied' })
    await waitFor(() => eventsOf('conversation.updated', (e) => e.data.conversationId === body.id).length > 0)
    await Bun.sleep(300)
    const published = eventsOf('conversation.updated', (e) => e.data.conversationId === body.id)
    expect(published.map((event) => event.data.title)).toEqual(['applied'])
  })

  test('the relay never writes conversations: writes right after a create all persist', async () => {
    // FerretDB updates a document by reading and writing it back whole; a relay clearing an event
    // inside the conversation while a participant left it used to put the participant back.
    const [alice, bob] = await Promise.all([chat.newUser('A'), chat.newUser('B')])
    const ids = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const created = await chat.call<Conversation>(alice, 'POST', '/conversations', {
          title: `race ${i}`,
          participantIds: [bob],
        })
        expect(created.status).toBe(201)
        const left = await chat.call(bob, 'DELETE', `/conversations/${created.body.id}/participants/me`)
        expect(left.status).toBe(204)
        return created.body.id
      }),
    )
    await waitFor(
      () => eventsOf('conversation.created', (e) => ids.includes(e.data.conversationId)).length === 20,
      {
        what: 'the 20 conversation.created events',
      },
    )
    const stored = await chat.deps.db
      .collection('conversations')
      .find({ _id: { $in: ids } } as never)
      .toArray()
    expect(stored).toHaveLength(20)
    for (const doc of stored) {
      expect(doc.participantIds).toEqual([alice])
      // create (1) and leave (2): no other writer touched it
      expect(doc.version).toBe(2)
      expect(Object.keys(doc).filter((key) => key.startsWith('_') && key !== '_id')).toEqual([])
    }
    await waitFor(
      async () =>
        (await chat.deps.db.collection('outbox').countDocuments({ 'subject.id': { $in: ids } })) === 0,
      { what: 'the drained outbox' },
    )
  })

  test('an event staged for a write that never happened is not published', async () => {
    const outbox = new MongoOutbox(chat.deps.db)
    const orphanCreator = newId()
    const orphan = buildEvent('parley/chat', 'conversation.created', {
      conversationId: newId(),
      title: null,
      createdBy: orphanCreator,
      participantIds: [orphanCreator],
      createdAt: new Date().toISOString(),
    })
    await outbox.stage({ collection: 'conversations', id: orphan.data.conversationId }, [orphan])
    const [alice, bob] = await Promise.all([chat.newUser('A'), chat.newUser('B')])
    const later = await chat.call<Conversation>(alice, 'POST', '/conversations', { participantIds: [bob] })
    // The orphan is older, yet the later event goes out and the orphan does not.
    await waitFor(
      () => eventsOf('conversation.created', (e) => e.data.conversationId === later.body.id).length > 0,
    )
    expect(
      eventsOf('conversation.created', (e) => e.data.conversationId === orphan.data.conversationId),
    ).toEqual([])
    expect(await chat.deps.db.collection('outbox').countDocuments({ _id: orphan.id } as never)).toBe(1)
    await outbox.discard([orphan])
  })

  test('nothing is lost when the broker is down and the process dies before publishing', async () => {
    // A process whose broker is unreachable and whose relay never runs: it dies after writing.
    const doomed = await createHarness({
      amqpUrl: 'amqp://guest:guest@127.0.0.1:9/unreachable',
      relay: false,
    })
    const doomedSink = await createEventSink(doomed.vhost.url, ['conversation.created', 'message.sent'])
    try {
      const [alice, bob] = await Promise.all([doomed.newUser('A'), doomed.newUser('B')])
      const created = await doomed.call<Conversation>(alice, 'POST', '/conversations', {
        participantIds: [bob],
      })
      expect(created.status).toBe(201)
      const sent = await doomed.call<Message>(alice, 'POST', `/conversations/${created.body.id}/messages`, {
        body: 'survives',
      })
      expect(sent.status).toBe(201)
      await doomed.shutdown()
      expect(doomedSink.events).toHaveLength(0)

      // A fresh process on the same database and broker: its relay finds the pending events.
      const revived = await createHarness({ share: doomed })
      try {
        await waitFor(() => doomedSink.events.length === 2, { what: 'the recovered events' })
        expect(doomedSink.events.map((event) => event.type).sort()).toEqual([
          'conversation.created',
          'message.sent',
        ])
        expect(doomedSink.events.find((event) => event.type === 'message.sent')?.data).toMatchObject({
          messageId: sent.body.id,
          recipientIds: [bob],
        })
      } finally {
        await revived.close()
      }
    } finally {
      await doomedSink.close()
      await doomed.close()
    }
  })
})
