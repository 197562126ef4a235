import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mailsTo, waitFor } from '@parley/testkit'
import { base64url, generateKeyPair, SignJWT } from 'jose'
import { openSocket } from '../../services/gateway/test/harness'
import { type Stack, startStack } from './stack'

type Json = Record<string, unknown>
type TokenPair = { accessToken: string; refreshToken: string; user: { id: string; email: string } }

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

const uniqueEmail = (name: string) => `${name}.${crypto.randomUUID().slice(0, 8)}@e2e.parley.test`

async function register(name: string): Promise<TokenPair & { password: string }> {
  const password = `pw-${crypto.randomUUID()}`
  const response = await api('POST', '/auth/register', {
    body: { email: uniqueEmail(name), displayName: name, password },
  })
  expect(response.status).toBe(201)
  return { ...(response.body as unknown as TokenPair), password }
}

describe('the journey through the gateway', () => {
  test('register → verify by mailed code → converse in real time → notification → rotate → revoke', async () => {
    const alice = await register('Alice')
    const bob = await register('Bob')

    // Email verification: the code travels auth → outbox → RabbitMQ → notification → SMTP.
    expect((await api('POST', '/auth/verify-email/request', { token: alice.accessToken })).status).toBe(202)
    const mail = await waitFor(
      async () => (await mailsTo(alice.user.email)).find((m) => /\b\d{6}\b/.test(m.text)),
      {
        timeoutMs: 20_000,
        what: 'the verification email',
      },
    )
    const code = /\b(\d{6})\b/.exec(mail.text)?.[1]
    const confirmed = await api('POST', '/auth/verify-email/confirm', {
      token: alice.accessToken,
      body: { code },
    })
    expect(confirmed.status).toBe(200)
    expect(confirmed.body).toMatchObject({ emailVerified: true })

    // Bob listens on the SECOND gateway replica.
    const bobSocket = await openSocket(
      `${stack.gateway2.url.replace('http', 'ws')}/api/v1/ws`,
      bob.accessToken,
    )

    // Chat knows Bob once user.registered reached its projection.
    const conversation = await waitFor(
      async () => {
        const created = await api('POST', '/conversations', {
          token: alice.accessToken,
          body: { title: 'Plans', participantIds: [bob.user.id] },
        })
        return created.status === 201 ? created.body : undefined
      },
      { timeoutMs: 20_000, what: 'conversation creation' },
    )
    const sent = await api('POST', `/conversations/${conversation.id}/messages`, {
      token: alice.accessToken,
      body: { body: 'Lunch at noon?', clientMessageId: 'e2e-1' },
    })
    expect(sent.status).toBe(201)

    const pushed = await bobSocket.next<{ type: string; data: { messageId: string } }>(
      (message) => message.type === 'message.sent' && message.data.messageId === sent.body.id,
      20_000,
    )
    expect(pushed.data.messageId).toBe(sent.body.id as string)
    bobSocket.close()

    const bobsMessages = await api('GET', `/conversations/${conversation.id}/messages`, {
      token: bob.accessToken,
    })
    expect(bobsMessages.status).toBe(200)
    expect((bobsMessages.body.items as Json[]).map((message) => message.body)).toEqual(['Lunch at noon?'])

    const notification = await waitFor(
      async () => {
        const listed = await api('GET', '/notifications', { token: bob.accessToken })
        return (listed.body.items as Json[] | undefined)?.find((item) => item.type === 'message.received')
      },
      { timeoutMs: 20_000, what: "Bob's notification" },
    )
    expect(notification).toBeDefined()

    const profile = await api('GET', '/users/me', { token: alice.accessToken })
    expect(profile.status).toBe(200)
    expect(profile.body).toMatchObject({ id: alice.user.id, displayName: 'Alice' })

    // Refresh rotation: the new pair works, the old refresh token is now a reuse → 401.
    const rotated = await api('POST', '/auth/refresh', { body: { refreshToken: alice.refreshToken } })
    expect(rotated.status).toBe(200)
    const reused = await api('POST', '/auth/refresh', { body: { refreshToken: alice.refreshToken } })
    expect(reused.status).toBe(401)
    // Reuse revoked the session: its access tokens stop working at the gateway, on both replicas.
    const rotatedToken = rotated.body.accessToken as string
    await waitFor(async () => (await api('GET', '/users/me', { token: rotatedToken })).status === 401, {
      timeoutMs: 20_000,
      what: 'the reused session to be rejected at the gateway',
    })
    expect((await api('GET', '/users/me', { token: rotatedToken, gateway: stack.gateway2.url })).status).toBe(
      401,
    )

    // Logout ends that session at the edge too (long before its access token expires), not the others.
    const phone = await api('POST', '/auth/login', {
      body: { email: alice.user.email, password: alice.password },
    })
    const laptop = await api('POST', '/auth/login', {
      body: { email: alice.user.email, password: alice.password },
    })
    const phoneToken = phone.body.accessToken as string
    const loggedOut = await api('POST', '/auth/logout', {
      token: phoneToken,
      body: { refreshToken: phone.body.refreshToken },
    })
    expect(loggedOut.status).toBe(204)
    await waitFor(async () => (await api('GET', '/users/me', { token: phoneToken })).status === 401, {
      timeoutMs: 20_000,
      what: 'the logged-out session to be rejected at the gateway',
    })
    expect((await api('GET', '/users/me', { token: phoneToken, gateway: stack.gateway2.url })).status).toBe(
      401,
    )
    expect((await api('GET', '/users/me', { token: laptop.body.accessToken as string })).status).toBe(200)

    // Revoke: access tokens issued before now stop working at the gateway.
    const fresh = await api('POST', '/auth/login', {
      body: { email: alice.user.email, password: alice.password },
    })
    expect(fresh.status).toBe(200)
    const token = fresh.body.accessToken as string
    await Bun.sleep(1100) // `iat` has one-second resolution: revokedBefore must be strictly later.
    expect((await api('POST', '/auth/revoke', { token })).status).toBe(204)
    await waitFor(async () => (await api('GET', '/users/me', { token })).status === 401, {
      timeoutMs: 20_000,
      what: 'the revoked token to be rejected',
    })
    const onOtherReplica = await api('GET', '/users/me', { token, gateway: stack.gateway2.url })
    expect(onOtherReplica.status).toBe(401)
    expect(onOtherReplica.headers.get('content-type')).toBe('application/problem+json')
  }, 120_000)
})

