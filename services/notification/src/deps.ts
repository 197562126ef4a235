import { eventBusFor, type Runtime, redisFor, type VerifierOptions, verifierFor } from '@parley/common'
import type { EventBus } from '@parley/common/events'
import { postgresFor, startOutboxRelay } from '@parley/common/postgres'
import {
  postgresPurge,
  processedEventsPurge,
  type RetentionJob,
  startRetention,
} from '@parley/common/retention'
import type { AppDeps } from './app'
import { type Config, retryDelays } from './config'
import { schema } from './db/schema'
import { subscribeMail } from './modules/mail/consumers'
import { EmailDeliveries } from './modules/mail/deliveries'
import { Mailer } from './modules/mail/mailer'
import { PresenceReader } from './modules/mail/presence'
import { MailService } from './modules/mail/service'
import { MessageEmailThrottle, RecipientEmailCap } from './modules/mail/throttle'
import { subscribeInbox } from './modules/notifications/consumers'
import { NotificationService } from './modules/notifications/service'
import { subscribeUserDirectory } from './modules/users/consumers'
import { UserDirectory } from './modules/users/service'

export type ConnectOptions = {
  /** Verify tokens against this key set instead of fetching JWKS_URL (tests). */
  jwks?: Exclude<VerifierOptions['jwks'], URL>
  /** Prefix of every Redis key, presence keys included (tests isolate themselves with it). */
  redisKeyPrefix?: string
}

export type NotificationDeps = AppDeps & { bus: EventBus; retention: RetentionJob }

/** Connects what the notification service needs and registers how to release it on shutdown. */
export async function connect(
  config: Config,
  runtime: Runtime,
  options: ConnectOptions = {},
): Promise<NotificationDeps> {
  const { logger, metrics, lifecycle } = runtime
  const postgres = postgresFor(config, runtime, schema)
  const redis = redisFor(config, runtime, options.redisKeyPrefix)
  const mailer = (maxConnections: number) =>
    new Mailer(
      { url: config.SMTP_URL, maxConnections, from: config.MAIL_FROM, replyTo: config.MAIL_REPLY_TO },
      logger,
    )
  const mailers = {
    bulk: mailer(config.SMTP_MAX_CONNECTIONS),
    transactional: mailer(config.SMTP_TRANSACTIONAL_MAX_CONNECTIONS),
  }
  lifecycle.onClose('smtp', () => {
    mailers.bulk.close()
    mailers.transactional.close()
  })

  const directory = new UserDirectory(postgres.db)
  const notifications = new NotificationService(postgres.db, directory, metrics)
  const mail = new MailService({
    mailers,
    deliveries: new EmailDeliveries(postgres.db),
    directory,
    presence: new PresenceReader(redis),
    throttle: new MessageEmailThrottle(redis),
    cap: new RecipientEmailCap(redis, config.MESSAGE_EMAIL_HOURLY_CAP),
    metrics,
    logger,
  })

  const bus = eventBusFor(config, runtime, 'parley/notification')
  // Separate queues, so one slow or failing dependency holds back nothing else: an SMTP outage
  // delays emails only, never in-app notifications or the users projection; bulk email never
  // delays verification codes.
  const retryDelaysMs = retryDelays(config)
  await subscribeUserDirectory(bus, { db: postgres.db, directory }, retryDelaysMs)
  await subscribeInbox(bus, notifications, retryDelaysMs)
  await subscribeMail(bus, mail, retryDelaysMs)
  await bus.start()
  await startOutboxRelay(postgres.sql, bus, runtime, { maxAttempts: config.OUTBOX_MAX_ATTEMPTS })

  const retention = startRetention(
    runtime,
    [
      processedEventsPurge(postgres.sql, config.PROCESSED_EVENTS_RETENTION_DAYS),
      // Read or not: the message itself stays in chat, and a user who never reads would otherwise
      // be the one whose rows pile up forever.
      postgresPurge(postgres.sql, {
        table: 'notifications',
        column: 'created_at',
        olderThanDays: config.NOTIFICATION_RETENTION_DAYS,
      }),
      // completed_at is null while a claim is live (`sending`): such a row never matches.
      postgresPurge(postgres.sql, {
        table: 'email_deliveries',
        column: 'completed_at',
        olderThanDays: config.EMAIL_DELIVERY_RETENTION_DAYS,
      }),
    ],
    config,
  )

  const verifier = verifierFor(config, runtime, options.jwks ? { jwks: options.jwks } : {})
  return {
    runtime,
    config,
    verifier,
    notifications,
    bus,
    retention,
    readiness: [
      { name: 'postgres', check: postgres.check },
      { name: 'redis', check: () => redis.ping(), critical: false },
      { name: 'broker', check: () => bus.check(), critical: false },
    ],
  }
}
