// Prints `tests: N passed, N failed` from bun's JUnit report (the line CI reads).
import { readFileSync } from 'node:fs'

const file = process.argv[2] ?? 'reports/junit.xml'
const xml = readFileSync(file, 'utf8')
const root = /<testsuites\b([^>]*)>/.exec(xml)?.[1]
if (!root) {
  console.error(`junit-summary: no <testsuites> element in ${file}`)
  process.exit(2)
}
const attribute = (name: string) => Number(new RegExp(`\\b${name}="(\\d+)"`).exec(root)?.[1] ?? 0)
const total = attribute('tests')
const failed = attribute('failures') + attribute('errors')
const skipped = attribute('skipped')
console.log(`tests: ${total - failed - skipped} passed, ${failed} failed`)
if (skipped > 0) console.log(`(${skipped} skipped or todo — the project allows none)`)
