import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { type Client, createClient } from '@parley/client'
import type { Problem } from '@parley/contracts'
import { mailsTo, waitFor } from '@parley/testkit'
import { base64url, generateKeyPair, SignJWT } from 'jose'
import { openSocket } from '../../services/gateway/test/harness'
import { type Stack, startStack } from './stack'

// The journeys call the API through the typed client (@parley/client), so a route, body or answer
// that changes shape breaks them at compile time; `the edge` sends raw HTTP on purpose.

type Json = Record<string, unknown>

let stack: Stack

beforeAll(async () => {
  stack = await startStack({
    gatewayEnv: {
      RATE_LIMIT_POLICIES: JSON.stringify({
        login: { limit: 3, windowSeconds: 60 },
        register: { limit: 100, windowSeconds: 60 },
        reactions: { limit: 3, windowSeconds: 60 },
      }),
    },
  })
}, 120_000)

let exitCodes: Record<string, number> = {}
afterAll(async () => {
  exitCodes = await stack.stop()
  // Every service drains and exits 0 on SIGTERM (the notification service was stopped earlier).
  for (const [name, code] of Object.entries(exitCodes)) expect(`${name}:${code}`).toBe(`${name}:0`)
}, 60_000)

/** Raw HTTP through the gateway, for what the edge does to any request. */
async function api(
  method: string,
  path: string,
  options: { body?: unknown; token?: string; gateway?: string } = {},
) {
  const response = await fetch(`${options.gateway ?? stack.gateway.url}/api/v1${path}`, {
    method,
    headers: {
      ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
    },
    ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
  })
  const text = await response.text()
  return {
    status: response.status,
    headers: response.headers,
    body: (text ? JSON.parse(text) : undefined) as Json,
  }
}

/** The typed client with `token` (none: anonymous), through the first gateway unless told. */
const clientWith = (token?: string, gateway = stack.gateway.url): Client =>
  createClient({ baseUrl: gateway, token: () => token })

/** The problem document of a refused call. */
const problemOf = (answer: { error: { value: unknown } | null }) => answer.error?.value as Problem | undefined

const uniqueEmail = (name: string) => `${name}.${crypto.randomUUID().slice(0, 8)}@e2e.parley.test`

type Member = {
  user: { id: string; email: string }
  accessToken: string
  refreshToken: string
  password: string
  /** The typed client with this member's first access token. */
  api: Client
}

async function register(name: string): Promise<Member> {
  const password = `pw-${crypto.randomUUID()}`
  const answer = await clientWith().auth.register.post({
    email: uniqueEmail(name),
    displayName: name,
    password,
  })
  expect(answer.status).toBe(201)
  if (!answer.data) throw new Error(`register ${name}: ${JSON.stringify(answer.error)}`)
  const { user, accessToken, refreshToken } = answer.data
  return { user, accessToken, refreshToken, password, api: clientWith(accessToken) }
}

/** A conversation `creator` starts with `others`, asked again until chat knows them (the broker carries user.registered). */
async function conversationOf(
  creator: Member,
  others: Member[],
  extra: { title?: string; direct?: boolean } = {},
) {
  return waitFor(
    async () => {
      const created = await creator.api.conversations.post({
        participantIds: others.map((other) => other.user.id),
        ...extra,
      })
      return (created.status === 201 && created.data) || undefined
    },
    { timeoutMs: 20_000, what: 'conversation creation' },
  )
}

/** `member`'s in-app notifications about message `messageId` (any type), once there is one. */
async function notificationsAbout(member: Member, messageId: string | undefined, what: string) {
  return waitFor(
    async () => {
      const items = (await member.api.notifications.get({ query: {} })).data?.items ?? []
      return items.some((item) => 'messageId' in item.payload && item.payload.messageId === messageId)
        ? items
        : undefined
    },
    { timeoutMs: 20_000, what },
  )
}

const aboutMessage = (messageId: string | undefined) => (item: { payload: object }) =>
  'messageId' in item.payload && item.payload.messageId === messageId

/** The event types in `member`'s resume stream since `cursor`, once `until` is among them. */
async function streamSince(member: Member, cursor: string, until: string, what: string) {
  return waitFor(
    async () => {
      const read = await member.api.sync.get({ query: { since: cursor } })
      const types: string[] = (read.data?.events ?? []).map((frame) => frame.type)
      return types.includes(until) ? types : undefined
    },
    { timeoutMs: 20_000, what },
  )
}

