import { expect, test } from 'bun:test'
import { BEGIN, END, renderEnvTable } from '../scripts/env-table'

test('the README environment table matches the services config schemas', async () => {
  const readme = await Bun.file(`${import.meta.dir}/../README.md`).text()
  const documented = readme.slice(readme.indexOf(BEGIN) + BEGIN.length, readme.indexOf(END)).trim()
  expect(documented).toBe(renderEnvTable())
})

test('the README shows the two commands CI relies on', async () => {
  const readme = await Bun.file(`${import.meta.dir}/../README.md`).text()
  expect(readme).toContain('bun run dev')
  expect(readme).toContain('bun run test')
  const ci = await Bun.file(`${import.meta.dir}/../.ci/run`).text()
  expect(ci).toContain('bun run test')
})
