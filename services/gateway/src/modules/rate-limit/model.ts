import { ConfigError } from '@parley/common'
import { type Static, Type as t } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'

export const RateLimitPolicy = t.Object(
  {
    limit: t.Integer({ minimum: 1, description: 'Requests allowed per window (also the burst size)' }),
    windowSeconds: t.Integer({ minimum: 1, description: 'Window length in seconds' }),
  },
  { additionalProperties: false },
)
export type RateLimitPolicy = Static<typeof RateLimitPolicy>

/**
 * The policies the gateway applies, by name. Anonymous routes are keyed by client IP
 * (login by IP + email), everything else by the authenticated user.
 */
export const DEFAULT_POLICIES = {
  /** POST /auth/login, per IP + email: slows password guessing against one account. */
  login: { limit: 5, windowSeconds: 60 },
  /**
   * POST /auth/login, per email from any IP: bounds credential stuffing spread over many
   * addresses, loose enough that a stranger exhausting it locks the owner out only briefly.
   */
  loginEmail: { limit: 20, windowSeconds: 900 },
  /** POST /auth/register, per IP. */
  register: { limit: 5, windowSeconds: 3_600 },
  /** POST /auth/refresh, per IP. */
  refresh: { limit: 30, windowSeconds: 60 },
  /** /auth/verify-email/*, per user (on top of `authenticated`): the 6-digit code must not be guessable or spammable. */
  verification: { limit: 5, windowSeconds: 900 },
  /** POST /conversations, per user (on top of `authenticated`). */
  conversations: { limit: 60, windowSeconds: 3_600 },
  /** Users added to conversations (at creation or later), per inviting user, counted per invitee. */
  invitations: { limit: 500, windowSeconds: 3_600 },
  /** Adding and removing reactions (`…/messages/:messageId/reactions/:emoji`), per user: each is pushed to every participant. */
  reactions: { limit: 120, windowSeconds: 60 },
  /** Other anonymous routes (JWKS), per IP. */
  anonymous: { limit: 300, windowSeconds: 60 },
  /** WebSocket typing frames, per user and conversation. */
  typing: { limit: 20, windowSeconds: 60 },
  /** WebSocket presence (away/online) frames, per user: each change is pushed to all their contacts. */
  presence: { limit: 30, windowSeconds: 60 },
  /** Every authenticated route (and the WebSocket handshake), per user. */
  authenticated: { limit: 600, windowSeconds: 60 },
} satisfies Record<string, RateLimitPolicy>

export type PolicyName = keyof typeof DEFAULT_POLICIES
export type RateLimitPolicies = Record<PolicyName, RateLimitPolicy>

export const PolicyOverrides = t.Partial(
  t.Object(
    Object.fromEntries(Object.keys(DEFAULT_POLICIES).map((name) => [name, RateLimitPolicy])) as Record<
      PolicyName,
      typeof RateLimitPolicy
    >,
    { additionalProperties: false },
  ),
)

/** Parses RATE_LIMIT_POLICIES (JSON overrides merged over the defaults); a bad value names the variable. */
export function parsePolicies(raw: string): RateLimitPolicies {
  let overrides: unknown
  try {
    overrides = JSON.parse(raw)
  } catch {
    throw new ConfigError('RATE_LIMIT_POLICIES', 'must be a JSON object')
  }
  const error = Value.Errors(PolicyOverrides, overrides).First()
  if (error)
    throw new ConfigError(
      'RATE_LIMIT_POLICIES',
      `must match {<${Object.keys(DEFAULT_POLICIES).join('|')}>: {limit, windowSeconds}}: ${error.path || '/'} ${error.message}`,
    )
  return { ...DEFAULT_POLICIES, ...(overrides as Partial<RateLimitPolicies>) }
}
