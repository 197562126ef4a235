// Local SMTP sink for dev and tests: accepts any mail on 127.0.0.1:1025 (no auth, no TLS), keeps it
// in memory and serves a small Mailpit-like JSON API on 127.0.0.1:8025.
//   GET    /api/v1/messages?to=<addr>&limit=<n>  -> { total, count, messages: [...] } newest first
//   DELETE /api/v1/messages                      -> clears everything
//   GET    /health                               -> 200 ok
import { type AddressObject, simpleParser } from 'mailparser'
import { SMTPServer, type SMTPServerDataStream, type SMTPServerSession } from 'smtp-server'

interface StoredMessage {
  id: string
  from: string
  to: string[]
  subject: string
  text: string
  html: string
  date: string
}

const host = process.env.MAIL_SINK_HOST ?? '127.0.0.1'
const smtpPort = Number(process.env.MAIL_SINK_SMTP_PORT ?? 1025)
const httpPort = Number(process.env.MAIL_SINK_HTTP_PORT ?? 8025)
const maxMessages = Number(process.env.MAIL_SINK_MAX_MESSAGES ?? 5000)
const defaultLimit = 50

// Oldest first; the API reverses it.
let messages: StoredMessage[] = []

const addresses = (field: AddressObject | AddressObject[] | undefined): string[] =>
  (Array.isArray(field) ? field : field ? [field] : [])
    .flatMap((group) => group.value)
    .flatMap((entry) => [entry.address, ...(entry.group ?? []).map((member) => member.address)])
    .filter((address): address is string => typeof address === 'string' && address.length > 0)

const unique = (list: string[]): string[] => {
  const seen = new Set<string>()
  return list.filter((item) => {
    const key = item.toLowerCase()
    if (seen.has(key)) return false
    seen.add(key)
    return true
  })
}

const store = async (stream: SMTPServerDataStream, session: SMTPServerSession): Promise<void> => {
  const parsed = await simpleParser(stream)
  const envelopeFrom = session.envelope.mailFrom ? session.envelope.mailFrom.address : ''
  messages.push({
    id: crypto.randomUUID(),
    from: addresses(parsed.from)[0] ?? envelopeFrom,
    to: unique([...session.envelope.rcptTo.map((rcpt) => rcpt.address), ...addresses(parsed.to)]),
    subject: parsed.subject ?? '',
    text: parsed.text ?? '',
    html: typeof parsed.html === 'string' ? parsed.html : '',
    date: new Date().toISOString(),
  })
  if (messages.length > maxMessages) messages = messages.slice(-maxMessages)
}

const smtp = new SMTPServer({
  authOptional: true,
  disabledCommands: ['STARTTLS', 'AUTH'],
  disableReverseLookup: true,
  logger: false,
  size: 25 * 1024 * 1024,
  onData(stream, session, callback) {
    store(stream, session).then(
      () => callback(),
      (error: unknown) => callback(error instanceof Error ? error : new Error(String(error))),
    )
  },
})
smtp.on('error', (error) => console.error('[mail-sink] smtp error:', error.message))

const json = (body: unknown, status = 200): Response => Response.json(body, { status })

const http = Bun.serve({
  hostname: host,
  port: httpPort,
  fetch(request) {
    const url = new URL(request.url)
    if (url.pathname === '/health') return new Response('ok')
    if (url.pathname !== '/api/v1/messages') return json({ error: 'not found' }, 404)
    if (request.method === 'DELETE') {
      messages = []
      return json({ ok: true })
    }
    if (request.method !== 'GET') return json({ error: 'method not allowed' }, 405)
    const to = url.searchParams.get('to')?.trim().toLowerCase()
    const limit = Number(url.searchParams.get('limit') ?? defaultLimit)
    const matching = messages
      .filter((message) => !to || message.to.some((address) => address.toLowerCase() === to))
      .reverse()
    const page = matching.slice(0, Number.isFinite(limit) && limit > 0 ? limit : defaultLimit)
    return json({ total: matching.length, count: page.length, messages: page })
  },
})

smtp.listen(smtpPort, host, () => {
  console.log(`[mail-sink] smtp://${host}:${smtpPort}  http://${host}:${http.port}/api/v1/messages`)
})

const shutdown = (): void => {
  http.stop(true)
  smtp.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 1000).unref()
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