const wsUrl = (gateway: string) => `${gateway.replace('http', 'ws')}/api/v1/ws`
type Frame = { type: string; data: Json }

describe('the journey through the gateway', () => {
  test('register → verify by mailed code → converse in real time → notification → rotate → revoke', async () => {
    const alice = await register('Alice')
    const bob = await register('Bob')

    // Email verification: the code travels auth → outbox → RabbitMQ → notification → SMTP.
    expect((await alice.api.auth['verify-email'].request.post()).status).toBe(202)
    const mail = await waitFor(
      async () => (await mailsTo(alice.user.email)).find((m) => /\b\d{6}\b/.test(m.text)),
      { timeoutMs: 20_000, what: 'the verification email' },
    )
    const code = /\b(\d{6})\b/.exec(mail.text)?.[1] ?? ''
    const confirmed = await alice.api.auth['verify-email'].confirm.post({ code })
    expect(confirmed.status).toBe(200)
    expect(confirmed.data).toMatchObject({ emailVerified: true })

    // Bob listens on the SECOND gateway replica.
    const bobSocket = await openSocket(wsUrl(stack.gateway2.url), bob.accessToken)

    const conversation = await conversationOf(alice, [bob], { title: 'Plans' })
    const sent = await alice.api
      .conversations({ id: conversation.id })
      .messages.post({ body: 'Lunch at noon?', clientMessageId: 'e2e-1' })
    expect(sent.status).toBe(201)

    const pushed = await bobSocket.next<{ type: string; data: { messageId: string } }>(
      (message) => message.type === 'message.sent' && message.data.messageId === sent.data?.id,
      20_000,
    )
    expect(pushed.data.messageId).toBe(sent.data?.id as string)
    bobSocket.close()

    const bobsMessages = await bob.api.conversations({ id: conversation.id }).messages.get({ query: {} })
    expect(bobsMessages.status).toBe(200)
    expect(bobsMessages.data?.items.map((message) => message.body)).toEqual(['Lunch at noon?'])

    const notification = await waitFor(
      async () =>
        (await bob.api.notifications.get({ query: {} })).data?.items.find(
          (item) => item.type === 'message.received',
        ),
      { timeoutMs: 20_000, what: "Bob's notification" },
    )
    expect(notification).toBeDefined()

    const profile = await alice.api.users.me.get()
    expect(profile.status).toBe(200)
    expect(profile.data).toMatchObject({ id: alice.user.id, displayName: 'Alice' })

    // Refresh rotation: the new pair works, the old refresh token is now a reuse → 401.
    const anonymous = clientWith()
    const rotated = await anonymous.auth.refresh.post({ refreshToken: alice.refreshToken })
    expect(rotated.status).toBe(200)
    const reused = await anonymous.auth.refresh.post({ refreshToken: alice.refreshToken })
    expect(reused.status).toBe(401)
    // Reuse revoked the session: its access tokens stop working at the gateway, on both replicas.
    const rotatedToken = rotated.data?.accessToken
    await waitFor(async () => (await clientWith(rotatedToken).users.me.get()).status === 401, {
      timeoutMs: 20_000,
      what: 'the reused session to be rejected at the gateway',
    })
    expect((await clientWith(rotatedToken, stack.gateway2.url).users.me.get()).status).toBe(401)

    // Logout ends that session at the edge too (long before its access token expires), not the others.
    const credentials = { email: alice.user.email, password: alice.password }
    const phone = await anonymous.auth.login.post(credentials)
    const laptop = await anonymous.auth.login.post(credentials)
    const phoneToken = phone.data?.accessToken
    const loggedOut = await clientWith(phoneToken).auth.logout.post({
      refreshToken: phone.data?.refreshToken ?? '',
    })
    expect(loggedOut.status).toBe(204)
    await waitFor(async () => (await clientWith(phoneToken).users.me.get()).status === 401, {
      timeoutMs: 20_000,
      what: 'the logged-out session to be rejected at the gateway',
    })
    expect((await clientWith(phoneToken, stack.gateway2.url).users.me.get()).status).toBe(401)
    expect((await clientWith(laptop.data?.accessToken).users.me.get()).status).toBe(200)

    // Revoke: access tokens issued before now stop working at the gateway.
    const fresh = await anonymous.auth.login.post(credentials)
    expect(fresh.status).toBe(200)
    const token = fresh.data?.accessToken
    await Bun.sleep(1100) // `iat` has one-second resolution: revokedBefore must be strictly later.
    expect((await clientWith(token).auth.revoke.post()).status).toBe(204)
    await waitFor(async () => (await clientWith(token).users.me.get()).status === 401, {
      timeoutMs: 20_000,
      what: 'the revoked token to be rejected',
    })
    const onOtherReplica = await clientWith(token, stack.gateway2.url).users.me.get()
    expect(onOtherReplica.status).toBe(401)
    expect(onOtherReplica.response.headers.get('content-type')).toBe('application/problem+json')
  }, 120_000)
})

