import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import type { Problem } from '@parley/contracts'
import { startPrivateS3, testS3Client, waitFor } from '@parley/testkit'
import sharp from 'sharp'
import type { AttachmentDoc, MessageDoc } from '../src/db'
import type { Attachment, CreatedAttachment } from '../src/modules/attachments/model'
import type { Conversation } from '../src/modules/conversations/model'
import type { Message, MessagePage } from '../src/modules/messages/model'
import type { PinList } from '../src/modules/pins/model'
import { createEventSink, createHarness, type Harness } from './harness'

let chat: Harness
/** Short-lived URLs and orphans, small quotas. */
let brief: Harness
const s3 = testS3Client()

beforeAll(async () => {
  ;[chat, brief] = await Promise.all([
    createHarness({ env: { CHAT_ATTACHMENT_MAX_BYTES: '2000000' } }),
    createHarness({
      env: {
        // Two, not one: signing times are whole seconds, so a URL lives between 1 and 2 s.
        CHAT_ATTACHMENT_DOWNLOAD_URL_SECONDS: '2',
        CHAT_ATTACHMENT_ORPHAN_SECONDS: '1',
        CHAT_ATTACHMENT_DAILY_COUNT: '2',
        CHAT_ATTACHMENT_DAILY_BYTES: '1000',
      },
    }),
  ])
})

afterAll(() => Promise.all([chat.close(), brief.close()]))

const PDF = new TextEncoder().encode('%PDF-1.4\n% a tiny test document\n%%EOF\n')

async function conversationOf(h: Harness, caller: string, others: string[]): Promise<string> {
  const reply = await h.call<Conversation>(caller, 'POST', '/conversations', { participantIds: others })
  expect(reply.status).toBe(201)
  return reply.body.id
}

/** Declares an upload, then PUTs `bytes` to its presigned URL (the declared size defaults to theirs). */
async function upload(
  h: Harness,
  owner: string,
  file: { filename: string; contentType: string; bytes: Uint8Array; declaredSize?: number },
): Promise<CreatedAttachment> {
  const created = await h.call<CreatedAttachment>(owner, 'POST', '/attachments', {
    filename: file.filename,
    contentType: file.contentType,
    size: file.declaredSize ?? file.bytes.length,
  })
  expect(created.status).toBe(201)
  const put = await fetch(created.body.upload.url, {
    method: 'PUT',
    body: file.bytes,
    headers: created.body.upload.headers,
  })
  expect(put.status).toBe(200)
  return created.body
}

const attachmentDoc = (h: Harness, id: string) =>
  h.deps.db.collection<AttachmentDoc>('attachments').findOne({ _id: id })

const objectExists = (key: string) => s3.file(key).exists()

/** A JPEG whose EXIF carries a GPS position. */
async function jpegWithGps(): Promise<Uint8Array> {
  const bytes = await sharp({ create: { width: 800, height: 600, channels: 3, background: '#3366aa' } })
    .jpeg()
    .withExif({
      IFD0: { Make: 'Parley test camera' },
      IFD3: {
        GPSLatitudeRef: 'N',
        GPSLatitude: '48/1 51/1 2999/100',
        GPSLongitudeRef: 'E',
        GPSLongitude: '2/1 17/1 4010/100',
      },
    })
    .toBuffer()
  return new Uint8Array(bytes)
}

/** Whether an image's EXIF (if any) names a GPS field. */
async function hasGps(bytes: Uint8Array): Promise<boolean> {
  const { exif } = await sharp(bytes).metadata()
  if (!exif) return false
  // The GPS IFD pointer tag (0x8825) in either byte order, or the GPS tags' ASCII refs.
  const hex = exif.toString('hex')
  return hex.includes('8825') || hex.includes('2588')
}

