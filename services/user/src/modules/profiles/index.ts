import {
  type AccessTokenVerifier,
  authPlugin,
  problemResponses,
  problems,
  requestContext,
} from '@parley/common'
import { normaliseDisplayName } from '@parley/contracts'
import { Elysia } from 'elysia'
import {
  OwnProfile,
  ProfileParams,
  ProfileUpdate,
  PublicProfile,
  PublicProfilePage,
  UserListQuery,
} from './model'
import type { ProfileService } from './service'

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null
}

/** /users routes: every one needs a verified access token; the caller is `identity.userId`. */
export function profileRoutes(service: ProfileService, verifier: AccessTokenVerifier) {
  return new Elysia({ name: 'user.profiles' })
    .use(requestContext)
    .use(authPlugin(verifier))
    .get('/users/me', ({ identity }) => service.own(identity.userId), {
      auth: true,
      response: { 200: OwnProfile, ...problemResponses(401, 503) },
      detail: {
        summary: 'Your profile, with your email',
        description:
          'Right after registration the profile may take a moment to appear: the request waits for it (up to ~2 s), then answers 503 with Retry-After.',
        tags: ['users'],
      },
    })
    .patch('/users/me', ({ identity, body, requestId }) => service.update(identity.userId, body, requestId), {
      auth: true,
      transform({ body }) {
        if (!isRecord(body)) return
        // Elysia would silently drop unknown fields: a client sending `email` must learn it cannot change it here.
        const unknown = Object.keys(body).filter((field) => !(field in ProfileUpdate.properties))
        if (unknown.length > 0)
          throw problems.validation(
            unknown.map((field) => ({ field: `body.${field}`, message: 'Unknown field' })),
          )
        // Trim before validation, so " Ann " is stored as "Ann" and "   " is rejected as empty.
        if (typeof body.displayName === 'string') body.displayName = normaliseDisplayName(body.displayName)
      },
      body: ProfileUpdate,
      response: { 200: OwnProfile, ...problemResponses(400, 401, 422, 503) },
      detail: {
        summary: 'Change your display name, bio or avatar',
        description:
          'Only the caller’s own profile can be changed. Publishes `user.profile_updated` when something changed. An empty object is a 422.',
        tags: ['users'],
      },
    })
    .get('/users/:id', ({ params }) => service.publicProfile(params.id), {
      auth: true,
      params: ProfileParams,
      response: { 200: PublicProfile, ...problemResponses(401, 404, 422) },
      detail: {
        summary: 'A public profile (never the email)',
        description: 'Any signed-in user may read any profile. 404 when no user has this id.',
        tags: ['users'],
      },
    })
    .get('/users', ({ query }) => service.list(query), {
      auth: true,
      transform({ query }) {
        if (typeof query.q === 'string') query.q = query.q.trim()
      },
      query: UserListQuery,
      response: { 200: PublicProfilePage, ...problemResponses(401, 422) },
      detail: {
        summary: 'Search users, or look several up by id',
        description:
          'Either `q` (ranked search, cursor-paginated) or `ids` (up to 100, one page, unknown ids left out). Search matches display names only, never emails: exact name first, then names starting with `q`, then (when `q` has at least 3 characters) names containing it; 1–2 characters match exact names and prefixes only.',
        tags: ['users'],
      },
    })
}