describe('the messaging journey through the gateway', () => {
  test('two users: a DM, a group with roles, a mention, a thread, reactions, an edit, a mute, a delete', async () => {
    const ann = await register('Ann')
    const ben = await register('Ben')
    const benSocket = await openSocket(wsUrl(stack.gateway.url), ben.accessToken)
    const frameOf = (type: string, messageId: unknown) =>
      benSocket.next<Frame>((frame) => frame.type === type && frame.data.messageId === messageId, 20_000)

    // A DM: created once, the same one the second time.
    const dm = await conversationOf(ann, [ben], { direct: true })
    const again = await ben.api.conversations.post({ participantIds: [ann.user.id], direct: true })
    expect([again.status, again.data?.id]).toEqual([200, dm.id])

    // A group: Ann owns it, Ben is a member until she makes him an admin.
    const created = await ann.api.conversations.post({ participantIds: [ben.user.id], title: 'Plans' })
    expect(created.status).toBe(201)
    const group = ann.api.conversations({ id: created.data?.id ?? '' })
    const groupForBen = ben.api.conversations({ id: created.data?.id ?? '' })
    const roles = created.data?.participants.map((participant) => [participant.userId, participant.role])
    expect(roles).toContainEqual([ann.user.id, 'owner'])
    expect(roles).toContainEqual([ben.user.id, 'member'])
    expect((await groupForBen.patch({ title: 'Mine' })).status).toBe(403)
    expect((await group.participants({ userId: ben.user.id }).role.put({ role: 'admin' })).status).toBe(200)
    const renamed = await groupForBen.patch({ title: 'Weekend plans' })
    expect([renamed.status, renamed.data?.title]).toEqual([200, 'Weekend plans'])

    // A mention: pushed with mentionedUserIds, notified as `mention`.
    const question = await group.messages.post({ body: '@Ben hiking on Saturday?', mentions: [ben.user.id] })
    expect(question.status).toBe(201)
    const questionId = question.data?.id ?? ''
    expect((await frameOf('message.sent', questionId)).data.mentionedUserIds).toEqual([ben.user.id])
    const mentioned = (await notificationsAbout(ben, questionId, "Ben's mention notification")).find(
      aboutMessage(questionId),
    )
    expect(mentioned?.type).toBe('mention')

    // A thread on it, and a reaction.
    const reply = await groupForBen.messages.post({ body: 'Yes, at 9', replyTo: questionId })
    expect(reply.status).toBe(201)
    const thumbs = await groupForBen.messages({ messageId: questionId }).reactions({ emoji: '👍' }).put()
    expect(thumbs.status).toBe(200)
    const page = await group.messages.get({ query: {} })
    const parent = page.data?.items.find((item) => item.id === questionId)
    expect(parent?.thread).toMatchObject({ replyCount: 1, recentReplierIds: [ben.user.id] })
    expect(parent?.reactions).toEqual([{ emoji: '👍', count: 1, me: false }])
    const replies = await group.messages({ messageId: questionId }).replies.get({ query: {} })
    expect(replies.data?.items.map((item) => item.id)).toEqual([reply.data?.id ?? ''])

    // An edit: the author's, pushed and shown.
    const edited = await group.messages({ messageId: questionId }).patch({ body: '@Ben hiking on Sunday?' })
    expect([edited.status, typeof edited.data?.editedAt]).toEqual([200, 'string'])
    expect((await frameOf('message.updated', questionId)).data.preview).toBe('@Ben hiking on Sunday?')

    // A mute: Ben's DM still counts unread messages but notifies him of none.
    const dmForBen = ben.api.conversations({ id: dm.id })
    expect((await dmForBen.mute.put()).data?.muted).toBe(true)
    await benSocket.next<Frame>((frame) => frame.type === 'conversation.muted', 20_000)
    const quiet = await ann.api.conversations({ id: dm.id }).messages.post({ body: 'Bring snacks' })
    expect(quiet.status).toBe(201)
    await frameOf('message.sent', quiet.data?.id)
    expect((await dmForBen.get()).data?.unreadCount).toBe(1)

    // A delete: Ben, now an admin, removes Ann's message in the group; the page keeps a tombstone.
    const later = await group.messages.post({ body: 'Oops, wrong chat' })
    expect(later.status).toBe(201)
    const laterId = later.data?.id ?? ''
    expect((await groupForBen.messages({ messageId: laterId }).delete()).status).toBe(204)
    expect((await frameOf('message.deleted', laterId)).data.deletedBy).toBe(ben.user.id)
    const tombstone = (await group.messages.get({ query: {} })).data?.items.find(
      (item) => item.id === laterId,
    )
    expect(tombstone).toMatchObject({ body: '', reactions: [] })
    benSocket.close()

    // Notifications are consumed in order: once the later group message has notified Ben, the muted
    // DM message was consumed before it, and it notified him of nothing.
    const notified = await notificationsAbout(ben, laterId, "Ben's notification of the group message")
    expect(notified.filter(aboutMessage(quiet.data?.id))).toEqual([])
  }, 120_000)
})