describe('upload → attach → download', () => {
  test('the other participant downloads the same bytes, as an attachment with an escaped name', async () => {
    const [alice, bob] = await Promise.all([chat.newUser('Alice'), chat.newUser('Bob')])
    const conversationId = await conversationOf(chat, alice, [bob])
    const filename = '../../etc/Rapport "final" été.pdf'
    const created = await upload(chat, alice, { filename, contentType: 'application/pdf', bytes: PDF })
    expect(created).toMatchObject({
      status: 'pending',
      filename: 'Rapport "final" été.pdf',
      size: PDF.length,
    })
    expect(created.upload.method).toBe('PUT')

    const sent = await chat.call<Message>(alice, 'POST', `/conversations/${conversationId}/messages`, {
      body: 'the report',
      attachmentIds: [created.id],
    })
    expect(sent.status).toBe(201)
    expect(sent.body.attachments).toHaveLength(1)

    const page = await chat.call<MessagePage>(bob, 'GET', `/conversations/${conversationId}/messages`)
    expect(page.status).toBe(200)
    const [attachment] = page.body.items[0]?.attachments ?? []
    expect(attachment).toMatchObject({
      id: created.id,
      filename: 'Rapport "final" été.pdf',
      contentType: 'application/pdf',
      size: PDF.length,
      width: null,
      height: null,
      thumbnail: null,
    })
    const download = await fetch(attachment?.url ?? '')
    expect(download.status).toBe(200)
    expect(new Uint8Array(await download.arrayBuffer())).toEqual(PDF)
    expect(download.headers.get('content-type')).toBe('application/pdf')
    const disposition = download.headers.get('content-disposition') ?? ''
    expect(disposition.startsWith('attachment;')).toBe(true)
    expect(disposition).toContain(`filename*=UTF-8''Rapport%20%22final%22%20%C3%A9t%C3%A9.pdf`)
    expect(disposition).toContain('filename="Rapport _final_ _t_.pdf"')

    // The stored key is generated, never the filename; the upload key is gone.
    const doc = await attachmentDoc(chat, created.id)
    expect(doc).toMatchObject({
      status: 'attached',
      messageId: sent.body.id,
      key: `attachments/${created.id}`,
    })
    expect(await objectExists(`uploads/${created.id}`)).toBe(false)

    // Bob, a participant, may fetch it on its own with fresh URLs.
    const single = await chat.call<Attachment>(bob, 'GET', `/attachments/${created.id}`)
    expect(single.status).toBe(200)
    expect(single.body).toMatchObject({ status: 'attached', messageId: sent.body.id, conversationId })
  })

  test('a message may be attachments only; its preview names the file', async () => {
    const [alice, bob] = await Promise.all([chat.newUser('Alice'), chat.newUser('Bob')])
    const conversationId = await conversationOf(chat, alice, [bob])
    const first = await upload(chat, alice, {
      filename: 'notes.txt',
      contentType: 'text/plain',
      bytes: new TextEncoder().encode('hello ✓'),
    })
    const second = await upload(chat, alice, {
      filename: 'more.pdf',
      contentType: 'application/pdf',
      bytes: PDF,
    })
    const sent = await chat.call<Message>(alice, 'POST', `/conversations/${conversationId}/messages`, {
      attachmentIds: [first.id, second.id],
    })
    expect(sent.status).toBe(201)
    expect(sent.body.body).toBe('')
    expect(sent.body.attachments.map((a) => a.id)).toEqual([first.id, second.id])
    const conversation = await chat.call<Conversation>(bob, 'GET', `/conversations/${conversationId}`)
    expect(conversation.body.lastMessage?.preview).toBe('📎 notes.txt +1')
    // Pinned, it is listed with its attachments too.
    expect(
      (await chat.call(bob, 'PUT', `/conversations/${conversationId}/pins/${sent.body.id}`)).status,
    ).toBe(200)
    const pins = await chat.call<PinList>(bob, 'GET', `/conversations/${conversationId}/pins`)
    expect(pins.body.items[0]?.message.attachments.map((a) => a.id)).toEqual([first.id, second.id])

    // Attached once: a second message cannot take it.
    const again = await chat.call<Problem>(alice, 'POST', `/conversations/${conversationId}/messages`, {
      attachmentIds: [first.id],
    })
    expect(again.status).toBe(422)
    expect(again.body.errors?.[0]?.field).toBe('body.attachmentIds.0')
  })

  test('message.sent carries the attachments (no URLs) and a preview naming the file', async () => {
    const sink = await createEventSink(chat.vhost.url, ['message.sent'])
    try {
      const [alice, bob] = await Promise.all([chat.newUser('Alice'), chat.newUser('Bob')])
      const conversationId = await conversationOf(chat, alice, [bob])
      const file = await upload(chat, alice, {
        filename: 'plan.pdf',
        contentType: 'application/pdf',
        bytes: PDF,
      })
      const sent = await chat.call<Message>(alice, 'POST', `/conversations/${conversationId}/messages`, {
        attachmentIds: [file.id],
      })
      const event = await waitFor(() =>
        sink.events.find((e) => (e.data as { messageId?: string }).messageId === sent.body.id),
      )
      expect(event.data).toMatchObject({
        preview: '📎 plan.pdf',
        attachments: [{ id: file.id, contentType: 'application/pdf', size: PDF.length }],
      })
      expect(JSON.stringify(event.data)).not.toContain('X-Amz-Signature')
    } finally {
      await sink.close()
    }
  })

  test('resending with the same clientMessageId returns the first message', async () => {
    const [alice, bob] = await Promise.all([chat.newUser('Alice'), chat.newUser('Bob')])
    const conversationId = await conversationOf(chat, alice, [bob])
    const file = await upload(chat, alice, { filename: 'a.pdf', contentType: 'application/pdf', bytes: PDF })
    const body = { attachmentIds: [file.id], clientMessageId: `c-${file.id}` }
    const first = await chat.call<Message>(alice, 'POST', `/conversations/${conversationId}/messages`, body)
    const second = await chat.call<Message>(alice, 'POST', `/conversations/${conversationId}/messages`, body)
    expect(first.status).toBe(201)
    expect(second.status).toBe(200)
    expect(second.body.id).toBe(first.body.id)
    expect(second.body.attachments.map((a) => a.id)).toEqual([file.id])
  })
})

