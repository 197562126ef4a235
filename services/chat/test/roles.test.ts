import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { CloudEvent, Problem } from '@parley/contracts'
import { waitFor } from '@parley/testkit'
import type { ConversationDoc } from '../src/db'
import type { Conversation } from '../src/modules/conversations/model'
import { createEventSink, createHarness, type Harness } from './harness'

let chat: Harness
let sink: Awaited<ReturnType<typeof createEventSink>>
let alice: string
let bob: string
let carol: string
let dave: string
let mallory: string

beforeAll(async () => {
  chat = await createHarness()
  sink = await createEventSink(chat.vhost.url, ['conversation.role_changed', 'conversation.participant_left'])
  ;[alice, bob, carol, dave, mallory] = await Promise.all([
    chat.newUser('Alice'),
    chat.newUser('Bob'),
    chat.newUser('Carol'),
    chat.newUser('Dave'),
    chat.newUser('Mallory'),
  ])
})

afterAll(async () => {
  await sink.close()
  await chat.close()
})

const conversations = () => chat.deps.db.collection<ConversationDoc>('conversations')

async function conversationOf(caller: string, others: string[]): Promise<string> {
  const reply = await chat.call<Conversation>(caller, 'POST', '/conversations', { participantIds: others })
  expect(reply.status).toBe(201)
  return reply.body.id
}

const setRole = (caller: string, conversationId: string, userId: string, body: unknown) =>
  chat.call<Conversation & Problem>(
    caller,
    'PUT',
    `/conversations/${conversationId}/participants/${userId}/role`,
    body,
  )

const removeParticipant = (caller: string, conversationId: string, userId: string) =>
  chat.call<Problem>(caller, 'DELETE', `/conversations/${conversationId}/participants/${userId}`)

async function rolesIn(caller: string, conversationId: string): Promise<Record<string, string>> {
  const reply = await chat.call<Conversation>(caller, 'GET', `/conversations/${conversationId}`)
  expect(reply.status).toBe(200)
  return Object.fromEntries(reply.body.participants.map((p) => [p.userId, p.role]))
}

function eventsOf<T extends 'conversation.role_changed' | 'conversation.participant_left'>(
  type: T,
  conversationId: string,
) {
  return sink.events.filter(
    (event): event is CloudEvent<T> =>
      event.type === type && (event as CloudEvent<T>).data.conversationId === conversationId,
  )
}

const eventually = <T extends 'conversation.role_changed' | 'conversation.participant_left'>(
  type: T,
  conversationId: string,
  count: number,
) =>
  waitFor(
    () => (eventsOf(type, conversationId).length >= count ? eventsOf(type, conversationId) : undefined),
    {
      what: `${count} ${type}`,
    },
  )

