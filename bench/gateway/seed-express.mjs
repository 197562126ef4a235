// The seed-style gateway, as the documents Parley grew from describe it, for bench/gateway/proxy.ts
// to measure as a reference line: Express 5 + http-proxy-middleware + jsonwebtoken (HS256 shared
// secret) + a per-user fixed-window limit in Redis (INCR + PEXPIRE per request), on Node.js.
// Env: PORT, TARGET (upstream base URL), JWT_SECRET, REDIS_URL, RATE_LIMIT (per minute).
import express from 'express'
import { createProxyMiddleware } from 'http-proxy-middleware'
import Redis from 'ioredis'
import jwt from 'jsonwebtoken'

const redis = new Redis(process.env.REDIS_URL)
const limit = Number(process.env.RATE_LIMIT ?? 1_000_000_000)
const secret = process.env.JWT_SECRET
const app = express()
app.disable('x-powered-by')

app.use('/api/v1', async (request, response, next) => {
  const token = /^Bearer (.+)$/.exec(request.headers.authorization ?? '')?.[1]
  let claims
  try {
    claims = jwt.verify(token ?? '', secret)
  } catch {
    return response.status(401).json({ error: 'unauthorized' })
  }
  const key = `seed-bench:${claims.sub}:${Math.floor(Date.now() / 60_000)}`
  const count = await redis.incr(key)
  if (count === 1) await redis.pexpire(key, 60_000)
  if (count > limit) return response.status(429).json({ error: 'too many requests' })
  next()
})
app.use('/api/v1', createProxyMiddleware({ target: process.env.TARGET, changeOrigin: false }))
app.listen(Number(process.env.PORT), '127.0.0.1')