describe('bad input names the field and writes nothing', () => {
  test('type, size and filename', async () => {
    const alice = await chat.newUser('Alice')
    const reply = await chat.call<Problem>(alice, 'POST', '/attachments', {
      filename: '/\u0000/',
      contentType: 'application/x-msdownload',
      size: 2_000_001,
    })
    expect(reply.status).toBe(422)
    expect(reply.body.errors?.map((error) => error.field).sort()).toEqual([
      'body.contentType',
      'body.filename',
      'body.size',
    ])
    expect(
      await chat.deps.db.collection<AttachmentDoc>('attachments').countDocuments({ ownerId: alice }),
    ).toBe(0)
  })

  test('a message without body or attachments, more than 10 attachments, a stranger’s attachment', async () => {
    const [alice, bob, mallory] = await Promise.all([
      chat.newUser('Alice'),
      chat.newUser('Bob'),
      chat.newUser('Mallory'),
    ])
    const conversationId = await conversationOf(chat, alice, [bob])
    const empty = await chat.call<Problem>(alice, 'POST', `/conversations/${conversationId}/messages`, {})
    expect(empty.status).toBe(422)
    expect(empty.body.errors?.[0]?.field).toBe('body.body')

    const many = Array.from({ length: 11 }, () => Bun.randomUUIDv7())
    const tooMany = await chat.call<Problem>(alice, 'POST', `/conversations/${conversationId}/messages`, {
      attachmentIds: many,
    })
    expect(tooMany.status).toBe(422)

    const mallorys = await upload(chat, mallory, {
      filename: 'm.pdf',
      contentType: 'application/pdf',
      bytes: PDF,
    })
    const stolen = await chat.call<Problem>(alice, 'POST', `/conversations/${conversationId}/messages`, {
      attachmentIds: [mallorys.id],
    })
    expect(stolen.status).toBe(422)
    expect(stolen.body.errors?.[0]).toMatchObject({
      field: 'body.attachmentIds.0',
      message: 'No such attachment',
    })
    expect(await chat.deps.db.collection<MessageDoc>('messages').countDocuments({ conversationId })).toBe(0)
    expect((await attachmentDoc(chat, mallorys.id))?.status).toBe('pending')
  })

  test('an attachment not uploaded yet is 409 to complete, 422 naming the field to send, and stays pending', async () => {
    const alice = await chat.newUser('Alice')
    const created = await chat.call<CreatedAttachment>(alice, 'POST', '/attachments', {
      filename: 'later.pdf',
      contentType: 'application/pdf',
      size: 10,
    })
    const complete = await chat.call<Problem>(alice, 'POST', `/attachments/${created.body.id}/complete`)
    expect(complete.status).toBe(409)
    expect(complete.headers.get('content-type')).toContain('application/problem+json')
    const bob = await chat.newUser('Bob')
    const conversationId = await conversationOf(chat, alice, [bob])
    const sent = await chat.call<Problem>(alice, 'POST', `/conversations/${conversationId}/messages`, {
      attachmentIds: [created.body.id],
    })
    expect(sent.status).toBe(422)
    expect(sent.body.errors?.[0]?.field).toBe('body.attachmentIds.0')
    expect((await attachmentDoc(chat, created.body.id))?.status).toBe('pending')
  })
})

