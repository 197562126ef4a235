import { afterAll, beforeAll, expect, setDefaultTimeout, test } from 'bun:test'
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
