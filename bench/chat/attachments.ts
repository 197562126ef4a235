// Attachments: upload+attach throughput, and what attachments add to a message page.
// Through the whole chat app (routing, token check, validation, MongoDB, Redis) and the real S3
// server of scripts/infra.sh (versitygw): declare → PUT to the presigned URL → send the message
// with it, for a 64 KiB PDF (size and type checked, copied) and a 1600×1200 JPEG (also decoded,
// re-encoded without metadata and thumbnailed by sharp), one at a time and BENCH_ATTACH_CONCURRENCY
// at once; then the latest page of 50 messages without attachments and with one image each
// (two presigned URLs per message). Medians of BENCH_ATTACH_REPS page reads.
//   bun bench/chat/attachments.ts      BENCH_ATTACH_UPLOADS=100 BENCH_ATTACH_CONCURRENCY=8 bun bench/chat/attachments.ts

import sharp from '../../services/chat/node_modules/sharp'
import type { CreatedAttachment } from '../../services/chat/src/modules/attachments/model.ts'
import { createHarness, type Harness } from '../../services/chat/test/harness.ts'
import { percentile } from '../lib.ts'

const uploads = Number(process.env.BENCH_ATTACH_UPLOADS ?? 40)
const concurrency = Number(process.env.BENCH_ATTACH_CONCURRENCY ?? 4)
const reps = Number(process.env.BENCH_ATTACH_REPS ?? 30)
const PAGE = 50

const pdf = new Uint8Array(64 * 1024)
pdf.set(new TextEncoder().encode('%PDF-1.4\n'))
const jpeg = new Uint8Array(
  await sharp({ create: { width: 1600, height: 1200, channels: 3, background: '#88aa44' } })
    .jpeg({ quality: 85 })
    .toBuffer(),
)

const chat: Harness = await createHarness({
  env: { CHAT_ATTACHMENT_DAILY_COUNT: '100000', CHAT_ATTACHMENT_DAILY_BYTES: '100000000000' },
})

async function ok<T>(reply: Promise<{ status: number; body: T }>): Promise<T> {
  const { status, body } = await reply
  if (status >= 300) throw new Error(`${status} ${JSON.stringify(body)}`)
  return body
}

/** One declare → PUT → send; resolves to its wall time in ms. */
async function uploadAndSend(
  sender: string,
  conversationId: string,
  file: { filename: string; contentType: string; bytes: Uint8Array },
) {
  const started = performance.now()
  const created = await ok(
    chat.call<CreatedAttachment>(sender, 'POST', '/attachments', {
      filename: file.filename,
      contentType: file.contentType,
      size: file.bytes.length,
    }),
  )
  const put = await fetch(created.upload.url, {
    method: 'PUT',
    body: file.bytes,
    headers: created.upload.headers,
  })
  if (!put.ok) throw new Error(`PUT ${put.status}`)
  await ok(
    chat.call(sender, 'POST', `/conversations/${conversationId}/messages`, { attachmentIds: [created.id] }),
  )
  return performance.now() - started
}

async function throughput(label: string, file: { filename: string; contentType: string; bytes: Uint8Array }) {
  const [sender, other] = await Promise.all([chat.newUser('Sender'), chat.newUser('Other')])
  const conversationId = (
    await ok(chat.call<{ id: string }>(sender, 'POST', '/conversations', { participantIds: [other] }))
  ).id
  for (const workers of [1, concurrency]) {
    const times: number[] = []
    let next = 0
    const started = performance.now()
    await Promise.all(
      Array.from({ length: workers }, async () => {
        while (next < uploads) {
          next++
          times.push(await uploadAndSend(sender, conversationId, file))
        }
      }),
    )
    const seconds = (performance.now() - started) / 1000
    times.sort((a, b) => a - b)
    console.log(
      `${label.padEnd(22)} x${String(workers).padEnd(3)} ${(uploads / seconds).toFixed(1).padStart(6)} uploads/s   p50 ${percentile(times, 50).toFixed(1)} ms   p95 ${percentile(times, 95).toFixed(1)} ms`,
    )
  }
}

/** Median latency of the latest page (cached after the first read) of a conversation of PAGE messages. */
async function pageCost(withImages: boolean): Promise<number> {
  const [sender, reader] = await Promise.all([chat.newUser('Sender'), chat.newUser('Reader')])
  const conversationId = (
    await ok(chat.call<{ id: string }>(sender, 'POST', '/conversations', { participantIds: [reader] }))
  ).id
  for (let i = 0; i < PAGE; i++) {
    if (withImages)
      await uploadAndSend(sender, conversationId, {
        filename: `p${i}.jpg`,
        contentType: 'image/jpeg',
        bytes: jpeg,
      })
    else
      await ok(
        chat.call(sender, 'POST', `/conversations/${conversationId}/messages`, { body: `message ${i}` }),
      )
  }
  const path = `/conversations/${conversationId}/messages?limit=${PAGE}`
  await ok(chat.call(reader, 'GET', path))
  const times: number[] = []
  for (let i = 0; i < reps; i++) {
    const started = performance.now()
    await ok(chat.call(reader, 'GET', path))
    times.push(performance.now() - started)
  }
  times.sort((a, b) => a - b)
  return percentile(times, 50)
}

try {
  console.log(`upload+attach: ${uploads} per run (declare, PUT to S3, send)`)
  await throughput('PDF 64 KiB', { filename: 'doc.pdf', contentType: 'application/pdf', bytes: pdf })
  await throughput(`JPEG 1600x1200 ${Math.round(jpeg.length / 1024)} KiB`, {
    filename: 'photo.jpg',
    contentType: 'image/jpeg',
    bytes: jpeg,
  })
  const plain = await pageCost(false)
  const images = await pageCost(true)
  console.log(
    `latest page of ${PAGE} (median of ${reps}): text ${plain.toFixed(2)} ms, one image each ${images.toFixed(2)} ms (x${(images / plain).toFixed(2)}, +${(((images - plain) / PAGE) * 1000).toFixed(0)} µs per message)`,
  )
  console.log('command: bun bench/chat/attachments.ts')
} finally {
  await chat.close()
}