describe('a client that lies is refused and its object removed', () => {
  test('more bytes than declared', async () => {
    const alice = await chat.newUser('Alice')
    const file = await upload(chat, alice, {
      filename: 'big.pdf',
      contentType: 'application/pdf',
      bytes: PDF,
      declaredSize: 10,
    })
    expect(await objectExists(`uploads/${file.id}`)).toBe(true)
    const reply = await chat.call<Problem>(alice, 'POST', `/attachments/${file.id}/complete`)
    expect(reply.status).toBe(422)
    expect(reply.body.errors?.[0]?.field).toBe('params.id')
    expect(reply.body.errors?.[0]?.message).toContain(`${PDF.length} bytes, 10 were declared`)
    expect(await objectExists(`uploads/${file.id}`)).toBe(false)
    expect(await attachmentDoc(chat, file.id)).toBeNull()
    expect((await chat.call(alice, 'GET', `/attachments/${file.id}`)).status).toBe(404)
  })

  test('another type than declared, found when the message attaches it: no message written', async () => {
    const [alice, bob] = await Promise.all([chat.newUser('Alice'), chat.newUser('Bob')])
    const conversationId = await conversationOf(chat, alice, [bob])
    const file = await upload(chat, alice, {
      filename: 'cat.png',
      contentType: 'image/png',
      bytes: new TextEncoder().encode('<html><script>alert(1)</script></html>'),
    })
    const reply = await chat.call<Problem>(alice, 'POST', `/conversations/${conversationId}/messages`, {
      body: 'look',
      attachmentIds: [file.id],
    })
    expect(reply.status).toBe(422)
    expect(reply.body.errors?.[0]).toMatchObject({ field: 'body.attachmentIds.0' })
    expect(reply.body.errors?.[0]?.message).toContain('not image/png')
    expect(await objectExists(`uploads/${file.id}`)).toBe(false)
    expect(await objectExists(`attachments/${file.id}`)).toBe(false)
    expect(await chat.deps.db.collection<MessageDoc>('messages').countDocuments({ conversationId })).toBe(0)
    const metrics = await chat.metricsText()
    expect(metrics).toMatch(/chat_attachment_rejections_total\{[^}]*reason="type"[^}]*\} [1-9]/)
  })
})

describe('downloads go to participants only', () => {
  test('a stranger gets 404 for the attachment and its conversation', async () => {
    const [alice, bob, mallory] = await Promise.all([
      chat.newUser('Alice'),
      chat.newUser('Bob'),
      chat.newUser('Mallory'),
    ])
    const conversationId = await conversationOf(chat, alice, [bob])
    const file = await upload(chat, alice, {
      filename: 'secret.pdf',
      contentType: 'application/pdf',
      bytes: PDF,
    })
    // Before it is attached: the owner only.
    expect((await chat.call(bob, 'GET', `/attachments/${file.id}`)).status).toBe(404)
    expect((await chat.call(mallory, 'POST', `/attachments/${file.id}/complete`)).status).toBe(404)
    const sent = await chat.call<Message>(alice, 'POST', `/conversations/${conversationId}/messages`, {
      attachmentIds: [file.id],
    })
    expect(sent.status).toBe(201)
    const stranger = await chat.call<Problem>(mallory, 'GET', `/attachments/${file.id}`)
    expect(stranger.status).toBe(404)
    expect(stranger.headers.get('content-type')).toContain('application/problem+json')
    expect((await chat.call(mallory, 'GET', `/conversations/${conversationId}/messages`)).status).toBe(404)
    expect((await chat.call(undefined, 'GET', `/attachments/${file.id}`)).status).toBe(401)
  })

  test('an expired presigned URL fails', async () => {
    const [alice, bob] = await Promise.all([brief.newUser('Alice'), brief.newUser('Bob')])
    const conversationId = await conversationOf(brief, alice, [bob])
    const file = await upload(brief, alice, { filename: 'x.pdf', contentType: 'application/pdf', bytes: PDF })
    const sent = await brief.call<Message>(alice, 'POST', `/conversations/${conversationId}/messages`, {
      attachmentIds: [file.id],
    })
    const url = sent.body.attachments[0]?.url ?? ''
    await Bun.sleep(Date.parse(sent.body.attachments[0]?.expiresAt ?? '') + 1_100 - Date.now())
    const expired = await fetch(url)
    expect(expired.status).toBe(403)
    // A fresh view signs a fresh URL.
    const fresh = await brief.call<Attachment>(bob, 'GET', `/attachments/${file.id}`)
    expect((await fetch(fresh.body.download?.url ?? '')).status).toBe(200)
  })
})

