import { EMAIL_PATTERN } from '@parley/common'
import { DisplayName } from '@parley/contracts'
import { t } from 'elysia'
import { TokenPair } from '../tokens/model'

const Email = t.String({
  format: 'email',
  pattern: EMAIL_PATTERN,
  maxLength: 254,
  description: 'Case-insensitive',
  examples: ['ada@example.com'],
})

export const RegisterBody = t.Object({
  email: Email,
  // The rule PATCH /users/me applies too, so registration cannot store a name it refuses.
  displayName: DisplayName,
  password: t.String({
    minLength: 8,
    maxLength: 128,
    description: '8–128 characters, no composition rules; must not be the email address',
  }),
})
export type RegisterBody = typeof RegisterBody.static

export const LoginBody = t.Object({
  email: Email,
  password: t.String({
    minLength: 1,
    maxLength: 128,
    description: 'The account’s password, up to 128 characters',
  }),
})
export type LoginBody = typeof LoginBody.static

export const User = t.Object(
  {
    id: t.String({ format: 'uuid', description: 'The user id: `sub` of the access token, the id in /users' }),
    email: t.String({ format: 'email', description: 'The sign-in address, lower-cased' }),
    displayName: t.String({ description: 'The name other users see (changed with `PATCH /users/me`)' }),
    emailVerified: t.Boolean({ description: 'Whether the address was confirmed with a mailed code' }),
    createdAt: t.String({
      format: 'date-time',
      description: 'When the account was registered (ISO 8601, UTC)',
    }),
  },
  { description: 'The signed-in account' },
)
export type User = typeof User.static

export const SessionWithUser = t.Object({ ...TokenPair.properties, user: User })

export const Me = t.Object({
  ...User.properties,
  roles: t.Array(t.String(), { description: '`user`, and `admin` for administrators' }),
  sessionId: t.String({
    format: 'uuid',
    description: 'The session (login) the access token belongs to: its `sid`',
  }),
})
export type Me = typeof Me.static
