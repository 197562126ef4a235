import { expect, test } from 'bun:test'
import { existsSync } from 'node:fs'
import { BEGIN, END, renderEnvTable } from '../scripts/env-table'

const root = `${import.meta.dir}/..`
const readme = () => Bun.file(`${root}/README.md`).text()

/** The commands of the README's quick start: the lines of its first sh block, comments cut. */
async function quickStartCommands(): Promise<string[]> {
  const text = await readme()
  const section = text.slice(text.indexOf('## Quick start'))
  const block = section.slice(
    section.indexOf('```sh\n') + 6,
    section.indexOf('\n```', section.indexOf('```sh')),
  )
  return block
    .split('\n')
    .map((line) => line.replace(/\s+#.*$/, '').trim())
    .filter(Boolean)
}

/** The repository's files as they are in the working tree (tracked or new, not ignored). */
function trackedFiles(): string[] {
  const listed = Bun.spawnSync(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: root,
  })
  return listed.stdout
    .toString()
    .split('\0')
    .filter((file) => file && existsSync(`${root}/${file}`))
}

test('the README environment table matches the services config schemas', async () => {
  const text = await readme()
  const documented = text.slice(text.indexOf(BEGIN) + BEGIN.length, text.indexOf(END)).trim()
  expect(documented).toBe(renderEnvTable())
})

test('the quick start is two commands, CI runs the test one and installs nothing else', async () => {
  const commands = await quickStartCommands()
  expect(commands).toEqual(['bash scripts/dev.sh', 'bash scripts/test.sh'])
  const ci = (await Bun.file(`${root}/.ci/run`).text())
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#') && !line.startsWith('set ') && !line.startsWith('cd '))
  expect(ci).toEqual([commands[1] as string])
  const scripts = (await Bun.file(`${root}/package.json`).json()) as { scripts: Record<string, string> }
  expect(scripts.scripts.dev).toBe('bash scripts/dev.sh')
  expect(scripts.scripts.test).toBe('bash scripts/test.sh')
})

/** The folder of the project's own design documents beside the clone, which users do not have. */
const SIBLING = 'shared'

test('nothing in the repository reads the design folder beside the clone', async () => {
  // Built from parts, so this file does not match itself.
  const outside = new RegExp(`\\.\\./${SIBLING}\\b|${SIBLING}/schemas`)
  const offenders: string[] = []
  for (const file of trackedFiles()) {
    const text = await Bun.file(`${root}/${file}`).text()
    if (outside.test(text)) offenders.push(file)
  }
  expect(offenders).toEqual([])
})

/** Hosts this machine's package clients are configured with (npm, the go command, apt). */
function configuredRegistryHosts(): string[] {
  const hosts = new Set<string>()
  const addUrl = (url: string) => {
    try {
      const { hostname } = new URL(url.trim())
      if (hostname) hosts.add(hostname)
    } catch {
      // "direct", "off" and empty settings name no host
    }
  }
  const npm = Bun.spawnSync(['npm', 'config', 'get', 'registry'])
  if (npm.exitCode === 0) addUrl(npm.stdout.toString())
  const go = Bun.spawnSync(['go', 'env', 'GOPROXY'])
  if (go.exitCode === 0) for (const entry of go.stdout.toString().split(/[,|]/)) addUrl(entry)
  const apt = Bun.spawnSync(['bash', '-c', 'cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null'])
  for (const match of apt.stdout.toString().matchAll(/\bhttps?:\/\/[^\s\]]+/g)) addUrl(match[0])
  return [...hosts]
}

test('no package registry host is named in the repository (downloads use the clients’ configuration)', async () => {
  const hosts = configuredRegistryHosts()
  expect(hosts.length).toBeGreaterThan(0)
  const offenders: string[] = []
  for (const file of trackedFiles()) {
    if (file === 'bun.lock') continue // names packages, and registries only when not the default
    const text = await Bun.file(`${root}/${file}`).text()
    for (const host of hosts) if (text.includes(host)) offenders.push(`${file}: ${host}`)
  }
  expect(offenders).toEqual([])
})