describe('images', () => {
  test('a JPEG gets dimensions and a thumbnail; neither it nor the thumbnail keeps GPS EXIF', async () => {
    const [alice, bob] = await Promise.all([chat.newUser('Alice'), chat.newUser('Bob')])
    const conversationId = await conversationOf(chat, alice, [bob])
    const jpeg = await jpegWithGps()
    expect(await hasGps(jpeg)).toBe(true)
    const file = await upload(chat, alice, {
      filename: 'holiday.jpg',
      contentType: 'image/jpeg',
      bytes: jpeg,
    })
    const completed = await chat.call<Attachment>(alice, 'POST', `/attachments/${file.id}/complete`)
    expect(completed.status).toBe(200)
    expect(completed.body).toMatchObject({ status: 'ready', width: 800, height: 600 })

    const sent = await chat.call<Message>(alice, 'POST', `/conversations/${conversationId}/messages`, {
      attachmentIds: [file.id],
    })
    const page = await chat.call<MessagePage>(bob, 'GET', `/conversations/${conversationId}/messages`)
    const view = page.body.items.find((item) => item.id === sent.body.id)?.attachments[0]
    expect(view).toMatchObject({ width: 800, height: 600, thumbnail: { width: 320, height: 240 } })

    const original = await fetch(view?.url ?? '')
    expect(original.status).toBe(200)
    expect(original.headers.get('content-disposition')?.startsWith('inline;')).toBe(true)
    const served = new Uint8Array(await original.arrayBuffer())
    expect(served.length).toBe(view?.size ?? 0)
    const servedMeta = await sharp(served).metadata()
    expect(servedMeta).toMatchObject({ format: 'jpeg', width: 800, height: 600 })
    expect(servedMeta.exif).toBeUndefined()
    expect(await hasGps(served)).toBe(false)

    const thumbnail = new Uint8Array(await (await fetch(view?.thumbnail?.url ?? '')).arrayBuffer())
    const thumbMeta = await sharp(thumbnail).metadata()
    expect(thumbMeta).toMatchObject({ format: 'webp', width: 320, height: 240 })
    expect(thumbMeta.exif).toBeUndefined()
  })

  test('PNG, GIF and WebP keep their format and get a thumbnail', async () => {
    const alice = await chat.newUser('Alice')
    const image = sharp({
      create: { width: 640, height: 200, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0.5 } },
    })
    for (const [contentType, bytes] of [
      ['image/png', await image.clone().png().toBuffer()],
      ['image/gif', await image.clone().gif().toBuffer()],
      ['image/webp', await image.clone().webp().toBuffer()],
    ] as const) {
      const file = await upload(chat, alice, { filename: 'i', contentType, bytes: new Uint8Array(bytes) })
      const done = await chat.call<Attachment>(alice, 'POST', `/attachments/${file.id}/complete`)
      expect(done.body).toMatchObject({ status: 'ready', width: 640, height: 200 })
      expect(done.body.download?.thumbnail).toMatchObject({ width: 320, height: 100 })
      const served = new Uint8Array(await (await fetch(done.body.download?.url ?? '')).arrayBuffer())
      expect((await sharp(served).metadata()).format).toBe(contentType.slice('image/'.length) as 'png')
    }
  })

  test('bytes that start like a PNG but do not decode are refused', async () => {
    const alice = await chat.newUser('Alice')
    const bytes = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3, 4, 5, 6, 7, 8])
    const file = await upload(chat, alice, { filename: 'broken.png', contentType: 'image/png', bytes })
    const reply = await chat.call<Problem>(alice, 'POST', `/attachments/${file.id}/complete`)
    expect(reply.status).toBe(422)
    expect(await objectExists(`uploads/${file.id}`)).toBe(false)
  })
})

