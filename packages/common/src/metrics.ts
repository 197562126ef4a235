import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'

export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/**
 * One registry per app instance (tests build several apps in one process), with
 * get-or-create accessors so modules can declare their metrics where they use them.
 */
export class Metrics {
  readonly registry = new Registry()
  private readonly byName = new Map<string, Counter<string> | Gauge<string> | Histogram<string>>()

  constructor(readonly service: string) {
    this.registry.setDefaultLabels({ service })
    collectDefaultMetrics({ register: this.registry })
  }

  counter<L extends string>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
    return this.getOrCreate(
      name,
      () => new Counter({ name, help, labelNames, registers: [this.registry] }),
    ) as Counter<L>
  }

  gauge<L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[] = [],
    collect?: (this: Gauge<L>) => void | Promise<void>,
  ): Gauge<L> {
    return this.getOrCreate(
      name,
      () =>
        new Gauge({ name, help, labelNames, registers: [this.registry], ...(collect ? { collect } : {}) }),
    ) as Gauge<L>
  }

  histogram<L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[] = [],
    buckets: number[] = LATENCY_BUCKETS,
  ): Histogram<L> {
    return this.getOrCreate(
      name,
      () => new Histogram({ name, help, labelNames, buckets, registers: [this.registry] }),
    ) as Histogram<L>
  }

  private getOrCreate(name: string, create: () => Counter<string> | Gauge<string> | Histogram<string>) {
    let metric = this.byName.get(name)
    if (!metric) {
      metric = create()
      this.byName.set(name, metric)
    }
    return metric
  }
}

/** Counts cache lookups by cache name; every cache-aside in the services reports here. */
export function cacheMetrics(metrics: Metrics) {
  return metrics.counter('cache_requests_total', 'Cache lookups by cache and result', ['cache', 'result'])
}
