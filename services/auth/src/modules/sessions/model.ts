import { t } from 'elysia'

export const RefreshBody = t.Object({
  refreshToken: t.String({
    minLength: 1,
    maxLength: 512,
    description: 'The refresh token of the latest pair',
  }),
})

export const LogoutBody = t.Object({
  refreshToken: t.String({
    minLength: 1,
    maxLength: 512,
    description: 'A refresh token of the session to end (one of the caller’s)',
  }),
})

export const RevokeBody = t.Optional(
  t.Object({
    userId: t.Optional(
      t.String({
        format: 'uuid',
        description:
          'Whose sessions to revoke (default: the caller’s own); another user needs the admin role',
      }),
    ),
  }),
)
