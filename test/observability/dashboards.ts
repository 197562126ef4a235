import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

export const DASHBOARDS_DIR = join(import.meta.dir, '..', '..', 'charts', 'parley', 'dashboards')
export const RULES_FILE = join(import.meta.dir, '..', '..', 'charts', 'parley', 'rules', 'parley.rules.yaml')

type Target = { expr: string; refId: string; instant?: boolean; range?: boolean; format?: string }
type Panel = { id: number; type: string; title: string; targets?: Target[] }
type Variable = {
  name: string
  type: string
  query?: string | { query: string }
  includeAll?: boolean
  allValue?: string
  current?: { value?: string | string[] }
}
export type DashboardJson = {
  uid: string
  title: string
  panels: Panel[]
  templating: { list: Variable[] }
}

export type PanelQuery = {
  dashboard: string
  panel: string
  refId: string
  /** A stat or table target: Grafana runs it as an instant query at the end of the range. */
  instant: boolean
  expr: string
}

export function loadDashboards(): { file: string; dashboard: DashboardJson; text: string }[] {
  return readdirSync(DASHBOARDS_DIR)
    .filter((file) => file.endsWith('.json'))
    .sort()
    .map((file) => {
      const text = readFileSync(join(DASHBOARDS_DIR, file), 'utf8')
      return { file, text, dashboard: JSON.parse(text) as DashboardJson }
    })
}

/** The time a panel is drawn for, as Grafana derives its built-in variables from it. */
export type Window = { rangeSeconds: number; stepSeconds: number; scrapeIntervalSeconds: number }

/**
 * A query variable's value as Grafana substitutes it for its current selection: "All" becomes the
 * variable's allValue (these dashboards set one on every includeAll variable).
 */
function variableValue(variable: Variable): string {
  const current = variable.current?.value
  const values = Array.isArray(current) ? current : current === undefined ? [] : [current]
  if (values.includes('$__all') || values.length === 0) {
    if (!variable.allValue) throw new Error(`variable ${variable.name} has no allValue`)
    return variable.allValue
  }
  return values.length === 1 ? String(values[0]) : `(${values.join('|')})`
}

/** Replaces Grafana's variables the way Grafana does before the query reaches Prometheus. */
export function substitute(expr: string, variables: Variable[], window: Window): string {
  // Grafana: $__rate_interval = max($__interval + scrape interval, 4 × scrape interval).
  const rateInterval = Math.max(
    window.stepSeconds + window.scrapeIntervalSeconds,
    4 * window.scrapeIntervalSeconds,
  )
  const builtins: Record<string, string> = {
    __rate_interval: `${rateInterval}s`,
    __interval: `${window.stepSeconds}s`,
    __range: `${window.rangeSeconds}s`,
  }
  const values: Record<string, string> = { ...builtins }
  for (const variable of variables)
    if (variable.type === 'query') values[variable.name] = variableValue(variable)
  const replaced = expr.replace(/\$\{?(\w+)\}?/g, (whole, name: string) => {
    // label_replace's "${1}" is PromQL, not a Grafana variable.
    if (/^\d+$/.test(name)) return whole
    const value = values[name]
    if (value === undefined) throw new Error(`unknown Grafana variable ${whole} in ${expr}`)
    return value
  })
  return replaced
}

/** Every target of every panel (rows excluded), with its variables substituted. */
export function panelQueries(window: Window): PanelQuery[] {
  return loadDashboards().flatMap(({ dashboard }) =>
    dashboard.panels
      .filter((panel) => panel.type !== 'row')
      .flatMap((panel) =>
        (panel.targets ?? []).map((target) => ({
          dashboard: dashboard.title,
          panel: panel.title,
          refId: target.refId,
          instant: target.instant === true,
          expr: substitute(target.expr, dashboard.templating.list, window),
        })),
      ),
  )
}

/** The query variables' `label_values(metric, label)` lookups, with earlier variables substituted. */
export function variableQueries(
  window: Window,
): { dashboard: string; name: string; label: string; match: string }[] {
  return loadDashboards().flatMap(({ dashboard }) =>
    dashboard.templating.list
      .filter((variable) => variable.type === 'query')
      .map((variable) => {
        const query = typeof variable.query === 'string' ? variable.query : (variable.query?.query ?? '')
        const parsed = /^label_values\((.*),\s*(\w+)\)$/.exec(query)
        if (!parsed)
          throw new Error(`${dashboard.title}: variable ${variable.name} is not label_values(…): ${query}`)
        return {
          dashboard: dashboard.title,
          name: variable.name,
          label: parsed[2] as string,
          match: substitute(parsed[1] as string, dashboard.templating.list, window),
        }
      }),
  )
}