describe('the messaging journey through the gateway', () => {
  test('two users: a DM, a group with roles, a mention, a thread, reactions, an edit, a mute, a delete', async () => {
    const ann = await register('Ann')
    const ben = await register('Ben')
    const benSocket = await openSocket(
      `${stack.gateway.url.replace('http', 'ws')}/api/v1/ws`,
      ben.accessToken,
    )
    type Frame = { type: string; data: Json }
    const frameOf = (type: string, messageId: unknown) =>
      benSocket.next<Frame>((frame) => frame.type === type && frame.data.messageId === messageId, 20_000)

    // A DM: created once (again until chat knows Ben), the same one the second time.
    const dm = await waitFor(
      async () => {
        const created = await api('POST', '/conversations', {
          token: ann.accessToken,
          body: { participantIds: [ben.user.id], direct: true },
        })
        return created.status === 201 ? created.body : undefined
      },
      { timeoutMs: 20_000, what: 'the direct conversation' },
    )
    const again = await api('POST', '/conversations', {
      token: ben.accessToken,
      body: { participantIds: [ann.user.id], direct: true },
    })
    expect([again.status, again.body.id]).toEqual([200, dm.id])

    // A group: Ann owns it, Ben is a member until she makes him an admin.
    const created = await api('POST', '/conversations', {
      token: ann.accessToken,
      body: { participantIds: [ben.user.id], title: 'Plans' },
    })
    expect(created.status).toBe(201)
    const group = `/conversations/${created.body.id}`
    const roles = (created.body.participants as Json[]).map((participant) => [
      participant.userId,
      participant.role,
    ])
    expect(roles).toContainEqual([ann.user.id, 'owner'])
    expect(roles).toContainEqual([ben.user.id, 'member'])
    expect((await api('PATCH', group, { token: ben.accessToken, body: { title: 'Mine' } })).status).toBe(403)
    const promoted = await api('PUT', `${group}/participants/${ben.user.id}/role`, {
      token: ann.accessToken,
      body: { role: 'admin' },
    })
    expect(promoted.status).toBe(200)
    const renamed = await api('PATCH', group, { token: ben.accessToken, body: { title: 'Weekend plans' } })
    expect([renamed.status, renamed.body.title]).toEqual([200, 'Weekend plans'])

    // A mention: pushed with mentionedUserIds, notified as `mention`.
    const question = await api('POST', `${group}/messages`, {
      token: ann.accessToken,
      body: { body: '@Ben hiking on Saturday?', mentions: [ben.user.id] },
    })
    expect(question.status).toBe(201)
    expect((await frameOf('message.sent', question.body.id)).data.mentionedUserIds).toEqual([ben.user.id])
    const mentioned = await waitFor(
      async () => {
        const listed = await api('GET', '/notifications', { token: ben.accessToken })
        return ((listed.body.items as Json[] | undefined) ?? []).find(
          (item) => (item.payload as Json).messageId === question.body.id,
        )
      },
      { timeoutMs: 20_000, what: "Ben's mention notification" },
    )
    expect(mentioned.type).toBe('mention')

    // A thread on it, and a reaction.
    const reply = await api('POST', `${group}/messages`, {
      token: ben.accessToken,
      body: { body: 'Yes, at 9', replyTo: question.body.id },
    })
    expect(reply.status).toBe(201)
    const thumbs = await api(
      'PUT',
      `${group}/messages/${question.body.id}/reactions/${encodeURIComponent('👍')}`,
      {
        token: ben.accessToken,
      },
    )
    expect(thumbs.status).toBe(200)
    const page = await api('GET', `${group}/messages`, { token: ann.accessToken })
    const parent = (page.body.items as Json[]).find((item) => item.id === question.body.id)
    expect(parent?.thread).toMatchObject({ replyCount: 1, recentReplierIds: [ben.user.id] })
    expect(parent?.reactions).toEqual([{ emoji: '👍', count: 1, me: false }])
    const replies = await api('GET', `${group}/messages/${question.body.id}/replies`, {
      token: ann.accessToken,
    })
    expect((replies.body.items as Json[]).map((item) => item.id)).toEqual([reply.body.id])

    // An edit: the author's, pushed and shown.
    const edited = await api('PATCH', `${group}/messages/${question.body.id}`, {
      token: ann.accessToken,
      body: { body: '@Ben hiking on Sunday?' },
    })
    expect([edited.status, typeof edited.body.editedAt]).toEqual([200, 'string'])
    expect((await frameOf('message.updated', question.body.id)).data.preview).toBe('@Ben hiking on Sunday?')

    // A mute: Ben's DM still counts unread messages but notifies him of none.
    expect((await api('PUT', `/conversations/${dm.id}/mute`, { token: ben.accessToken })).body.muted).toBe(
      true,
    )
    await benSocket.next<Frame>((frame) => frame.type === 'conversation.muted', 20_000)
    const quiet = await api('POST', `/conversations/${dm.id}/messages`, {
      token: ann.accessToken,
      body: { body: 'Bring snacks' },
    })
    expect(quiet.status).toBe(201)
    await frameOf('message.sent', quiet.body.id)
    expect((await api('GET', `/conversations/${dm.id}`, { token: ben.accessToken })).body.unreadCount).toBe(1)

    // A delete: Ben, now an admin, removes Ann's message in the group; the page keeps a tombstone.
    const later = await api('POST', `${group}/messages`, {
      token: ann.accessToken,
      body: { body: 'Oops, wrong chat' },
    })
    expect(later.status).toBe(201)
    expect(
      (await api('DELETE', `${group}/messages/${later.body.id}`, { token: ben.accessToken })).status,
    ).toBe(204)
    expect((await frameOf('message.deleted', later.body.id)).data.deletedBy).toBe(ben.user.id)
    const tombstone = (await api('GET', `${group}/messages`, { token: ann.accessToken })).body.items as Json[]
    expect(tombstone.find((item) => item.id === later.body.id)).toMatchObject({ body: '', reactions: [] })
    benSocket.close()

    // Notifications are consumed in order: once the later group message has notified Ben, the muted
    // DM message was consumed before it, and it notified him of nothing.
    const notified = await waitFor(
      async () => {
        const listed = await api('GET', '/notifications', { token: ben.accessToken })
        const items = (listed.body.items as Json[] | undefined) ?? []
        return items.some((item) => (item.payload as Json).messageId === later.body.id) ? items : undefined
      },
      { timeoutMs: 20_000, what: "Ben's notification of the group message" },
    )
    expect(notified.filter((item) => (item.payload as Json).messageId === quiet.body.id)).toEqual([])
  }, 120_000)
})