describe('lifecycle', () => {
  test('uploads never attached are swept after the orphan time; attached ones stay', async () => {
    const [alice, bob] = await Promise.all([brief.newUser('Alice'), brief.newUser('Bob')])
    const conversationId = await conversationOf(brief, alice, [bob])
    const orphan = await upload(brief, alice, {
      filename: 'o.pdf',
      contentType: 'application/pdf',
      bytes: PDF,
    })
    const kept = await upload(brief, alice, { filename: 'k.pdf', contentType: 'application/pdf', bytes: PDF })
    expect(
      (
        await brief.call(alice, 'POST', `/conversations/${conversationId}/messages`, {
          attachmentIds: [kept.id],
        })
      ).status,
    ).toBe(201)
    await Bun.sleep(1_100)
    // Claimed attachments get a new deadline: wait past it too.
    await Bun.sleep(1_000)
    const removed = await brief.deps.attachments?.sweep()
    expect(removed).toBeGreaterThanOrEqual(1)
    expect(await objectExists(`uploads/${orphan.id}`)).toBe(false)
    expect(await attachmentDoc(brief, orphan.id)).toBeNull()
    expect((await attachmentDoc(brief, kept.id))?.status).toBe('attached')
    expect(await objectExists(`attachments/${kept.id}`)).toBe(true)
    expect(await brief.metricsText()).toMatch(
      /chat_attachments_swept_total\{[^}]*reason="orphan"[^}]*\} [1-9]/,
    )
  })

  test('claims of sends that died: bound to their message if it exists, swept if not', async () => {
    const [alice, bob] = await Promise.all([chat.newUser('Alice'), chat.newUser('Bob')])
    const conversationId = await conversationOf(chat, alice, [bob])
    const landed = await upload(chat, alice, {
      filename: 'l.pdf',
      contentType: 'application/pdf',
      bytes: PDF,
    })
    const lost = await upload(chat, alice, { filename: 'n.pdf', contentType: 'application/pdf', bytes: PDF })
    const sent = await chat.call<Message>(alice, 'POST', `/conversations/${conversationId}/messages`, {
      attachmentIds: [landed.id],
    })
    expect((await chat.call(alice, 'POST', `/attachments/${lost.id}/complete`)).status).toBe(200)
    const attachments = chat.deps.db.collection<AttachmentDoc>('attachments')
    const past = new Date(Date.now() - 1000)
    // As if the process died after the insert but before bind, and before the insert of another send.
    await attachments.updateOne({ _id: landed.id }, { $unset: { messageId: '' }, $set: { orphanAt: past } })
    await attachments.updateOne(
      { _id: lost.id },
      { $set: { status: 'attached', conversationId, orphanAt: past } },
    )
    await chat.deps.attachments?.sweep()
    expect(await attachmentDoc(chat, landed.id)).toMatchObject({
      status: 'attached',
      messageId: sent.body.id,
    })
    expect(await objectExists(`attachments/${landed.id}`)).toBe(true)
    expect(await attachmentDoc(chat, lost.id)).toBeNull()
    expect(await objectExists(`attachments/${lost.id}`)).toBe(false)
  })

  test('a PUT after the check changes nothing served, and the sweep deletes it once the URL expired', async () => {
    const alice = await chat.newUser('Alice')
    const file = await upload(chat, alice, { filename: 'r.pdf', contentType: 'application/pdf', bytes: PDF })
    expect((await chat.call(alice, 'POST', `/attachments/${file.id}/complete`)).status).toBe(200)
    const swap = new TextEncoder().encode('%PDF-1.4 something else entirely, and longer')
    expect(
      (await fetch(file.upload.url, { method: 'PUT', body: swap, headers: file.upload.headers })).status,
    ).toBe(200)
    const view = await chat.call<Attachment>(alice, 'GET', `/attachments/${file.id}`)
    expect(new Uint8Array(await (await fetch(view.body.download?.url ?? '')).arrayBuffer())).toEqual(PDF)
    expect(await objectExists(`uploads/${file.id}`)).toBe(true)
    await chat.deps.db
      .collection<AttachmentDoc>('attachments')
      .updateOne({ _id: file.id }, { $set: { uploadExpiresAt: new Date(Date.now() - 1000) } })
    await chat.deps.attachments?.sweep()
    expect(await objectExists(`uploads/${file.id}`)).toBe(false)
    expect(await attachmentDoc(chat, file.id)).toMatchObject({ status: 'ready' })
    expect((await attachmentDoc(chat, file.id))?.uploadOpen).toBeUndefined()
  })

  test('deleting a message deletes its objects', async () => {
    const [alice, bob] = await Promise.all([chat.newUser('Alice'), chat.newUser('Bob')])
    const conversationId = await conversationOf(chat, alice, [bob])
    const file = await upload(chat, alice, {
      filename: 'p.jpg',
      contentType: 'image/jpeg',
      bytes: await jpegWithGps(),
    })
    const sent = await chat.call<Message>(alice, 'POST', `/conversations/${conversationId}/messages`, {
      body: 'photo',
      attachmentIds: [file.id],
    })
    expect(await objectExists(`attachments/${file.id}`)).toBe(true)
    expect(await objectExists(`attachments/${file.id}.thumbnail.webp`)).toBe(true)
    const deleted = await chat.call(
      alice,
      'DELETE',
      `/conversations/${conversationId}/messages/${sent.body.id}`,
    )
    expect(deleted.status).toBe(204)
    expect(await objectExists(`attachments/${file.id}`)).toBe(false)
    expect(await objectExists(`attachments/${file.id}.thumbnail.webp`)).toBe(false)
    expect(await attachmentDoc(chat, file.id)).toBeNull()
    const page = await chat.call<MessagePage>(bob, 'GET', `/conversations/${conversationId}/messages`)
    expect(page.body.items[0]?.attachments).toEqual([])
  })

  test('daily quotas of count and bytes answer 429 with Retry-After', async () => {
    const [counted, weighed] = await Promise.all([brief.newUser('Counted'), brief.newUser('Weighed')])
    const declare = (owner: string, size: number) =>
      brief.call<Problem>(owner, 'POST', '/attachments', {
        filename: 'q.txt',
        contentType: 'text/plain',
        size,
      })
    expect((await declare(counted, 1)).status).toBe(201)
    expect((await declare(counted, 1)).status).toBe(201)
    const third = await declare(counted, 1)
    expect(third.status).toBe(429)
    expect(Number(third.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(Number(third.headers.get('retry-after'))).toBeLessThanOrEqual(86_400)

    expect((await declare(weighed, 900)).status).toBe(201)
    expect((await declare(weighed, 200)).status).toBe(429)
    // Refused declarations are not counted: a small one still fits.
    expect((await declare(weighed, 100)).status).toBe(201)
    expect(await brief.metricsText()).toMatch(/chat_attachment_rejections_total\{[^}]*reason="quota_bytes"/)
  })
})

