import { AccessTokenVerifier, type Runtime, type VerifierOptions } from '@parley/common'
import { EventBus } from '@parley/common/events'
import { createPostgres } from '@parley/common/postgres'
import { closeRedis, createRedis } from '@parley/common/redis'
import type { AppDeps } from './app'
import { type Config, retryDelays } from './config'
import { subscribeConsumers } from './consumers'
import { schema } from './db/schema'
import { EmailDeliveries } from './modules/mail/deliveries'
import { Mailer } from './modules/mail/mailer'
import { PresenceReader } from './modules/mail/presence'
import { MailService } from './modules/mail/service'
import { MessageEmailThrottle } from './modules/mail/throttle'
import { NotificationService } from './modules/notifications/service'
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
  const postgres = createPostgres(config.DATABASE_URL, {
    schema,
    max: config.DATABASE_POOL_MAX,
    applicationName: 'parley-notification',
  })
  lifecycle.onClose('postgres', postgres.close)
  const redis = createRedis(config.REDIS_URL, logger, { keyPrefix: options.redisKeyPrefix })
  lifecycle.onClose('redis', () => closeRedis(redis))
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

  const bus = new EventBus({
    url: config.AMQP_URL,
    exchange: config.AMQP_EXCHANGE,
    source: 'parley/notification',
    prefetch: config.AMQP_PREFETCH,
    logger,
    metrics,
  })
  await subscribeConsumers(
    bus,
    { db: postgres.db, directory, inbox: notifications, mail },
    retryDelays(config),
  )
  await bus.start()
  lifecycle.onDrain('consumers', () => bus.stopConsuming(config.SHUTDOWN_GRACE_MS))
  lifecycle.onClose('broker', () => bus.close())

  const verifier = new AccessTokenVerifier({
    jwks: options.jwks ?? new URL(config.JWKS_URL),
    issuer: config.JWT_ISSUER,
    audience: config.JWT_AUDIENCE,
  })
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