describe('changing messages and roles through the gateway', () => {
  test('edit, react, promote, delete: pushed live, in the resume stream, the notification loses the text', async () => {
    const alice = await register('Alice')
    const bob = await register('Bob')
    const carol = await register('Carol')
    const bobSocket = await openSocket(wsUrl(stack.gateway.url), bob.accessToken)
    const conversation = await conversationOf(alice, [bob, carol])
    const forAlice = alice.api.conversations({ id: conversation.id })
    const resume = await carol.api.sync.get({ query: {} })
    expect(resume.status).toBe(200)

    const sent = await forAlice.messages.post({ body: 'Lunch at 1?' })
    expect(sent.status).toBe(201)
    const messageId = sent.data?.id ?? ''
    const message = (member: Member) =>
      member.api.conversations({ id: conversation.id }).messages({ messageId })
    const pushed = (type: string) =>
      bobSocket.next<Frame>((frame) => frame.type === type && frame.data.messageId === messageId, 20_000)

    const edited = await message(alice).patch({ body: 'Lunch at noon?' })
    expect(edited.status).toBe(200)
    expect(edited.data?.editedAt).toBeString()
    expect((await pushed('message.updated')).data.preview).toBe('Lunch at noon?')
    expect((await message(bob).patch({ body: 'no' })).status).toBe(403)

    const thumbs = (member: Member) => message(member).reactions({ emoji: '👍' })
    const reacted = await thumbs(bob).put()
    expect(reacted.status).toBe(200)
    expect(reacted.data?.reactions).toEqual([{ emoji: '👍', count: 1, me: true }])
    expect((await pushed('message.reaction_added')).data).toMatchObject({ userId: bob.user.id, emoji: '👍' })
    const page = await forAlice.messages.get({ query: {} })
    expect(page.data?.items[0]).toMatchObject({
      body: 'Lunch at noon?',
      reactions: [{ emoji: '👍', count: 1, me: false }],
    })
    // The `reactions` policy (3 per minute here): the fourth change is refused at the edge.
    expect((await thumbs(bob).delete()).status).toBe(200)
    expect((await thumbs(bob).put()).status).toBe(200)
    const limited = await thumbs(bob).put()
    expect(limited.status).toBe(429)
    expect(limited.response.headers.get('ratelimit-policy')).toContain('"reactions"')

    // Carol, a member, may not delete Alice's message until Alice makes her an admin.
    expect((await message(carol).delete()).status).toBe(403)
    expect((await forAlice.participants({ userId: carol.user.id }).role.put({ role: 'admin' })).status).toBe(
      200,
    )
    const roleFrame = await bobSocket.next<Frame>(
      (frame) => frame.type === 'conversation.role_changed' && frame.data.conversationId === conversation.id,
      20_000,
    )
    expect(roleFrame.data).toMatchObject({ userId: carol.user.id, role: 'admin' })
    expect((await message(carol).delete()).status).toBe(204)
    expect((await pushed('message.deleted')).data.deletedBy).toBe(carol.user.id)
    bobSocket.close()

    const tombstone = (await bob.api.conversations({ id: conversation.id }).messages.get({ query: {} })).data
      ?.items[0]
    expect(tombstone).toMatchObject({ body: '', reactions: [] })
    expect(tombstone?.deletedAt).toBeString()

    // Carol resumes from before it all: every change is in her stream, in order.
    const resumed = await streamSince(
      carol,
      resume.data?.cursor ?? '',
      'message.deleted',
      "the changes in Carol's stream",
    )
    expect(
      resumed.filter((type) => type.startsWith('message.') || type === 'conversation.role_changed'),
    ).toEqual([
      'message.sent',
      'message.updated',
      'message.reaction_added',
      'message.reaction_removed',
      'message.reaction_added',
      'conversation.role_changed',
      'message.deleted',
    ])

    // Bob's in-app notification of the message no longer quotes it.
    const redacted = await waitFor(
      async () => {
        const item = (await bob.api.notifications.get({ query: {} })).data?.items.find(
          aboutMessage(messageId),
        )
        return item && 'deleted' in item.payload && item.payload.deleted === true ? item : undefined
      },
      { timeoutMs: 20_000, what: "Bob's notification to lose the text" },
    )
    expect(redacted.payload).toMatchObject({ preview: '' })
  }, 120_000)
})