describe('the object store stopped', () => {
  test('503 problem, nothing half-written; messages without files still go', async () => {
    const store = await startPrivateS3()
    const own = await createHarness({ env: store.env })
    try {
      const [alice, bob] = await Promise.all([own.newUser('Alice'), own.newUser('Bob')])
      const conversationId = await conversationOf(own, alice, [bob])
      const earlier = await upload(own, alice, {
        filename: 'e.pdf',
        contentType: 'application/pdf',
        bytes: PDF,
      })
      const sentEarlier = await own.call<Message>(
        alice,
        'POST',
        `/conversations/${conversationId}/messages`,
        {
          attachmentIds: [earlier.id],
        },
      )
      expect(sentEarlier.status).toBe(201)
      const file = await upload(own, alice, { filename: 'd.pdf', contentType: 'application/pdf', bytes: PDF })
      await store.stop()

      const send = await own.call<Problem>(alice, 'POST', `/conversations/${conversationId}/messages`, {
        body: 'with a file',
        attachmentIds: [file.id],
      })
      expect(send.status).toBe(503)
      expect(send.headers.get('content-type')).toContain('application/problem+json')
      expect(send.body.status).toBe(503)
      expect(await own.deps.db.collection<MessageDoc>('messages').countDocuments({ conversationId })).toBe(1)
      expect((await attachmentDoc(own, file.id))?.status).toBe('pending')
      expect((await own.call(alice, 'POST', `/attachments/${file.id}/complete`)).status).toBe(503)
      // Messages without files still go.
      const plain = await own.call(alice, 'POST', `/conversations/${conversationId}/messages`, {
        body: 'text only',
      })
      expect(plain.status).toBe(201)
      // Deleting a message still works; its objects are left marked for the sweep, which fails until the store is back.
      const deleted = await own.call(
        alice,
        'DELETE',
        `/conversations/${conversationId}/messages/${sentEarlier.body.id}`,
      )
      expect(deleted.status).toBe(204)
      expect((await attachmentDoc(own, earlier.id))?.status).toBe('deleted')
      await expect(own.deps.attachments?.sweep()).rejects.toMatchObject({ status: 503 })
    } finally {
      await store.stop()
      await own.close()
    }
  })
})

