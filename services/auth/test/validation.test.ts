import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createHarness, type Harness, problemOf, type SignedInUser } from './harness'

// Bad input anywhere: a 4xx problem naming the field, no row written, no event published.
let h: Harness
let user: SignedInUser
let eventsBefore: number
let rowsBefore: Awaited<ReturnType<typeof rows>>

async function rows() {
  return {
    credentials: await h.count('credentials'),
    sessions: await h.count('sessions'),
    processed: Number(
      (await h.sql<{ count: number }[]>`select count(*)::int as count from processed_events`)[0]?.count,
    ),
  }
}

beforeAll(async () => {
  h = await createHarness({ BODY_LIMIT_BYTES: '2048' })
  user = await h.register()
  await h.eventOf('user.registered', (event) => event.data.userId === user.id)
  eventsBefore = h.events.length
  rowsBefore = await rows()
})

afterAll(() => h.close())

type Case = { name: string; body: unknown; fields: string[] }

function expectProblem(
  reply: { status: number; headers: Headers; body: unknown },
  status: number,
  fields?: string[],
) {
  expect(reply.status).toBe(status)
  expect(reply.headers.get('content-type')).toBe('application/problem+json')
  if (fields)
    expect(
      problemOf(reply)
        .errors?.map((error) => error.field)
        .sort(),
    ).toEqual([...fields].sort())
}

const endpoints: { path: string; bearer: boolean; cases: Case[] }[] = [
  {
    path: '/auth/register',
    bearer: false,
    cases: [
      { name: 'empty object', body: {}, fields: ['body.email', 'body.displayName', 'body.password'] },
      {
        name: 'wrong types',
        body: { email: 42, displayName: ['x'], password: true },
        fields: ['body.email', 'body.displayName', 'body.password'],
      },
      {
        name: 'invalid email',
        body: { email: 'not-an-email', displayName: 'X', password: 'long enough' },
        fields: ['body.email'],
      },
      {
        name: 'password too short',
        body: { email: 'short@example.com', displayName: 'X', password: '1234567' },
        fields: ['body.password'],
      },
      {
        name: 'password too long',
        body: { email: 'long@example.com', displayName: 'X', password: 'x'.repeat(129) },
        fields: ['body.password'],
      },
      {
        name: 'display name too long',
        body: { email: 'name@example.com', displayName: 'n'.repeat(65), password: 'long enough' },
        fields: ['body.displayName'],
      },
      { name: 'a JSON array', body: [], fields: ['body'] },
    ],
  },
  {
    path: '/auth/login',
    bearer: false,
    cases: [
      { name: 'missing password', body: { email: 'a@example.com' }, fields: ['body.password'] },
      { name: 'email not a string', body: { email: null, password: 'x' }, fields: ['body.email'] },
    ],
  },
  {
    path: '/auth/refresh',
    bearer: false,
    cases: [
      { name: 'missing token', body: {}, fields: ['body.refreshToken'] },
      { name: 'token not a string', body: { refreshToken: 123 }, fields: ['body.refreshToken'] },
      { name: 'empty token', body: { refreshToken: '' }, fields: ['body.refreshToken'] },
    ],
  },
  {
    path: '/auth/logout',
    bearer: true,
    cases: [
      { name: 'token too long', body: { refreshToken: 'x'.repeat(513) }, fields: ['body.refreshToken'] },
    ],
  },
  {
    path: '/auth/revoke',
    bearer: true,
    cases: [
      { name: 'userId not a uuid', body: { userId: 'me' }, fields: ['body.userId'] },
      { name: 'a JSON string', body: JSON.stringify('everyone'), fields: ['body'] },
    ],
  },
  {
    path: '/auth/verify-email/confirm',
    bearer: true,
    cases: [
      { name: 'missing code', body: {}, fields: ['body.code'] },
      { name: 'code as a number', body: { code: 123456 }, fields: ['body.code'] },
    ],
  },
]

for (const endpoint of endpoints) {
  describe(`POST ${endpoint.path}`, () => {
    const token = () => (endpoint.bearer ? user.accessToken : undefined)

    for (const { name, body, fields } of endpoint.cases) {
      test(`${name}: 422 naming ${fields.join(', ')}`, async () => {
        expectProblem(await h.call('POST', endpoint.path, { body, token: token() }), 422, fields)
      })
    }

    test('malformed JSON: 400 naming the body', async () => {
      const reply = await h.call('POST', endpoint.path, { body: '{"email": "a@', token: token() })
      expectProblem(reply, 400, ['body'])
    })

    test('a body over the limit: 413', async () => {
      const reply = await h.call('POST', endpoint.path, {
        body: {
          email: 'big@example.com',
          displayName: 'Big',
          password: 'p'.repeat(4096),
          refreshToken: 'r',
          code: '1',
        },
        token: token(),
      })
      expectProblem(reply, 413)
    })
  })
}

// Last in this file: every request above was refused before touching anything.
test('nothing was written or published by any of the refused requests', async () => {
  expect(await rows()).toEqual(rowsBefore)
  expect(await h.count('outbox')).toBe(0)
  // A marker event published now must be the next one to arrive.
  const marker = await h.register()
  await h.eventOf('user.registered', (event) => event.data.userId === marker.id)
  expect(h.events.slice(eventsBefore).map((event) => event.type)).toEqual(['user.registered'])
})