describe('direct conversations, mute, block and threads through the gateway', () => {
  test('one direct conversation per pair, a mute that silences notifications, a block, a thread', async () => {
    const dora = await register('Dora')
    const eli = await register('Eli')
    const finn = await register('Finn')
    const doraSocket = await openSocket(wsUrl(stack.gateway.url), dora.accessToken)
    const resume = await dora.api.sync.get({ query: {} })

    // Both ask at once (again until chat knows both users): one conversation, created once.
    const answers: { status: number; id: string | undefined }[] = []
    const [fromEli, fromDora] = await waitFor(
      async () => {
        const round = await Promise.all([
          eli.api.conversations.post({ participantIds: [dora.user.id], direct: true }),
          dora.api.conversations.post({ participantIds: [eli.user.id], direct: true }),
        ])
        answers.push(...round.map((reply) => ({ status: reply.status, id: reply.data?.id })))
        return round.every((reply) => reply.status === 200 || reply.status === 201) ? round : undefined
      },
      { timeoutMs: 20_000, what: 'the direct conversation', intervalMs: 300 },
    )
    expect(answers.filter((reply) => reply.status === 201)).toHaveLength(1)
    expect(new Set(answers.filter((reply) => reply.status < 300).map((reply) => reply.id)).size).toBe(1)
    const directId = fromEli?.data?.id ?? ''
    expect(fromDora?.data?.id).toBe(directId)
    const forEli = eli.api.conversations({ id: directId })
    const forDora = dora.api.conversations({ id: directId })
    // Once chat knows Finn (a group with him succeeds), he still cannot join the direct one.
    await conversationOf(eli, [finn])
    expect((await forEli.participants.post({ userIds: [finn.user.id] })).status).toBe(409)

    // Dora mutes it: Eli's message moves her unread count but notifies her of nothing.
    expect((await forDora.mute.put()).data?.muted).toBe(true)
    await doraSocket.next<Frame>((frame) => frame.type === 'conversation.muted', 20_000)
    const quiet = await forEli.messages.post({ body: 'Shh' })
    expect(quiet.status).toBe(201)
    const quietId = quiet.data?.id ?? ''
    await doraSocket.next<Frame>(
      (frame) => frame.type === 'message.sent' && frame.data.messageId === quietId,
      20_000,
    )
    expect((await forDora.get()).data?.unreadCount).toBe(1)
    expect((await forDora.mute.delete()).data?.muted).toBe(false)
    const loud = await forEli.messages.post({ body: 'Hey!' })
    const notified = await notificationsAbout(
      dora,
      loud.data?.id,
      "Dora's notification of the unmuted message",
    )
    // The muted one (sent, and so consumed, before) never notified her.
    expect(notified.filter(aboutMessage(quietId))).toEqual([])

    // A thread on Eli's message.
    const reply = await forDora.messages.post({ body: 'Why?', replyTo: quietId })
    expect(reply.status).toBe(201)
    expect(reply.data?.replyTo).toBe(quietId)
    const page = await forEli.messages.get({ query: {} })
    expect(page.data?.items.find((item) => item.id === quietId)?.thread).toMatchObject({
      replyCount: 1,
      recentReplierIds: [dora.user.id],
    })
    const replies = await forEli.messages({ messageId: quietId }).replies.get({ query: {} })
    expect(replies.data?.items.map((item) => item.id)).toEqual([reply.data?.id ?? ''])

    // Dora blocks Finn: he can no longer start a direct conversation with her.
    expect((await dora.api.conversations.blocks({ userId: finn.user.id }).put()).status).toBe(204)
    const refused = await finn.api.conversations.post({ participantIds: [dora.user.id], direct: true })
    expect(refused.status).toBe(403)
    expect(problemOf(refused)?.errors?.[0]?.field).toBe('body.participantIds.0')
    doraSocket.close()

    // Her own changes are in her resume stream.
    const resumed = await streamSince(
      dora,
      resume.data?.cursor ?? '',
      'user.blocked',
      "the changes in Dora's stream",
    )
    expect(
      resumed.filter(
        (type) => type === 'conversation.muted' || type === 'conversation.unmuted' || type === 'user.blocked',
      ),
    ).toEqual(['conversation.muted', 'conversation.unmuted', 'user.blocked'])
  }, 120_000)
})