describe('metrics', () => {
  test('uploads and bytes are counted', async () => {
    const alice = await chat.newUser('Alice')
    const file = await upload(chat, alice, { filename: 'm.pdf', contentType: 'application/pdf', bytes: PDF })
    expect((await chat.call(alice, 'POST', `/attachments/${file.id}/complete`)).status).toBe(200)
    const text = await chat.metricsText()
    expect(text).toMatch(/chat_attachment_uploads_total\{[^}]*kind="file"[^}]*\} [1-9]/)
    expect(text).toMatch(/chat_attachment_bytes_total\{[^}]*kind="file"[^}]*\} [1-9]/)
  })
})

describe('configuration', () => {
  test('presigned URLs use S3_PUBLIC_ENDPOINT; the allow-list names only checkable types', async () => {
    const { ConfigError, parseConfig } = await import('@parley/common')
    const { Env } = await import('../src/config')
    const { objectStoreFor } = await import('@parley/common/objects')
    const base = { MONGO_URL: 'mongodb://127.0.0.1:27017', JWKS_URL: 'http://127.0.0.1:9/jwks' }
    const config = parseConfig(Env, {
      ...base,
      S3_ENDPOINT: 'http://s3.internal:7070',
      S3_PUBLIC_ENDPOINT: 'https://files.example.test',
      S3_ACCESS_KEY_ID: 'k',
      S3_SECRET_ACCESS_KEY: 's',
    })
    expect(objectStoreFor(config).presignPut('uploads/x', 'text/plain', 60)).toStartWith(
      'https://files.example.test/parley/uploads/x?',
    )
    expect(() => parseConfig(Env, { ...base, CHAT_ATTACHMENT_CONTENT_TYPES: 'image/png,text/html' })).toThrow(
      ConfigError,
    )
    // Outside development the store's address and credentials are required where its client is built.
    expect(() => objectStoreFor(parseConfig(Env, base))).toThrow('S3_ENDPOINT is required')
  })

  test('without an object store (a text-only benchmark) the attachment routes answer 503', async () => {
    const { buildApp } = await import('../src/app')
    const { jsonRequest } = await import('@parley/testkit')
    const app = buildApp({ ...chat.deps, attachments: undefined })
    const token = await chat.signer.sign({ sub: Bun.randomUUIDv7() })
    const reply = await app.handle(
      jsonRequest(
        'POST',
        '/attachments',
        { filename: 'a.txt', contentType: 'text/plain', size: 1 },
        {
          authorization: `Bearer ${token}`,
        },
      ),
    )
    expect(reply.status).toBe(503)
  })
})

describe('behind the gateway', () => {
  test('the gateway routes /attachments to chat (roster morePrefixes)', async () => {
    const { routesOf } = await import('../../gateway/src/deps')
    const { matchUpstream } = await import('../../gateway/src/modules/proxy/service')
    const routes = routesOf([
      { name: 'chat', prefix: '/conversations', baseUrl: 'http://chat', timeoutMs: 1000 },
      { name: 'user', prefix: '/users', baseUrl: 'http://user', timeoutMs: 1000 },
    ])
    expect(matchUpstream(routes, '/attachments')?.name).toBe('chat')
    expect(matchUpstream(routes, '/attachments/0190d5a0-0000-7000-8000-000000000000/complete')?.baseUrl).toBe(
      'http://chat',
    )
    expect(matchUpstream(routes, '/attachmentsx')).toBeUndefined()
  })
})
