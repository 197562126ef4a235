import { eventBusFor, type Runtime, redisFor, type VerifierOptions, verifierFor } from '@parley/common'
import type { EventBus } from '@parley/common/events'
import { postgresFor } from '@parley/common/postgres'
import type { AppDeps } from './app'
import { type Config, retryDelays } from './config'
import { schema } from './db/schema'
import { subscribeMail } from './modules/mail/consumers'
import { EmailDeliveries } from './modules/mail/deliveries'
import { Mailer } from './modules/mail/mailer'
import { PresenceReader } from './modules/mail/presence'
import { MailService } from './modules/mail/service'
import { MessageEmailThrottle } from './modules/mail/throttle'
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

export type NotificationDeps = AppDeps & { bus: EventBus }

/** Connects what the notification service needs and registers how to release it on shutdown. */
export async function connect(
  config: Config,
  runtime: Runtime,
  options: ConnectOptions = {},
): Promise<NotificationDeps> {
  const { logger, metrics, lifecycle } = runtime
  const postgres = postgresFor(config, runtime, schema)
  const redis = redisFor(config, runtime, options.redisKeyPrefix)
  const mailer = new Mailer(
    {
      url: config.SMTP_URL,
      maxConnections: config.SMTP_MAX_CONNECTIONS,
      from: config.MAIL_FROM,
      replyTo: config.MAIL_REPLY_TO,
    },
    logger,
  )
  lifecycle.onClose('smtp', () => mailer.close())

  const directory = new UserDirectory(postgres.db)
  const notifications = new NotificationService(postgres.db, directory, metrics)
  const mail = new MailService({
    mailer,
    deliveries: new EmailDeliveries(postgres.db),
    directory,
    presence: new PresenceReader(redis),
    throttle: new MessageEmailThrottle(redis),
    metrics,
    logger,
  })

  const bus = eventBusFor(config, runtime, 'parley/notification')
  // Three queues, so one slow or failing dependency holds back nothing else: an SMTP outage
  // delays emails only, never in-app notifications or the users projection.
  const retryDelaysMs = retryDelays(config)
  await subscribeUserDirectory(bus, { db: postgres.db, directory }, retryDelaysMs)
  await subscribeInbox(bus, notifications, retryDelaysMs)
  await subscribeMail(bus, mail, retryDelaysMs)
  await bus.start()

  const verifier = verifierFor(config, runtime, options.jwks ? { jwks: options.jwks } : {})
  return {
    runtime,
    config,
    verifier,
    notifications,
    bus,
    readiness: [
      { name: 'postgres', check: postgres.check },
      { name: 'redis', check: () => redis.ping(), critical: false },
      { name: 'broker', check: () => bus.check(), critical: false },
    ],
  }
}
