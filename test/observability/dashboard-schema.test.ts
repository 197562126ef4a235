import { describe, expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import ts from 'typescript'
import { loadDashboards } from './dashboards'

const ROOT = join(import.meta.dir, '..', '..')

/** Type-checks each dashboard file as a literal against the SDK's dashboard model (dashboard-schema.ts). */
function schemaErrors(): Record<string, string[]> {
  const dashboards = loadDashboards()
  const sources = new Map(
    dashboards.map(({ file, text }) => [
      join(import.meta.dir, `${file}.check.ts`),
      `import type { DashboardFile } from './dashboard-schema'\nexport const dashboard = ${text.trim()} satisfies DashboardFile\n`,
    ]),
  )
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ESNext,
    module: ts.ModuleKind.Preserve,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
  }
  const host = ts.createCompilerHost(options)
  const getSourceFile = host.getSourceFile
  host.getSourceFile = (fileName, languageVersion, ...rest) => {
    const text = sources.get(fileName)
    return text === undefined
      ? getSourceFile(fileName, languageVersion, ...rest)
      : ts.createSourceFile(fileName, text, languageVersion)
  }
  const fileExists = host.fileExists
  host.fileExists = (fileName) => sources.has(fileName) || fileExists(fileName)
  const program = ts.createProgram([...sources.keys()], options, host)
  const errors: Record<string, string[]> = Object.fromEntries(dashboards.map(({ file }) => [file, []]))
  for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
    const file = diagnostic.file?.fileName ?? ''
    const name = file.endsWith('.check.ts')
      ? file.slice(file.lastIndexOf('/') + 1, -'.check.ts'.length)
      : file
    const line =
      diagnostic.file && diagnostic.start !== undefined
        ? diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start).line
        : -1
    const list = errors[name] ?? []
    list.push(`line ${line}: ${ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n').slice(0, 400)}`)
    errors[name] = list
  }
  return errors
}

describe('Grafana dashboards', () => {
  test('every dashboard matches the Grafana Foundation SDK dashboard model (panels, options, targets)', () => {
    const errors = schemaErrors()
    expect(Object.keys(errors).length).toBeGreaterThan(0)
    expect(errors).toEqual(Object.fromEntries(Object.keys(errors).map((file) => [file, []])))
  }, 60_000)

  test('a typo in a dashboard is caught', () => {
    // The check itself: a misspelt option key must fail, or the test above proves nothing.
    const source = `import type { DashboardFile } from './dashboard-schema'
export const dashboard = { schemaVersion: 39, templating: {}, annotations: {}, panels: [{ type: 'stat', options: { colourMode: 'value' } }] } satisfies DashboardFile
`
    const fileName = join(import.meta.dir, 'typo.check.ts')
    const options: ts.CompilerOptions = {
      module: ts.ModuleKind.Preserve,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      types: [],
    }
    const host = ts.createCompilerHost(options)
    const getSourceFile = host.getSourceFile
    host.getSourceFile = (name, version, ...rest) =>
      name === fileName ? ts.createSourceFile(name, source, version) : getSourceFile(name, version, ...rest)
    const fileExists = host.fileExists
    host.fileExists = (name) => name === fileName || fileExists(name)
    const diagnostics = ts.getPreEmitDiagnostics(ts.createProgram([fileName], options, host))
    expect(diagnostics.map((d) => ts.flattenDiagnosticMessageText(d.messageText, ' ')).join(' ')).toContain(
      'colourMode',
    )
  }, 60_000)

  test('every panel and variable takes its data source from the `datasource` variable', () => {
    for (const { file, text } of loadDashboards()) {
      const dashboard = JSON.parse(text) as {
        templating: { list: { name: string; type: string; datasource?: { uid?: string } }[] }
        panels: {
          type: string
          title: string
          datasource?: { uid?: string }
          targets?: { datasource?: { uid?: string } }[]
        }[]
      }
      expect(dashboard.templating.list.find((v) => v.name === 'datasource')?.type).toBe('datasource')
      for (const variable of dashboard.templating.list.filter((v) => v.type === 'query'))
        expect(`${file} $${variable.name}: ${variable.datasource?.uid}`).toBe(
          `${file} $${variable.name}: \${datasource}`,
        )
      for (const panel of dashboard.panels.filter((p) => p.type !== 'row')) {
        expect(`${file} ${panel.title}: ${panel.datasource?.uid}`).toBe(
          `${file} ${panel.title}: \${datasource}`,
        )
        for (const target of panel.targets ?? [])
          expect(`${file} ${panel.title}: ${target.datasource?.uid}`).toBe(
            `${file} ${panel.title}: \${datasource}`,
          )
      }
    }
    expect(
      readFileSync(join(ROOT, 'node_modules/@grafana/grafana-foundation-sdk/package.json'), 'utf8'),
    ).toContain('"license": "Apache-2.0"')
  })
})