describe('changing messages and roles through the gateway', () => {
  test('edit, react, promote, delete: pushed live, in the resume stream, the notification loses the text', async () => {
    const alice = await register('Alice')
    const bob = await register('Bob')
    const carol = await register('Carol')
    const bobSocket = await openSocket(
      `${stack.gateway.url.replace('http', 'ws')}/api/v1/ws`,
      bob.accessToken,
    )
    const conversation = await waitFor(
      async () => {
        const created = await api('POST', '/conversations', {
          token: alice.accessToken,
          body: { participantIds: [bob.user.id, carol.user.id] },
        })
        return created.status === 201 ? created.body : undefined
      },
      { timeoutMs: 20_000, what: 'conversation creation' },
    )
    const path = `/conversations/${conversation.id}`
    const resume = await api('GET', '/sync', { token: carol.accessToken })
    expect(resume.status).toBe(200)

    const sent = await api('POST', `${path}/messages`, {
      token: alice.accessToken,
      body: { body: 'Lunch at 1?' },
    })
    expect(sent.status).toBe(201)
    const messagePath = `${path}/messages/${sent.body.id}`
    type Frame = { type: string; data: Json }
    const pushed = (type: string) =>
      bobSocket.next<Frame>((frame) => frame.type === type && frame.data.messageId === sent.body.id, 20_000)

    const edited = await api('PATCH', messagePath, {
      token: alice.accessToken,
      body: { body: 'Lunch at noon?' },
    })
    expect(edited.status).toBe(200)
    expect(edited.body.editedAt).toBeString()
    expect((await pushed('message.updated')).data.preview).toBe('Lunch at noon?')
    expect((await api('PATCH', messagePath, { token: bob.accessToken, body: { body: 'no' } })).status).toBe(
      403,
    )

    const thumbs = `${messagePath}/reactions/${encodeURIComponent('👍')}`
    const reacted = await api('PUT', thumbs, { token: bob.accessToken })
    expect(reacted.status).toBe(200)
    expect(reacted.body.reactions).toEqual([{ emoji: '👍', count: 1, me: true }])
    expect((await pushed('message.reaction_added')).data).toMatchObject({ userId: bob.user.id, emoji: '👍' })
    const page = await api('GET', `${path}/messages`, { token: alice.accessToken })
    expect((page.body.items as Json[])[0]).toMatchObject({
      body: 'Lunch at noon?',
      reactions: [{ emoji: '👍', count: 1, me: false }],
    })
    // The `reactions` policy (3 per minute here): the fourth change is refused at the edge.
    expect((await api('DELETE', thumbs, { token: bob.accessToken })).status).toBe(200)
    expect((await api('PUT', thumbs, { token: bob.accessToken })).status).toBe(200)
    const limited = await api('PUT', thumbs, { token: bob.accessToken })
    expect(limited.status).toBe(429)
    expect(limited.headers.get('ratelimit-policy')).toContain('"reactions"')

    // Carol, a member, may not delete Alice's message until Alice makes her an admin.
    expect((await api('DELETE', messagePath, { token: carol.accessToken })).status).toBe(403)
    const promoted = await api('PUT', `${path}/participants/${carol.user.id}/role`, {
      token: alice.accessToken,
      body: { role: 'admin' },
    })
    expect(promoted.status).toBe(200)
    const roleFrame = await bobSocket.next<Frame>(
      (frame) => frame.type === 'conversation.role_changed' && frame.data.conversationId === conversation.id,
      20_000,
    )
    expect(roleFrame.data).toMatchObject({ userId: carol.user.id, role: 'admin' })
    expect((await api('DELETE', messagePath, { token: carol.accessToken })).status).toBe(204)
    expect((await pushed('message.deleted')).data.deletedBy).toBe(carol.user.id)
    bobSocket.close()

    const tombstone = await api('GET', `${path}/messages`, { token: bob.accessToken })
    expect((tombstone.body.items as Json[])[0]).toMatchObject({ body: '', reactions: [] })
    expect((tombstone.body.items as Json[])[0]?.deletedAt).toBeString()

    // Carol resumes from before it all: every change is in her stream, in order.
    const resumed = await waitFor(
      async () => {
        const read = await api('GET', `/sync?since=${encodeURIComponent(resume.body.cursor as string)}`, {
          token: carol.accessToken,
        })
        const types = (read.body.events as Frame[]).map((frame) => frame.type)
        return types.includes('message.deleted') ? types : undefined
      },
      { timeoutMs: 20_000, what: "the changes in Carol's stream" },
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
        const listed = await api('GET', '/notifications', { token: bob.accessToken })
        const item = (listed.body.items as Json[] | undefined)?.find(
          (entry) => (entry.payload as Json).messageId === sent.body.id,
        )
        return item && (item.payload as Json).deleted === true ? item : undefined
      },
      { timeoutMs: 20_000, what: "Bob's notification to lose the text" },
    )
    expect((redacted.payload as Json).preview).toBe('')
  }, 120_000)
})

