import { type Metrics, newId, problems } from '@parley/common'
import { buildEvent } from '@parley/common/events'
import { enqueueEvents } from '@parley/common/postgres'
import { eq } from 'drizzle-orm'
import type { Db } from '../../db'
import { credentials } from '../../db/schema'
import { EVENT_SOURCE } from '../../events'
import type { SessionService } from '../sessions/service'
import type { IssuedSession } from '../tokens/service'
import type { LoginBody, Me, RegisterBody, User } from './model'
import type { PasswordHasher } from './password'

const DEFAULT_ROLES = ['user']

/** Logins are by email, compared case-insensitively: every email is stored trimmed and lower-cased. */
export function normaliseEmail(email: string): string {
  return email.trim().toLowerCase()
}

type CredentialsRow = typeof credentials.$inferSelect

function toUser(row: CredentialsRow): User {
  return {
    id: row.id,
    email: row.email,
    displayName: row.displayName,
    emailVerified: row.emailVerified,
    createdAt: row.createdAt.toISOString(),
  }
}

export type SignedIn = { user: User; session: IssuedSession }

/** Registration, login and the caller's own account. */
export class AccountService {
  private readonly registrations
  private readonly logins

  constructor(
    private readonly db: Db,
    private readonly hasher: PasswordHasher,
    private readonly sessions: SessionService,
    metrics: Metrics,
  ) {
    this.registrations = metrics.counter('auth_registrations_total', 'Registrations by outcome', ['outcome'])
    this.logins = metrics.counter('auth_logins_total', 'Logins by outcome', ['outcome'])
  }

  /** Creates the account, its first session and `user.registered`, all in one transaction. */
  async register(input: RegisterBody, correlationId: string | undefined): Promise<SignedIn> {
    const email = normaliseEmail(input.email)
    const displayName = input.displayName.trim()
    if (normaliseEmail(input.password) === email) {
      this.registrations.inc({ outcome: 'rejected' })
      throw problems.validation([{ field: 'body.password', message: 'must not be the email address' }])
    }
    const passwordHash = await this.hasher.hash(input.password)
    const signedIn = await this.db.transaction(async (tx) => {
      const [row] = await tx
        .insert(credentials)
        .values({ id: newId(), email, displayName, passwordHash, roles: DEFAULT_ROLES })
        .onConflictDoNothing({ target: credentials.email })
        .returning()
      if (!row) return undefined
      await enqueueEvents(tx, [
        buildEvent(
          EVENT_SOURCE,
          'user.registered',
          {
            userId: row.id,
            email: row.email,
            displayName: row.displayName,
            emailVerified: row.emailVerified,
            roles: row.roles,
            createdAt: row.createdAt.toISOString(),
          },
          { correlationId },
        ),
      ])
      return { user: toUser(row), session: await this.sessions.start(tx, row) }
    })
    if (!signedIn) {
      this.registrations.inc({ outcome: 'conflict' })
      throw problems.conflict('An account with this email address already exists')
    }
    this.registrations.inc({ outcome: 'created' })
    return signedIn
  }

  /**
   * Unknown email and wrong password get the same problem after the same work: an unknown
   * email is verified against a dummy hash, so timing does not reveal which accounts exist.
   */
  async login(input: LoginBody): Promise<SignedIn> {
    const [row] = await this.db
      .select()
      .from(credentials)
      .where(eq(credentials.email, normaliseEmail(input.email)))
    const valid = row
      ? await this.hasher.verify(input.password, row.passwordHash)
      : await this.hasher.verifyNothing(input.password)
    if (!row || !valid) {
      this.logins.inc({ outcome: 'invalid_credentials' })
      throw problems.unauthorized('The email address or password is incorrect')
    }
    if (this.hasher.needsRehash(row.passwordHash)) {
      await this.db
        .update(credentials)
        .set({ passwordHash: await this.hasher.hash(input.password), updatedAt: new Date() })
        .where(eq(credentials.id, row.id))
    }
    const session = await this.sessions.start(this.db, row)
    this.logins.inc({ outcome: 'success' })
    return { user: toUser(row), session }
  }

  async me(userId: string, sessionId: string): Promise<Me> {
    const [row] = await this.db.select().from(credentials).where(eq(credentials.id, userId))
    if (!row) throw problems.unauthorized('The account no longer exists')
    return { ...toUser(row), roles: row.roles, sessionId }
  }
}
