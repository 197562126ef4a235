/**
 * The Grafana dashboard model as the Grafana Foundation SDK (Apache-2.0, npm
 * @grafana/grafana-foundation-sdk) types it, shaped for JSON files: enums as their values, every
 * key optional (Grafana fills defaults when it loads a file), builder methods left out. An
 * unknown key or a wrong type anywhere, panel options and Prometheus targets included, fails.
 */
import type * as dashboard from '@grafana/grafana-foundation-sdk/dashboard'
import type * as prometheus from '@grafana/grafana-foundation-sdk/prometheus'
import type * as stat from '@grafana/grafana-foundation-sdk/stat'
import type * as table from '@grafana/grafana-foundation-sdk/table'
import type * as timeseries from '@grafana/grafana-foundation-sdk/timeseries'

type Method = (...args: never[]) => unknown

/** A value as JSON holds it: string enums as their literals, no methods, every key optional. */
export type Json<T> = T extends Method
  ? never
  : T extends string
    ? `${T}`
    : T extends number | boolean | null | undefined
      ? T
      : T extends readonly (infer Item)[]
        ? Json<Item>[]
        : T extends object
          ? { [K in keyof T as T[K] extends Method ? never : K]?: Json<T[K]> }
          : T

type PanelBase = Omit<dashboard.Panel, 'type' | 'targets' | 'options' | 'fieldConfig'> & {
  targets?: prometheus.Dataquery[]
}
type PanelOf<Type extends string, Options, Custom> = PanelBase & {
  type: Type
  options?: Options
  fieldConfig?: Omit<dashboard.FieldConfigSource, 'defaults'> & {
    defaults: Omit<dashboard.FieldConfig, 'custom'> & { custom?: Custom }
  }
}

type Panel =
  | PanelOf<'stat', stat.Options, never>
  | PanelOf<'timeseries', timeseries.Options, timeseries.FieldConfig>
  | PanelOf<'table', table.Options, table.FieldConfig>

export type DashboardFile = Json<Omit<dashboard.Dashboard, 'panels'>> & {
  panels: (Json<Panel> | Json<dashboard.RowPanel>)[]
}
