import { requestContext } from '@parley/common'
import { Elysia } from 'elysia'
import type { DocsAggregator } from './service'

const SWAGGER_UI = {
  version: '5.35.0',
  script: 'sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9',
  style: 'sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I',
}
const ASSETS = `https://cdn.jsdelivr.net/npm/swagger-ui-dist@${SWAGGER_UI.version}`

const INIT_SCRIPT =
  "window.ui = SwaggerUIBundle({ url: '/docs/json', dom_id: '#swagger-ui', deepLinking: true, persistAuthorization: true })"

const INIT_SCRIPT_HASH = `sha256-${new Bun.CryptoHasher('sha256').update(INIT_SCRIPT).digest('base64')}`

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Parley API</title>
<link rel="stylesheet" href="${ASSETS}/swagger-ui.css" integrity="${SWAGGER_UI.style}" crossorigin="anonymous">
</head>
<body>
<div id="swagger-ui"></div>
<script src="${ASSETS}/swagger-ui-bundle.js" integrity="${SWAGGER_UI.script}" crossorigin="anonymous"></script>
<script>${INIT_SCRIPT}</script>
</body>
</html>
`

/** The docs page may load the pinned Swagger UI assets (subresource integrity) and run its one inline script. */
export const DOCS_CSP = [
  "default-src 'none'",
  `script-src ${ASSETS}/ '${INIT_SCRIPT_HASH}'`,
  `style-src ${ASSETS}/ 'unsafe-inline'`,
  "img-src 'self' data: https://cdn.jsdelivr.net",
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
      // Replaces httpKit's per-service /docs/json (registered earlier on the same path).
      .get('/docs/json', () => docs.document(), { detail: { hide: true } })
  )
}
