import { DisplayName, Page } from '@parley/contracts'
import { t } from 'elysia'

export const MAX_BATCH_IDS = 100
export const MAX_PAGE_SIZE = 100

// The fields both profile views share, described once.
const UserId = t.String({ format: 'uuid', description: 'The user id (the access token’s `sub`)' })
const ProfileDisplayName = t.String({ description: 'The name shown to other users' })
const Bio = t.Union([t.String(), t.Null()], {
  description: 'Free text of up to 280 characters; null when none',
})
const AvatarUrl = t.Union([t.String(), t.Null()], {
  description: 'An https URL of the picture; null when none',
})
const CreatedAt = t.String({ format: 'date-time', description: 'When the user registered (ISO 8601, UTC)' })

export const PublicProfile = t.Object(
  {
    id: UserId,
    displayName: ProfileDisplayName,
    bio: Bio,
    avatarUrl: AvatarUrl,
    createdAt: CreatedAt,
  },
  { description: 'What any signed-in user may see of a profile' },
)
export type PublicProfile = typeof PublicProfile.static

export const OwnProfile = t.Object(
  {
    id: UserId,
    email: t.String({ description: 'The sign-in address (lower-cased); only its owner sees it' }),
    emailVerified: t.Boolean({
      description: 'Whether the address was confirmed (`POST /auth/verify-email/confirm`)',
    }),
    displayName: ProfileDisplayName,
    bio: Bio,
    avatarUrl: AvatarUrl,
    createdAt: CreatedAt,
    updatedAt: t.String({
      format: 'date-time',
      description:
        'When the profile (or its verification) last changed (ISO 8601, UTC); the registration time if never',
    }),
  },
  { description: 'The caller’s own profile, with its private fields' },
)
export type OwnProfile = typeof OwnProfile.static

/**
 * What `checkAvatarUrl` accepts, as a pattern both JavaScript and other dialects read alike: a
 * host name whose last label starts with a letter (never parsed as an IPv4 address), a port URL
 * parsing never refuses, then printable ASCII only.
 */
const HTTPS_URL = '^https://(?:[A-Za-z0-9-]+\\.)*[A-Za-z][A-Za-z0-9-]*(?::[0-9]{1,4})?(?:[/?#][!-~]*)?$'

export const ProfileUpdate = t.Object(
  {
    // The rule registration applies too (auth's POST /auth/register).
    displayName: t.Optional(DisplayName),
    bio: t.Optional(
      t.Union([t.String({ maxLength: 280 }), t.Null()], {
        description: 'Up to 280 characters; null clears it',
      }),
    ),
    avatarUrl: t.Optional(
      t.Union([t.String({ maxLength: 2048, pattern: HTTPS_URL }), t.Null()], {
        description:
          'An https URL of up to 2048 characters: a host name (no credentials, no IP address), an optional port, then printable ASCII; null clears it',
      }),
    ),
  },
  {
    additionalProperties: false,
    minProperties: 1,
    description: 'At least one field; fields left out are unchanged',
  },
)
export type ProfileUpdate = typeof ProfileUpdate.static

export const ProfileParams = t.Object({ id: t.String({ format: 'uuid', description: 'The user id' }) })

/** Elysia's `t` (not the contracts' PageQuery): only its numbers are coerced from the query string. */
export const UserListQuery = t.Object({
  q: t.Optional(
    t.String({
      minLength: 1,
      maxLength: 100,
      description:
        'Search text (trimmed), case-insensitive, matched against display names only (never emails). Ranked: exact name, name prefix, then (for 3 characters or more) substring; ties by name.',
    }),
  ),
  ids: t.Optional(
    t.String({
      minLength: 1,
      maxLength: MAX_BATCH_IDS * 37,
      description: `Comma-separated user ids (at most ${MAX_BATCH_IDS}): a batch lookup instead of a search`,
    }),
  ),
  limit: t.Optional(
    t.Integer({
      minimum: 1,
      maximum: MAX_PAGE_SIZE,
      default: 20,
      description: `Page size, 1–${MAX_PAGE_SIZE}`,
    }),
  ),
  cursor: t.Optional(
    t.String({
      maxLength: 512,
      pattern: '^[A-Za-z0-9_-]+$',
      description: 'Opaque; the `nextCursor` of the previous page (search only)',
    }),
  ),
})
export type UserListQuery = typeof UserListQuery.static

export const PublicProfilePage = Page(PublicProfile)
export type PublicProfilePage = typeof PublicProfilePage.static