describe('pins and mentions through the gateway', () => {
  test('pin and unpin: pushed live, in the resume stream, listed; a mention notifies as `mention`', async () => {
    const gia = await register('Gia')
    const hugo = await register('Hugo')
    const hugoSocket = await openSocket(wsUrl(stack.gateway.url), hugo.accessToken)
    const resume = await hugo.api.sync.get({ query: {} })
    const conversation = await conversationOf(gia, [hugo])
    const forGia = gia.api.conversations({ id: conversation.id })
    const forHugo = hugo.api.conversations({ id: conversation.id })
    const sent = await forGia.messages.post({ body: 'Agenda' })
    expect(sent.status).toBe(201)
    const messageId = sent.data?.id ?? ''

    const pinned = await forGia.pins({ messageId }).put()
    expect(pinned.status).toBe(200)
    const frame = await hugoSocket.next<Frame>(
      (next) => next.type === 'message.pinned' && next.data.messageId === messageId,
      20_000,
    )
    expect(frame.data.userId).toBe(gia.user.id)
    const listed = await forHugo.pins.get()
    expect(listed.data?.items.map((item) => item.message.id)).toEqual([messageId])
    const outsider = await register('Ivy')
    expect((await outsider.api.conversations({ id: conversation.id }).pins.get()).status).toBe(404)

    expect((await forHugo.pins({ messageId }).delete()).status).toBe(200)
    await hugoSocket.next<Frame>(
      (next) => next.type === 'message.unpinned' && next.data.messageId === messageId,
      20_000,
    )
    expect((await forGia.pins.get()).data?.items).toEqual([])
    hugoSocket.close()

    const resumed = await streamSince(
      hugo,
      resume.data?.cursor ?? '',
      'message.unpinned',
      "the pins in Hugo's stream",
    )
    expect(resumed.filter((type) => type.startsWith('message.'))).toEqual([
      'message.sent',
      'message.pinned',
      'message.unpinned',
    ])

    // A mention: Hugo's notification is a `mention`; Ivy, not a participant, cannot be mentioned.
    const refused = await forGia.messages.post({ body: '@Ivy hi', mentions: [outsider.user.id] })
    expect(refused.status).toBe(422)
    expect(problemOf(refused)?.errors?.[0]?.field).toBe('body.mentions.0')
    const mention = await forGia.messages.post({ body: '@Hugo see the agenda', mentions: [hugo.user.id] })
    expect(mention.status).toBe(201)
    expect(mention.data?.mentions).toEqual([hugo.user.id])
    const notified = (await notificationsAbout(hugo, mention.data?.id, "Hugo's mention notification")).find(
      aboutMessage(mention.data?.id),
    )
    expect(notified?.type).toBe('mention')
  }, 120_000)
})

