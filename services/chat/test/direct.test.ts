import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { CloudEvent, Problem } from '@parley/contracts'
import { waitFor } from '@parley/testkit'
import type { ConversationDoc } from '../src/db'
import type { Conversation } from '../src/modules/conversations/model'
import { createEventSink, createHarness, type Harness } from './harness'

let chat: Harness
let sink: Awaited<ReturnType<typeof createEventSink>>

beforeAll(async () => {
  chat = await createHarness()
  sink = await createEventSink(chat.vhost.url, ['conversation.created', 'conversation.participants_added'])
})

afterAll(async () => {
  await sink.close()
  await chat.close()
})

const conversations = () => chat.deps.db.collection<ConversationDoc>('conversations')

const direct = (caller: string, body: unknown) =>
  chat.call<Conversation & Problem>(caller, 'POST', '/conversations', body)

const createdFor = (conversationId: string) =>
  sink.events.filter(
    (event): event is CloudEvent<'conversation.created'> =>
      event.type === 'conversation.created' &&
      (event as CloudEvent<'conversation.created'>).data.conversationId === conversationId,
  )

describe('direct conversations', () => {
  test('the pair has one: created (201) once, then returned (200) to either of them', async () => {
    const [ann, ben] = await Promise.all([chat.newUser('Ann'), chat.newUser('Ben')])
    const created = await direct(ann, { participantIds: [ben], direct: true })
    expect(created.status).toBe(201)
    expect(created.body).toMatchObject({ direct: true, muted: false, createdBy: ann })
    expect(created.body.participants.map((p) => p.userId)).toEqual([ann, ben])
    const again = await direct(ann, { participantIds: [ben], direct: true })
    expect(again.status).toBe(200)
    expect(again.body.id).toBe(created.body.id)
    const fromBen = await direct(ben, { participantIds: [ann], direct: true })
    expect(fromBen.status).toBe(200)
    expect(fromBen.body.id).toBe(created.body.id)
    const [event] = await waitFor(
      () => (createdFor(created.body.id).length > 0 ? createdFor(created.body.id) : undefined),
      {
        what: 'conversation.created',
      },
    )
    expect(event?.data).toMatchObject({ direct: true, participantIds: [ann, ben], createdBy: ann })
    await Bun.sleep(200)
    expect(createdFor(created.body.id)).toHaveLength(1)
    // A group of the same two is another conversation.
    const group = await direct(ann, { participantIds: [ben] })
    expect(group.status).toBe(201)
    expect(group.body.direct).toBe(false)
    expect(group.body.id).not.toBe(created.body.id)
  })

  test('under concurrency exactly one is created; every request gets it', async () => {
    const [cid, dee] = await Promise.all([chat.newUser('Cid'), chat.newUser('Dee')])
    const replies = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        i % 2 === 0
          ? direct(cid, { participantIds: [dee], direct: true })
          : direct(dee, { participantIds: [cid], direct: true }),
      ),
    )
    expect(replies.map((reply) => reply.status).sort()).toEqual([200, 200, 200, 200, 200, 200, 200, 201])
    const ids = new Set(replies.map((reply) => reply.body.id))
    expect(ids.size).toBe(1)
    const stored = await conversations().find({ participantIds: cid, direct: true }).toArray()
    expect(stored).toHaveLength(1)
    await Bun.sleep(300)
    expect(createdFor([...ids][0] as string)).toHaveLength(1)
  })

  test('bad input: 422 naming body.participantIds, nothing written', async () => {
    const [eve, fay, gus] = await Promise.all([chat.newUser('Eve'), chat.newUser('Fay'), chat.newUser('Gus')])
    const before = await conversations().countDocuments({ participantIds: eve })
    for (const body of [
      { participantIds: [fay, gus], direct: true },
      { participantIds: [eve], direct: true },
      { participantIds: [Bun.randomUUIDv7()], direct: true },
      { participantIds: [fay], direct: 'yes' },
    ]) {
      const reply = await direct(eve, body)
      expect(reply.status).toBe(422)
      expect(reply.body.errors?.[0]?.field).toStartWith(
        body.direct === 'yes' ? 'body.direct' : 'body.participantIds',
      )
    }
    expect(await conversations().countDocuments({ participantIds: eve })).toBe(before)
  })

  test('a direct conversation cannot gain participants (409, nothing written, no event)', async () => {
    const [hal, ivy, jon] = await Promise.all([chat.newUser('Hal'), chat.newUser('Ivy'), chat.newUser('Jon')])
    const { body } = await direct(hal, { participantIds: [ivy], direct: true })
    const added = await chat.call<Problem>(hal, 'POST', `/conversations/${body.id}/participants`, {
      userIds: [jon],
    })
    expect(added.status).toBe(409)
    expect((await conversations().findOne({ _id: body.id }))?.participantIds).toEqual([hal, ivy])
    // A non-participant still gets 404.
    expect(
      (await chat.call(jon, 'POST', `/conversations/${body.id}/participants`, { userIds: [jon] })).status,
    ).toBe(404)
    await Bun.sleep(200)
    expect(
      sink.events.filter(
        (event) =>
          event.type === 'conversation.participants_added' &&
          (event as CloudEvent<'conversation.participants_added'>).data.conversationId === body.id,
      ),
    ).toEqual([])
  })

  test('once one of the pair left, asking again starts a new one', async () => {
    const [kim, lou] = await Promise.all([chat.newUser('Kim'), chat.newUser('Lou')])
    const first = await direct(kim, { participantIds: [lou], direct: true })
    expect((await chat.call(lou, 'DELETE', `/conversations/${first.body.id}/participants/me`)).status).toBe(
      204,
    )
    const second = await direct(kim, { participantIds: [lou], direct: true })
    expect(second.status).toBe(201)
    expect(second.body.id).not.toBe(first.body.id)
    expect((await direct(lou, { participantIds: [kim], direct: true })).body.id).toBe(second.body.id)
  })
})