describe('direct conversations, mute, block and threads through the gateway', () => {
  test('one direct conversation per pair, a mute that silences notifications, a block, a thread', async () => {
    const dora = await register('Dora')
    const eli = await register('Eli')
    const finn = await register('Finn')
    const doraSocket = await openSocket(
      `${stack.gateway.url.replace('http', 'ws')}/api/v1/ws`,
      dora.accessToken,
    )
    type Frame = { type: string; data: Json }
    const resume = await api('GET', '/sync', { token: dora.accessToken })

    // Both ask at once (again until chat knows both users): one conversation, created once.
    const answers: Awaited<ReturnType<typeof api>>[] = []
    const [fromEli, fromDora] = await waitFor(
      async () => {
        const round = await Promise.all([
          api('POST', '/conversations', {
            token: eli.accessToken,
            body: { participantIds: [dora.user.id], direct: true },
          }),
          api('POST', '/conversations', {
            token: dora.accessToken,
            body: { participantIds: [eli.user.id], direct: true },
          }),
        ])
        answers.push(...round)
        return round.every((reply) => reply.status === 200 || reply.status === 201) ? round : undefined
      },
      { timeoutMs: 20_000, what: 'the direct conversation', intervalMs: 300 },
    )
    expect(answers.filter((reply) => reply.status === 201)).toHaveLength(1)
    expect(new Set(answers.filter((reply) => reply.status < 300).map((reply) => reply.body.id)).size).toBe(1)
    expect(fromEli?.body.id).toBe(fromDora?.body.id)
    const path = `/conversations/${fromEli?.body.id}`
    // Once chat knows Finn (a group with him succeeds), he still cannot join the direct one.
    await waitFor(
      async () => {
        const group = await api('POST', '/conversations', {
          token: eli.accessToken,
          body: { participantIds: [finn.user.id] },
        })
        return group.status === 201 ? group : undefined
      },
      { timeoutMs: 20_000, what: 'Finn known to chat', intervalMs: 300 },
    )
    expect(
      (
        await api('POST', `${path}/participants`, {
          token: eli.accessToken,
          body: { userIds: [finn.user.id] },
        })
      ).status,
    ).toBe(409)

    // Dora mutes it: Eli's message moves her unread count but notifies her of nothing.
    const muted = await api('PUT', `${path}/mute`, { token: dora.accessToken })
    expect(muted.body.muted).toBe(true)
    await doraSocket.next<Frame>((frame) => frame.type === 'conversation.muted', 20_000)
    const quiet = await api('POST', `${path}/messages`, { token: eli.accessToken, body: { body: 'Shh' } })
    expect(quiet.status).toBe(201)
    await doraSocket.next<Frame>(
      (frame) => frame.type === 'message.sent' && frame.data.messageId === quiet.body.id,
      20_000,
    )
    expect((await api('GET', path, { token: dora.accessToken })).body.unreadCount).toBe(1)
    expect((await api('DELETE', `${path}/mute`, { token: dora.accessToken })).body.muted).toBe(false)
    const loud = await api('POST', `${path}/messages`, { token: eli.accessToken, body: { body: 'Hey!' } })
    const notified = await waitFor(
      async () => {
        const listed = await api('GET', '/notifications', { token: dora.accessToken })
        const items = (listed.body.items as Json[] | undefined) ?? []
        return items.some((item) => (item.payload as Json).messageId === loud.body.id) ? items : undefined
      },
      { timeoutMs: 20_000, what: "Dora's notification of the unmuted message" },
    )
    // The muted one (sent, and so consumed, before) never notified her.
    expect(notified.filter((item) => (item.payload as Json).messageId === quiet.body.id)).toEqual([])

    // A thread on Eli's message.
    const reply = await api('POST', `${path}/messages`, {
      token: dora.accessToken,
      body: { body: 'Why?', replyTo: quiet.body.id },
    })
    expect(reply.status).toBe(201)
    expect(reply.body.replyTo).toBe(quiet.body.id)
    const page = await api('GET', `${path}/messages`, { token: eli.accessToken })
    expect((page.body.items as Json[]).find((item) => item.id === quiet.body.id)?.thread).toMatchObject({
      replyCount: 1,
      recentReplierIds: [dora.user.id],
    })
    const replies = await api('GET', `${path}/messages/${quiet.body.id}/replies`, { token: eli.accessToken })
    expect((replies.body.items as Json[]).map((item) => item.id)).toEqual([reply.body.id])

    // Dora blocks Finn: he can no longer start a direct conversation with her.
    expect(
      (await api('PUT', `/conversations/blocks/${finn.user.id}`, { token: dora.accessToken })).status,
    ).toBe(204)
    const refused = await api('POST', '/conversations', {
      token: finn.accessToken,
      body: { participantIds: [dora.user.id], direct: true },
    })
    expect(refused.status).toBe(403)
    expect((refused.body.errors as Json[])[0]?.field).toBe('body.participantIds.0')
    doraSocket.close()

    // Her own changes are in her resume stream.
    const resumed = await waitFor(
      async () => {
        const read = await api('GET', `/sync?since=${encodeURIComponent(resume.body.cursor as string)}`, {
          token: dora.accessToken,
        })
        const types = (read.body.events as Frame[]).map((frame) => frame.type)
        return types.includes('user.blocked') ? types : undefined
      },
      { timeoutMs: 20_000, what: "the changes in Dora's stream" },
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
    const hugoSocket = await openSocket(
      `${stack.gateway.url.replace('http', 'ws')}/api/v1/ws`,
      hugo.accessToken,
    )
    type Frame = { type: string; data: Json }
    const resume = await api('GET', '/sync', { token: hugo.accessToken })
    const conversation = await waitFor(
      async () => {
        const created = await api('POST', '/conversations', {
          token: gia.accessToken,
          body: { participantIds: [hugo.user.id] },
        })
        return created.status === 201 ? created.body : undefined
      },
      { timeoutMs: 20_000, what: 'conversation creation' },
    )
    const path = `/conversations/${conversation.id}`
    const sent = await api('POST', `${path}/messages`, { token: gia.accessToken, body: { body: 'Agenda' } })
    expect(sent.status).toBe(201)

    const pinned = await api('PUT', `${path}/pins/${sent.body.id}`, { token: gia.accessToken })
    expect(pinned.status).toBe(200)
    const frame = await hugoSocket.next<Frame>(
      (next) => next.type === 'message.pinned' && next.data.messageId === sent.body.id,
      20_000,
    )
    expect(frame.data.userId).toBe(gia.user.id)
    const listed = await api('GET', `${path}/pins`, { token: hugo.accessToken })
    expect((listed.body.items as Json[]).map((item) => (item.message as Json).id)).toEqual([sent.body.id])
    const outsider = await register('Ivy')
    expect((await api('GET', `${path}/pins`, { token: outsider.accessToken })).status).toBe(404)

    expect((await api('DELETE', `${path}/pins/${sent.body.id}`, { token: hugo.accessToken })).status).toBe(
      200,
    )
    await hugoSocket.next<Frame>(
      (next) => next.type === 'message.unpinned' && next.data.messageId === sent.body.id,
      20_000,
    )
    expect((await api('GET', `${path}/pins`, { token: gia.accessToken })).body.items).toEqual([])
    hugoSocket.close()

    const resumed = await waitFor(
      async () => {
        const read = await api('GET', `/sync?since=${encodeURIComponent(resume.body.cursor as string)}`, {
          token: hugo.accessToken,
        })
        const types = (read.body.events as Frame[]).map((event) => event.type)
        return types.includes('message.unpinned') ? types : undefined
      },
      { timeoutMs: 20_000, what: "the pins in Hugo's stream" },
    )
    expect(resumed.filter((type) => type.startsWith('message.'))).toEqual([
      'message.sent',
      'message.pinned',
      'message.unpinned',
    ])

    // A mention: Hugo's notification is a `mention`; Ivy, not a participant, cannot be mentioned.
    const refused = await api('POST', `${path}/messages`, {
      token: gia.accessToken,
      body: { body: '@Ivy hi', mentions: [outsider.user.id] },
    })
    expect(refused.status).toBe(422)
    expect((refused.body.errors as Json[])[0]?.field).toBe('body.mentions.0')
    const mention = await api('POST', `${path}/messages`, {
      token: gia.accessToken,
      body: { body: '@Hugo see the agenda', mentions: [hugo.user.id] },
    })
    expect(mention.status).toBe(201)
    expect(mention.body.mentions).toEqual([hugo.user.id])
    const notified = await waitFor(
      async () => {
        const listed = await api('GET', '/notifications', { token: hugo.accessToken })
        return ((listed.body.items as Json[] | undefined) ?? []).find(
          (item) => (item.payload as Json).messageId === mention.body.id,
        )
      },
      { timeoutMs: 20_000, what: "Hugo's mention notification" },
    )
    expect(notified.type).toBe('mention')
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
