import type { Logger } from './logger'

type ShutdownStep = { name: string; run: () => Promise<unknown> | unknown }

/**
 * Readiness and ordered shutdown of one process. Steps run in stages: `drain` (stop taking
 * work: HTTP listener, consumers, relays) in parallel, then `close` (clients) in reverse
 * registration order, so nothing uses a client after it is closed, then `final` (the ops
 * listener, which answers /ready with 503 until everything else is done).
 */
export class Lifecycle {
  private readyFlag = false
  private stopping: Promise<void> | undefined
  private readonly drainSteps: ShutdownStep[] = []
  private readonly closeSteps: ShutdownStep[] = []
  private readonly finalSteps: ShutdownStep[] = []

  constructor(private readonly logger: Logger) {}

  get ready(): boolean {
    return this.readyFlag && !this.stopping
  }

  get shuttingDown(): boolean {
    return this.stopping !== undefined
  }

  markReady(): void {
    this.readyFlag = true
  }

  onDrain(name: string, run: ShutdownStep['run']): this {
    this.drainSteps.push({ name, run })
    return this
  }

  onClose(name: string, run: ShutdownStep['run']): this {
    this.closeSteps.push({ name, run })
    return this
  }

  onFinal(name: string, run: ShutdownStep['run']): this {
    this.finalSteps.push({ name, run })
    return this
  }

  /** Runs every step once; later calls return the same promise. */
  shutdown(delayMs = 0): Promise<void> {
    this.stopping ??= this.runShutdown(delayMs)
    return this.stopping
  }

  private async runShutdown(delayMs: number): Promise<void> {
    this.logger.info({ delayMs }, 'shutting down: readiness is false')
    if (delayMs > 0) await Bun.sleep(delayMs)
    await Promise.all(this.drainSteps.map((step) => this.runStep(step)))
    for (const step of [...this.closeSteps].reverse()) await this.runStep(step)
    await Promise.all(this.finalSteps.map((step) => this.runStep(step)))
    this.logger.info('shutdown complete')
  }

  private async runStep(step: ShutdownStep): Promise<void> {
    try {
      await step.run()
    } catch (error) {
      this.logger.warn({ err: error, step: step.name }, 'shutdown step failed')
    }
  }
}

/**
 * Exits 0 once the lifecycle has shut down after SIGTERM/SIGINT, or 1 if the grace period
 * runs out first. Bun as PID 1 has no default signal handler, so this is what stops it.
 */
export function exitOnSignals(
  lifecycle: Lifecycle,
  logger: Logger,
  options: { graceMs: number; delayMs: number },
): void {
  const onSignal = (signal: NodeJS.Signals) => {
    if (lifecycle.shuttingDown) return
    logger.info({ signal }, 'signal received')
    const deadline = setTimeout(() => {
      logger.error({ graceMs: options.graceMs }, 'grace period exceeded, exiting')
      process.exit(1)
    }, options.delayMs + options.graceMs)
    deadline.unref()
    lifecycle.shutdown(options.delayMs).then(() => process.exit(0))
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
}
