// Prints `tests: N passed, N failed` from bun's JUnit report (the line CI reads).
//
//   bun scripts/junit-summary.ts reports/junit.xml [test folders...]
//
// A test file that fails before any test runs (an import that no longer resolves, say) leaves no
// trace in the report: with the folders given, every *.test.ts in them must appear in it, and each
// one missing counts as a failure and is named.
import { readFileSync } from 'node:fs'

const [file = 'reports/junit.xml', ...folders] = process.argv.slice(2)
const xml = readFileSync(file, 'utf8')
const root = /<testsuites\b([^>]*)>/.exec(xml)?.[1]
if (!root) {
  console.error(`junit-summary: no <testsuites> element in ${file}`)
  process.exit(2)
}
const attribute = (name: string) => Number(new RegExp(`\\b${name}="(\\d+)"`).exec(root)?.[1] ?? 0)
const reported = new Set([...xml.matchAll(/<testsuite\b[^>]*\bfile="([^"]+)"/g)].map((match) => match[1]))
const missing: string[] = []
for (const folder of folders)
  for await (const path of new Bun.Glob(`${folder}/**/*.test.ts`).scan({ dot: false }))
    if (!path.includes('/node_modules/') && !reported.has(path)) missing.push(path)

const total = attribute('tests')
const failed = attribute('failures') + attribute('errors')
const skipped = attribute('skipped')
for (const path of missing.sort()) console.log(`${path}: no test of it ran (it failed to load)`)
console.log(`tests: ${total - failed - skipped} passed, ${failed + missing.length} failed`)
if (skipped > 0) console.log(`(${skipped} skipped or todo — the project allows none)`)
process.exit(failed + missing.length > 0 ? 1 : 0)
