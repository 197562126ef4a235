/**
 * The docs page in a real browser: Debian's Chromium, headless, driven by playwright-core, on the
 * end-to-end stack and without internet access (every asset comes from the gateway). Every
 * service's tag is rendered, "Try it out" on a public route answers 200, and the console stays
 * free of errors (a CSP violation or a failed asset shows there).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { ROSTER } from '@parley/contracts'
import { type Browser, chromium } from 'playwright-core'
import { type Stack, startStack } from './stack'

let stack: Stack
let browser: Browser

/** Debian's package installs `chromium` (scripts/setup.sh installs it when missing). */
function chromiumPath(): string {
  const path = Bun.which('chromium') ?? Bun.which('chromium-browser')
  if (!path) throw new Error('no chromium on PATH: run scripts/setup.sh (it installs the Debian package)')
  return path
}

beforeAll(async () => {
  stack = await startStack()
  // No sandbox: the suite runs as root in CI, where Chromium refuses its sandbox.
  browser = await chromium.launch({ executablePath: chromiumPath(), args: ['--no-sandbox'] })
}, 120_000)

afterAll(async () => {
  await browser?.close()
  await stack?.stop()
}, 60_000)

describe('Swagger UI in Chromium', () => {
  test('renders every service, runs "Try it out" on a public route, logs no error', async () => {
    const page = await browser.newPage()
    const problems: string[] = []
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(`console: ${message.text()}`)
    })
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`))
    page.on('requestfailed', (request) => problems.push(`request failed: ${request.url()}`))
    page.on('request', (request) => {
      if (!request.url().startsWith(stack.gateway.url) && !request.url().startsWith('data:'))
        problems.push(`request off the gateway: ${request.url()}`)
    })

    const loaded = await page.goto(`${stack.gateway.url}/docs`, { waitUntil: 'networkidle' })
    expect(loaded?.status()).toBe(200)
    await page.locator('.opblock-tag').first().waitFor({ timeout: 30_000 })
    const tags = await page
      .locator('.opblock-tag')
      .evaluateAll((nodes) => nodes.map((node) => node.getAttribute('data-tag')))
    // One tag per service, the gateway's own routes included, and no other.
    expect(tags.toSorted()).toEqual(ROSTER.map((service) => service.name).toSorted())

    const path = '/api/v1/auth/.well-known/jwks.json'
    const operation = page.locator('.opblock').filter({
      has: page.locator(`.opblock-summary-path[data-path="${path}"]`),
    })
    await operation.locator('.opblock-summary').click()
    await operation.getByRole('button', { name: 'Try it out' }).click()
    await operation.getByRole('button', { name: 'Execute' }).click()
    const status = operation.locator('.live-responses-table .response .response-col_status')
    await status.waitFor({ timeout: 20_000 })
    expect((await status.textContent())?.trim()).toBe('200')
    expect(
      await operation.locator('.live-responses-table .response .response-col_description').textContent(),
    ).toContain('"keys"')

    await page.close()
    expect(problems).toEqual([])
  }, 90_000)
})