describe('roles', () => {
  test('the creator is owner, the others members; owners promote admins (conversation.role_changed)', async () => {
    const conversationId = await conversationOf(alice, [bob, carol])
    expect(await rolesIn(bob, conversationId)).toEqual({
      [alice]: 'owner',
      [bob]: 'member',
      [carol]: 'member',
    })

    const promoted = await setRole(alice, conversationId, bob, { role: 'admin' })
    expect(promoted.status).toBe(200)
    expect(promoted.body.participants.find((p) => p.userId === bob)?.role).toBe('admin')
    // The same role again changes nothing.
    expect((await setRole(alice, conversationId, bob, { role: 'admin' })).status).toBe(200)
    const [event, ...more] = await eventually('conversation.role_changed', conversationId, 1)
    await Bun.sleep(200)
    expect(more).toEqual([])
    expect(eventsOf('conversation.role_changed', conversationId)).toHaveLength(1)
    expect(event?.data).toMatchObject({
      conversationId,
      userId: bob,
      role: 'admin',
      changedBy: alice,
      participantIds: [alice, bob, carol],
    })

    // Admins and members may not change roles; non-participants get 404.
    expect((await setRole(bob, conversationId, carol, { role: 'admin' })).status).toBe(403)
    expect((await setRole(carol, conversationId, carol, { role: 'owner' })).status).toBe(403)
    expect((await setRole(mallory, conversationId, carol, { role: 'admin' })).status).toBe(404)
    expect((await setRole(alice, conversationId, mallory, { role: 'admin' })).status).toBe(404)
    expect(await rolesIn(alice, conversationId)).toEqual({
      [alice]: 'owner',
      [bob]: 'admin',
      [carol]: 'member',
    })
  })

  test('bad input: 422 naming the field; the last owner cannot step down (409); nothing written', async () => {
    const conversationId = await conversationOf(alice, [bob])
    for (const body of [{}, { role: 'king' }, { role: { $set: 'owner' } }, { role: 1 }]) {
      const reply = await setRole(alice, conversationId, bob, body)
      expect(reply.status).toBe(422)
      expect(reply.body.errors?.[0]?.field).toStartWith('body.role')
    }
    const badUser = await setRole(alice, conversationId, 'nope', { role: 'admin' })
    expect(badUser.status).toBe(422)
    expect(badUser.body.errors?.[0]?.field).toBe('params.userId')
    const alone = await setRole(alice, conversationId, alice, { role: 'member' })
    expect(alone.status).toBe(409)
    // With a second owner, stepping down is fine.
    expect((await setRole(alice, conversationId, bob, { role: 'owner' })).status).toBe(200)
    expect((await setRole(alice, conversationId, alice, { role: 'member' })).status).toBe(200)
    expect(await rolesIn(alice, conversationId)).toEqual({ [alice]: 'member', [bob]: 'owner' })
    const changes = await eventually('conversation.role_changed', conversationId, 2)
    expect(changes.map((change) => [change.data.userId, change.data.role])).toEqual([
      [bob, 'owner'],
      [alice, 'member'],
    ])
  })

  test('members cannot rename, add or remove (403); admins can, but not remove owners or admins', async () => {
    const conversationId = await conversationOf(alice, [bob, carol])
    const path = `/conversations/${conversationId}`
    expect((await chat.call(carol, 'PATCH', path, { title: 'mine' })).status).toBe(403)
    expect((await chat.call(carol, 'POST', `${path}/participants`, { userIds: [dave] })).status).toBe(403)
    expect((await removeParticipant(carol, conversationId, bob)).status).toBe(403)
    const stored = await conversations().findOne({ _id: conversationId })
    expect(stored?.title).toBeNull()
    expect(stored?.participantIds).toEqual([alice, bob, carol])

    await setRole(alice, conversationId, bob, { role: 'admin' })
    expect((await chat.call(bob, 'PATCH', path, { title: 'by the admin' })).status).toBe(200)
    expect((await chat.call(bob, 'POST', `${path}/participants`, { userIds: [dave] })).status).toBe(200)
    expect((await removeParticipant(bob, conversationId, alice)).status).toBe(403)
    await setRole(alice, conversationId, carol, { role: 'admin' })
    expect((await removeParticipant(bob, conversationId, carol)).status).toBe(403)

    // An admin removes a member: participant_left with removedBy; the removed one loses access.
    expect((await removeParticipant(bob, conversationId, dave)).status).toBe(204)
    const [left] = await eventually('conversation.participant_left', conversationId, 1)
    expect(left?.data).toMatchObject({ userId: dave, removedBy: bob, participantIds: [alice, bob, carol] })
    expect((await chat.call(dave, 'GET', path)).status).toBe(404)
    // Not (or no longer) a participant: 404.
    expect((await removeParticipant(bob, conversationId, dave)).status).toBe(404)
    // The owner removes an admin.
    expect((await removeParticipant(alice, conversationId, carol)).status).toBe(204)
    expect(await rolesIn(alice, conversationId)).toEqual({ [alice]: 'owner', [bob]: 'admin' })
    // One's own id is leaving.
    expect((await removeParticipant(bob, conversationId, bob)).status).toBe(204)
    expect(await rolesIn(alice, conversationId)).toEqual({ [alice]: 'owner' })
  })

  test('the last owner leaving promotes the oldest admin, else the oldest member', async () => {
    const withAdmins = await conversationOf(alice, [bob, carol, dave])
    await setRole(alice, withAdmins, dave, { role: 'admin' })
    await setRole(alice, withAdmins, carol, { role: 'admin' })
    expect((await chat.call(alice, 'DELETE', `/conversations/${withAdmins}/participants/me`)).status).toBe(
      204,
    )
    // carol joined before dave: the oldest admin.
    expect(await rolesIn(bob, withAdmins)).toEqual({ [bob]: 'member', [carol]: 'owner', [dave]: 'admin' })
    const promotions = await eventually('conversation.role_changed', withAdmins, 3)
    expect(promotions[2]?.data).toMatchObject({
      userId: carol,
      role: 'owner',
      participantIds: [bob, carol, dave],
    })
    expect(promotions[2]?.data.changedBy).toBeUndefined()

    const membersOnly = await conversationOf(alice, [carol, bob])
    expect((await chat.call(alice, 'DELETE', `/conversations/${membersOnly}/participants/me`)).status).toBe(
      204,
    )
    expect(await rolesIn(bob, membersOnly)).toEqual({ [carol]: 'owner', [bob]: 'member' })
    // The new owner can manage.
    expect((await setRole(carol, membersOnly, bob, { role: 'admin' })).status).toBe(200)
  })

  test('a conversation from before roles: its creator is the owner', async () => {
    const conversationId = await conversationOf(alice, [bob])
    await conversations().updateOne({ _id: conversationId }, { $unset: { roles: '' }, $inc: { version: 1 } })
    await chat.deps.redis.del(`chat:conversation:${conversationId}`)
    expect(await rolesIn(bob, conversationId)).toEqual({ [alice]: 'owner', [bob]: 'member' })
    expect((await chat.call(bob, 'PATCH', `/conversations/${conversationId}`, { title: 'x' })).status).toBe(
      403,
    )
    expect((await setRole(alice, conversationId, bob, { role: 'admin' })).status).toBe(200)
    expect((await conversations().findOne({ _id: conversationId }))?.roles).toEqual({
      [alice]: 'owner',
      [bob]: 'admin',
    })

    // Its creator has left since: the oldest participant owns it.
    const abandoned = await conversationOf(alice, [carol, bob])
    await conversations().updateOne(
      { _id: abandoned },
      { $unset: { roles: '' }, $pullAll: { participantIds: [alice] }, $inc: { version: 1 } },
    )
    await chat.deps.redis.del(`chat:conversation:${abandoned}`)
    expect(await rolesIn(bob, abandoned)).toEqual({ [carol]: 'owner', [bob]: 'member' })
  })
})
