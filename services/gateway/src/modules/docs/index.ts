import { problems, requestContext } from '@parley/common'
import { Elysia } from 'elysia'
import faviconPath from 'swagger-ui-dist/favicon-32x32.png' with { type: 'file' }
import swaggerUiPackage from 'swagger-ui-dist/package.json'
import stylePath from 'swagger-ui-dist/swagger-ui.css' with { type: 'file' }
import bundlePath from 'swagger-ui-dist/swagger-ui-bundle.js' with { type: 'file' }
import type { DocsAggregator } from './service'

/**
 * Swagger UI from the pinned `swagger-ui-dist` package, served by the gateway itself: the page
 * works without internet access (private clusters without egress), and its CSP allows only
 * this origin. The files are imported as files, so `bun build --compile` embeds them in the
 * gateway's executable (the runtime image has no node_modules).
 */
/** Versioned paths: a new package version is a new URL, so the assets can be cached for good. */
export const DOCS_ASSETS_PATH = `/docs/assets/${swaggerUiPackage.version}`

const INIT_SCRIPT = `window.ui = SwaggerUIBundle({ url: '/docs/json', dom_id: '#swagger-ui', deepLinking: true, persistAuthorization: true })\n`

/** What the page loads, by file name: the package's files and the initialiser (no inline script). */
const ASSETS = new Map<string, { body: Blob | string; type: string }>([
  ['swagger-ui-bundle.js', { body: Bun.file(bundlePath), type: 'text/javascript; charset=utf-8' }],
  ['swagger-ui.css', { body: Bun.file(stylePath), type: 'text/css; charset=utf-8' }],
  ['favicon-32x32.png', { body: Bun.file(faviconPath), type: 'image/png' }],
  ['init.js', { body: INIT_SCRIPT, type: 'text/javascript; charset=utf-8' }],
])

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Parley API</title>
<link rel="icon" type="image/png" href="${DOCS_ASSETS_PATH}/favicon-32x32.png">
<link rel="stylesheet" href="${DOCS_ASSETS_PATH}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="${DOCS_ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script src="${DOCS_ASSETS_PATH}/init.js"></script>
</body>
</html>
`

/** The docs page loads only from this origin; images may be inline (Swagger UI's icons). */
export const DOCS_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'none'",
].join('; ')

/** `/docs`: one Swagger UI over `/docs/json`, the merged document of every service. */
export function docsRoutes(docs: DocsAggregator) {
  return (
    new Elysia({ name: 'gateway.docs' })
      .use(requestContext)
      .get(
        '/docs',
        () =>
          new Response(PAGE, {
            headers: { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': DOCS_CSP },
          }),
        { detail: { hide: true } },
      )
      .get(
        `${DOCS_ASSETS_PATH}/:file`,
        ({ params }) => {
          const asset = ASSETS.get(params.file)
          if (!asset) throw problems.notFound('No such docs asset')
          return new Response(asset.body, {
            headers: {
              'content-type': asset.type,
              'cache-control': 'public, max-age=31536000, immutable',
              'content-security-policy': DOCS_CSP,
            },
          })
        },
        { detail: { hide: true } },
      )
      // Replaces httpKit's per-service /docs/json (registered earlier on the same path).
      .get('/docs/json', () => docs.document(), { detail: { hide: true } })
  )
}
