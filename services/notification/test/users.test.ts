import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import { createPostgres, type PostgresClient } from '@parley/common/postgres'
import { createTestDatabase, type TestDatabase } from '@parley/testkit'
import { MIGRATIONS } from '../src/db'
import { type Schema, schema } from '../src/db/schema'
import { UserDirectory } from '../src/modules/users/service'
import { newUserId, registered } from './harness'

// Real servers on a shared 2-core machine: give the pipelines time under load (Bun's default is 5 s).
setDefaultTimeout(30_000)

let database: TestDatabase
let postgres: PostgresClient<Schema>
let directory: UserDirectory

beforeAll(async () => {
  database = await createTestDatabase(MIGRATIONS)
  postgres = createPostgres(database.url, { schema, max: 2 })
  directory = new UserDirectory(postgres.db)
})

afterAll(async () => {
  await postgres?.close()
  await database?.drop()
})

const at = (iso: string) => iso

test('a profile update wins over an older registration, whatever the arrival order', async () => {
  const id = newUserId()
  await postgres.db.transaction((tx) =>
    directory.applyProfileUpdated(tx, {
      userId: id,
      displayName: 'Renamed',
      bio: null,
      avatarUrl: null,
      updatedAt: at('2030-01-02T00:00:00.000Z'),
    }),
  )
  await postgres.db.transaction((tx) =>
    directory.applyRegistered(tx, {
      ...registered(id, 'late@parley.test', 'Original'),
      createdAt: '2030-01-01T00:00:00.000Z',
    }),
  )
  expect((await directory.find([id])).get(id)).toEqual({
    id,
    email: 'late@parley.test',
    displayName: 'Renamed',
    verified: false,
  })
})

test('an older profile update does not overwrite a newer one', async () => {
  const id = newUserId()
  const update = (displayName: string, updatedAt: string) =>
    postgres.db.transaction((tx) =>
      directory.applyProfileUpdated(tx, { userId: id, displayName, bio: null, avatarUrl: null, updatedAt }),
    )
  await postgres.db.transaction((tx) =>
    directory.applyRegistered(tx, {
      ...registered(id, 'o@parley.test', 'First'),
      createdAt: '2030-01-01T00:00:00.000Z',
    }),
  )
  await update('Newest', '2030-01-03T00:00:00.000Z')
  await update('Stale', '2030-01-02T00:00:00.000Z')
  expect((await directory.find([id])).get(id)?.displayName).toBe('Newest')
})

describe('email verification', () => {
  const verify = (userId: string, email: string) =>
    postgres.db.transaction((tx) =>
      directory.applyEmailVerified(tx, { userId, email, verifiedAt: new Date().toISOString() }),
    )
  const register = (userId: string, email: string, createdAt = '2030-01-01T00:00:00.000Z') =>
    postgres.db.transaction((tx) =>
      directory.applyRegistered(tx, { ...registered(userId, email, 'Vera'), createdAt }),
    )

  test('a registered user is unverified until user.email_verified', async () => {
    const id = newUserId()
    await register(id, 'v1@parley.test')
    expect((await directory.find([id])).get(id)?.verified).toBe(false)
    await verify(id, 'v1@parley.test')
    expect((await directory.find([id])).get(id)).toEqual({
      id,
      email: 'v1@parley.test',
      displayName: 'Vera',
      verified: true,
    })
  })

  test('verification applied before its registration is kept, and the name filled in', async () => {
    const id = newUserId()
    await verify(id, 'v2@parley.test')
    // Not projected yet: no name to greet with.
    expect((await directory.find([id])).has(id)).toBe(false)
    await register(id, 'v2@parley.test')
    expect((await directory.find([id])).get(id)).toEqual({
      id,
      email: 'v2@parley.test',
      displayName: 'Vera',
      verified: true,
    })
  })

  test('verification counts only for the address it verified', async () => {
    const id = newUserId()
    await register(id, 'old@parley.test')
    await verify(id, 'old@parley.test')
    // The contracts carry no email change today; were the address to change, it is unverified again.
    await register(id, 'new@parley.test', '2030-01-02T00:00:00.000Z')
    expect((await directory.find([id])).get(id)).toMatchObject({ email: 'new@parley.test', verified: false })
  })
})