describe('the edge', () => {
  test('the login policy answers 429 with RateLimit headers and Retry-After', async () => {
    const email = uniqueEmail('guess')
    const attempts = []
    for (let index = 0; index < 4; index++)
      attempts.push(await api('POST', '/auth/login', { body: { email, password: 'wrong-password' } }))
    expect(attempts.slice(0, 3).map((attempt) => attempt.status)).toEqual([401, 401, 401])
    const limited = attempts[3]!
    expect(limited.status).toBe(429)
    expect(limited.headers.get('retry-after')).toMatch(/^\d+$/)
    expect(limited.headers.get('ratelimit-policy')).toContain('q=3')
    expect(limited.headers.get('ratelimit')).toMatch(/r=0/)
    expect(limited.body).toMatchObject({ status: 429 })
  })

  test('forged, expired and alg:none tokens are rejected with 401 problems', async () => {
    const user = await register('Mallory')
    const [header, payload] = user.accessToken.split('.') as [string, string]
    const claims = JSON.parse(new TextDecoder().decode(base64url.decode(payload)))
    const none = `${base64url.encode(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${base64url.encode(JSON.stringify({ ...claims, sub: crypto.randomUUID() }))}.`
    const tampered = `${header}.${base64url.encode(JSON.stringify({ ...claims, roles: ['admin'] }))}.${user.accessToken.split('.')[2]}`
    const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' })
    const foreign = await new SignJWT({ ...claims })
      .setProtectedHeader({
        alg: 'EdDSA',
        kid: JSON.parse(new TextDecoder().decode(base64url.decode(header))).kid,
      })
      .sign(privateKey)
    const expired = await new SignJWT({ ...claims, iat: 1_000, exp: 2_000 })
      .setProtectedHeader({ alg: 'EdDSA', kid: 'e2e-1' })
      .sign(privateKey)
    for (const token of [none, tampered, foreign, expired, 'not-a-jwt']) {
      const response = await api('GET', '/users/me', { token })
      expect(response.status).toBe(401)
      expect(response.headers.get('content-type')).toBe('application/problem+json')
    }
    expect((await api('GET', '/users/me', { token: user.accessToken })).status).toBe(200)
  })

  test('a forged identity header sent straight to a service is not trusted', async () => {
    const user = await register('Trudy')
    const direct = await fetch(`${stack.user.url}/users/me`, {
      headers: { 'x-user-id': user.user.id, 'x-identity': user.user.id },
    })
    expect(direct.status).toBe(401)
    const chat = await fetch(`${stack.chat.url}/conversations`, { headers: { 'x-user-id': user.user.id } })
    expect(chat.status).toBe(401)
  })

  test('an oversized body is refused with 413', async () => {
    const response = await fetch(`${stack.gateway.url}/api/v1/auth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: uniqueEmail('big'), displayName: 'Big', password: 'x'.repeat(100_000) }),
    })
    expect(response.status).toBe(413)
    expect(response.headers.get('content-type')).toBe('application/problem+json')
  })

  test('with Redis stopped mid-test, requests are still served', async () => {
    const user = await register('Rita')
    await stack.redis.stop()
    try {
      const me = await api('GET', '/users/me', { token: user.accessToken })
      expect(me.status).toBe(200)
      const login = await api('POST', '/auth/login', {
        body: { email: user.user.email, password: user.password },
      })
      expect(login.status).toBe(200)
      expect(login.headers.get('ratelimit-policy')).toBeTruthy()
    } finally {
      await stack.redis.start()
    }
  })

  test('a stopped service answers 503 problem at the gateway', async () => {
    const user = await register('Sam')
    expect(await stack.notification.stop()).toBe(0)
    const response = await api('GET', '/notifications', { token: user.accessToken })
    expect(response.status).toBe(503)
    expect(response.headers.get('content-type')).toBe('application/problem+json')
  })
})
