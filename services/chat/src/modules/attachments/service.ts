import {
  HttpProblem,
  type Logger,
  type Metrics,
  newId,
  type ProblemFieldError,
  problems,
} from '@parley/common'
import type { ObjectStore } from '@parley/common/objects'
import type { Redis } from '@parley/common/redis'
import type { PurgeTarget } from '@parley/common/retention'
import type { Collection } from 'mongodb'
import type { AttachmentDoc, MessageAttachmentDoc, MessageDoc } from '../../db'
import type { ConversationStore } from '../conversations/store'
import { processImage } from './image'
import {
  type Attachment,
  type CreateAttachmentBody,
  type CreatedAttachment,
  MAX_ATTACHMENTS_PER_MESSAGE,
  MAX_FILENAME_LENGTH,
  type MessageAttachment,
} from './model'
import { bytesAre, IMAGE_TYPES, SNIFF_BYTES } from './types'

export type AttachmentRules = {
  maxBytes: number
  contentTypes: ReadonlySet<string>
  uploadUrlSeconds: number
  downloadUrlSeconds: number
  /** Age after which an upload never attached is swept. */
  orphanMs: number
  dailyCount: number
  dailyBytes: number
}

export type RejectionReason = 'size' | 'type' | 'image' | 'missing' | 'quota_count' | 'quota_bytes'

const DAY_MS = 86_400_000

/** Checks both daily limits and counts the upload only when both hold: 0 ok, 1 count, 2 bytes. */
const TAKE_QUOTA = `
local count = tonumber(redis.call('HGET', KEYS[1], 'count') or '0')
local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
if count + 1 > tonumber(ARGV[2]) then return 1 end
if bytes + tonumber(ARGV[1]) > tonumber(ARGV[3]) then return 2 end
redis.call('HINCRBY', KEYS[1], 'count', 1)
redis.call('HINCRBY', KEYS[1], 'bytes', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 0
`

/** Path segments, control and invisible format characters removed; trimmed. */
export function cleanFilename(raw: string): string {
  const base = raw.split(/[/\\]/).at(-1) ?? ''
  return base.replace(/[\p{Cc}\p{Cf}\u2028\u2029]/gu, '').trim()
}

/** RFC 6266: an ASCII fallback plus the exact UTF-8 name (RFC 8187), so no name can break the header. */
export function contentDisposition(kind: 'attachment' | 'inline', filename: string): string {
  const fallback = filename.replace(/[^\x20-\x7e]|["\\%]/g, '_')
  const encoded = encodeURIComponent(filename).replace(
    /['()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  )
  return `${kind}; filename="${fallback}"; filename*=UTF-8''${encoded}`
}

const isImage = (contentType: string) => IMAGE_TYPES.has(contentType)

/**
 * Files and images in messages. A client declares an upload (name, type, size; counted against
 * its daily quota), PUTs the bytes to a presigned URL, and the bytes are checked (`complete`, or
 * at the latest when a message attaches it): the real size and the type its first bytes show
 * must be the declared ones, else the object is removed and 422 answered. An image is decoded,
 * re-encoded without metadata (no GPS), measured and given a thumbnail. The checked object is
 * copied away from the upload key, so reusing the presigned PUT cannot change what a message
 * serves. Keys are generated from the id; the filename is only ever shown.
 */
export class AttachmentService {
  private readonly uploads
  private readonly bytes
  private readonly rejections
  private readonly swept

  constructor(
    private readonly attachments: Collection<AttachmentDoc>,
    private readonly store: ConversationStore,
    private readonly objects: ObjectStore,
    private readonly redis: Redis,
    metrics: Metrics,
    private readonly logger: Logger,
    readonly rules: AttachmentRules,
  ) {
    this.uploads = metrics.counter('chat_attachment_uploads_total', 'Uploads checked and ready to attach', [
      'kind',
    ])
    this.bytes = metrics.counter('chat_attachment_bytes_total', 'Bytes of the uploads checked (as served)', [
      'kind',
    ])
    this.rejections = metrics.counter(
      'chat_attachment_rejections_total',
      'Attachments refused, by reason (size/type/image: the upload lied and was removed; missing: not uploaded yet; quota_*: 429)',
      ['reason'],
    )
    this.swept = metrics.counter(
      'chat_attachments_swept_total',
      'Attachments whose objects the sweep removed (orphan: never attached in time; deleted: their message was deleted)',
      ['reason'],
    )
  }

  /** Declares an upload: 422 naming the field for a bad name, type or size, 429 past a daily quota. */
  async create(ownerId: string, input: CreateAttachmentBody): Promise<CreatedAttachment> {
    const filename = cleanFilename(input.filename)
    const errors: ProblemFieldError[] = []
    if (filename.length === 0 || [...filename].length > MAX_FILENAME_LENGTH)
      errors.push({
        field: 'body.filename',
        message: `Must keep 1 to ${MAX_FILENAME_LENGTH} characters without path or control characters`,
      })
    const contentType = input.contentType.toLowerCase()
    if (!this.rules.contentTypes.has(contentType))
      errors.push({
        field: 'body.contentType',
        message: `Not an accepted type (${[...this.rules.contentTypes].join(', ')})`,
      })
    if (input.size > this.rules.maxBytes)
      errors.push({ field: 'body.size', message: `At most ${this.rules.maxBytes} bytes` })
    if (errors.length > 0) {
      for (const error of errors)
        this.rejections.inc({ reason: error.field === 'body.size' ? 'size' : 'type' })
      throw problems.validation(errors)
    }
    await this.takeQuota(ownerId, input.size)
    const id = newId()
    const now = new Date()
    const expiresAt = new Date(now.getTime() + this.rules.uploadUrlSeconds * 1000)
    const doc: AttachmentDoc = {
      _id: id,
      ownerId,
      filename,
      contentType,
      size: input.size,
      status: 'pending',
      uploadKey: `uploads/${id}`,
      uploadExpiresAt: expiresAt,
      uploadOpen: true,
      key: `attachments/${id}`,
      createdAt: now,
      orphanAt: new Date(now.getTime() + this.rules.orphanMs),
    }
    await this.attachments.insertOne(doc)
    return {
      ...this.toAttachment(doc),
      upload: {
        method: 'PUT',
        url: this.objects.presignPut(doc.uploadKey, contentType, this.rules.uploadUrlSeconds),
        headers: { 'content-type': contentType },
        expiresAt: expiresAt.toISOString(),
      },
    }
  }

  /** Checks the uploaded bytes (idempotent): the owner only (404 otherwise). */
  async complete(callerId: string, id: string): Promise<Attachment> {
    const doc = await this.attachments.findOne({ _id: id, ownerId: callerId })
    if (!doc || doc.status === 'deleted') throw problems.notFound('No such attachment')
    // Nothing uploaded yet is the attachment's state, not a bad id: 409, and it stays pending.
    return this.toAttachment(doc.status === 'pending' ? await this.verify(doc, 'params.id', 'conflict') : doc)
  }

  /** The attachment with fresh download URLs: its owner, or a participant of its conversation (404 otherwise). */
  async get(callerId: string, id: string): Promise<Attachment> {
    const doc = await this.attachments.findOne({ _id: id })
    if (!doc || doc.status === 'deleted') throw problems.notFound('No such attachment')
    if (doc.ownerId !== callerId) {
      if (!doc.conversationId || !doc.messageId) throw problems.notFound('No such attachment')
      await this.store.forParticipant(doc.conversationId, callerId)
    }
    return this.toAttachment(doc)
  }

  /**
   * For a send: the sender's attachments by id, checked (uploads not yet checked are now) and
   * claimed for the conversation by one conditional update each, in the order given. 422 naming
   * `body.attachmentIds.<index>` for each that is not the sender's, repeated, not uploaded or
   * already attached; nothing stays claimed then.
   */
  async claim(
    ownerId: string,
    ids: readonly string[],
    conversationId: string,
  ): Promise<MessageAttachmentDoc[]> {
    if (ids.length === 0) return []
    if (ids.length > MAX_ATTACHMENTS_PER_MESSAGE)
      throw problems.validation([
        { field: 'body.attachmentIds', message: `At most ${MAX_ATTACHMENTS_PER_MESSAGE} attachments` },
      ])
    const docs = await Promise.all(ids.map((id) => this.attachments.findOne({ _id: id, ownerId })))
    const errors: ProblemFieldError[] = []
    docs.forEach((doc, index) => {
      const field = `body.attachmentIds.${index}`
      if (ids.indexOf(ids[index] as string) !== index) errors.push({ field, message: 'Repeated' })
      else if (!doc || doc.status === 'deleted') errors.push({ field, message: 'No such attachment' })
      else if (doc.status === 'attached') errors.push({ field, message: 'Already attached to a message' })
    })
    if (errors.length > 0) throw problems.validation(errors)
    const ready: AttachmentDoc[] = []
    for (const [index, doc] of docs.entries()) {
      if (!doc) continue
      ready.push(doc.status === 'pending' ? await this.verify(doc, `body.attachmentIds.${index}`) : doc)
    }
    const claimed: string[] = []
    // A send still in flight when the sweep looks is not an orphan: it gets a new deadline.
    const orphanAt = new Date(Date.now() + this.rules.orphanMs)
    for (const [index, doc] of ready.entries()) {
      const result = await this.attachments.updateOne(
        { _id: doc._id, ownerId, status: 'ready' },
        { $set: { status: 'attached', conversationId, orphanAt } },
      )
      if (result.modifiedCount === 1) {
        claimed.push(doc._id)
        continue
      }
      await this.release(claimed)
      throw problems.validation([
        { field: `body.attachmentIds.${index}`, message: 'Already attached to a message' },
      ])
    }
    return ready.map(messageAttachmentOf)
  }

  /** Ties claimed attachments to the message that now holds them. */
  async bind(ids: readonly string[], messageId: string): Promise<void> {
    await Promise.all(
      ids.map((id) => this.attachments.updateOne({ _id: id, status: 'attached' }, { $set: { messageId } })),
    )
  }

  /** Gives back claims of a send that did not insert its message. */
  async release(ids: readonly string[]): Promise<void> {
    await Promise.all(
      ids.map((id) =>
        this.attachments.updateOne(
          { _id: id, status: 'attached', messageId: { $exists: false } },
          { $set: { status: 'ready' }, $unset: { conversationId: '' } },
        ),
      ),
    )
  }

  /**
   * After its message was deleted: marks the attachments deleted, then removes their objects and
   * documents. A store outage leaves them marked: the sweep finishes the job.
   */
  async removeOf(message: Pick<MessageDoc, '_id' | 'attachments'>): Promise<void> {
    const ids = (message.attachments ?? []).map((attachment) => attachment.id)
    if (ids.length === 0) return
    await Promise.all(
      ids.map((id) =>
        this.attachments.updateOne(
          { _id: id, messageId: message._id, status: 'attached' },
          { $set: { status: 'deleted' } },
        ),
      ),
    )
    for (const id of ids) {
      const doc = await this.attachments.findOne({ _id: id, status: 'deleted' })
      if (!doc) continue
      try {
        await this.purge(doc)
        this.swept.inc({ reason: 'deleted' })
      } catch (error) {
        this.logger.warn(
          { err: error instanceof Error ? error.message : error, attachmentId: id },
          'attachment objects left for the sweep',
        )
      }
    }
  }

  /** Message views of attachments, each with presigned downloads valid for the configured time. */
  views(attachments: readonly MessageAttachmentDoc[] | undefined): MessageAttachment[] {
    if (!attachments || attachments.length === 0) return []
    const seconds = this.rules.downloadUrlSeconds
    const expiresAt = new Date(Date.now() + seconds * 1000).toISOString()
    return attachments.map((attachment) => ({
      id: attachment.id,
      filename: attachment.filename,
      contentType: attachment.contentType,
      size: attachment.size,
      width: attachment.width ?? null,
      height: attachment.height ?? null,
      url: this.objects.presignGet(attachment.key, {
        expiresInSeconds: seconds,
        contentType: attachment.contentType,
        contentDisposition: contentDisposition(
          isImage(attachment.contentType) ? 'inline' : 'attachment',
          attachment.filename,
        ),
      }),
      expiresAt,
      thumbnail: attachment.thumbnail
        ? {
            url: this.objects.presignGet(attachment.thumbnail.key, {
              expiresInSeconds: seconds,
              contentType: attachment.thumbnail.contentType,
            }),
            width: attachment.thumbnail.width,
            height: attachment.thumbnail.height,
          }
        : null,
    }))
  }

  /**
   * The retention pass's target: uploads never attached past their deadline, attachments of
   * deleted messages, and claims whose send died before its message existed. Each is first
   * marked `deleted` by an update conditional on what was read (a concurrent claim wins or
   * loses cleanly), then its objects and document go.
   */
  sweepTarget(): PurgeTarget {
    return { table: 'attachments', deleteBatch: (limit) => this.sweep(limit) }
  }

  /** One sweep batch: upload keys closed and attachments removed, at most `limit` of each; resolves to how many. */
  async sweep(limit = 100): Promise<number> {
    const now = new Date()
    let removed = await this.closeUploads(now, limit)
    for (const status of ['pending', 'ready', 'attached', 'deleted'] as const) {
      if (removed >= limit) break
      const due = await this.attachments
        .find(
          status === 'deleted'
            ? { status }
            : // Attached ones only while unbound: a send that died between its insert and bind, or before the insert.
              {
                status,
                orphanAt: { $lt: now },
                ...(status === 'attached' && { messageId: { $exists: false } }),
              },
        )
        .limit(limit - removed)
        .toArray()
      for (const doc of due) {
        if (status === 'attached' && (await this.claimedByMessage(doc))) continue
        if (status !== 'deleted') {
          const marked = await this.attachments.updateOne(
            { _id: doc._id, status, orphanAt: doc.orphanAt },
            { $set: { status: 'deleted' } },
          )
          if (marked.modifiedCount === 0) continue
        }
        await this.purge(doc)
        this.swept.inc({ reason: status === 'deleted' ? 'deleted' : 'orphan' })
        removed++
      }
    }
    return removed
  }

  /**
   * Deletes the upload key of checked attachments whose presigned PUT has expired: whatever a
   * client PUT there after the check (the served copy is elsewhere) goes. Resolves to how many.
   */
  private async closeUploads(now: Date, limit: number): Promise<number> {
    let closed = 0
    // Not pending ones: their upload key holds the bytes still to be checked (the orphan sweep decides).
    for (const status of ['ready', 'attached'] as const) {
      if (closed >= limit) break
      const open = await this.attachments
        .find({ uploadOpen: true, status, uploadExpiresAt: { $lt: now } })
        .limit(limit - closed)
        .toArray()
      for (const doc of open) {
        await this.objects.delete(doc.uploadKey)
        await this.attachments.updateOne({ _id: doc._id, uploadOpen: true }, { $unset: { uploadOpen: '' } })
        closed++
      }
    }
    return closed
  }

  /** A claim without `messageId`: did its message get inserted after all (a crash before bind)? */
  private async claimedByMessage(doc: AttachmentDoc): Promise<boolean> {
    const messages = this.attachments.db.collection<MessageDoc>('messages')
    const message = await messages.findOne(
      { conversationId: doc.conversationId, 'attachments.id': doc._id },
      { projection: { _id: 1 } },
    )
    if (message) await this.bind([doc._id], message._id)
    return message !== null
  }

  /** Removes every object of an attachment, then its document. */
  private async purge(doc: AttachmentDoc): Promise<void> {
    await this.objects.delete(doc.uploadKey)
    await this.objects.delete(doc.key)
    if (doc.thumbnail) await this.objects.delete(doc.thumbnail.key)
    await this.attachments.deleteOne({ _id: doc._id, status: 'deleted' })
  }

  /**
   * Checks an upload and makes it ready: the real size and type must be the declared ones (else
   * the object and the attachment are removed: 422 naming `field`). While nothing is uploaded the
   * attachment stays, and the answer is `notUploaded`: 422 naming `field` or a 409. Object-store
   * failures are 503 and leave it pending.
   */
  private async verify(
    doc: AttachmentDoc,
    field: string,
    notUploaded: 'invalid' | 'conflict' = 'invalid',
  ): Promise<AttachmentDoc> {
    const info = await this.objects.stat(doc.uploadKey)
    if (!info) {
      this.rejections.inc({ reason: 'missing' })
      const message = 'Not uploaded yet: PUT the file to its upload URL first'
      throw notUploaded === 'conflict'
        ? problems.conflict(message)
        : problems.validation([{ field, message }])
    }
    if (info.size !== doc.size)
      return this.refuse(doc, 'size', field, `The upload has ${info.size} bytes, ${doc.size} were declared`)
    if (!bytesAre(doc.contentType, await this.objects.head(doc.uploadKey, SNIFF_BYTES)))
      return this.refuse(doc, 'type', field, `The upload is not ${doc.contentType}`)

    let served: Pick<AttachmentDoc, 'size' | 'width' | 'height' | 'thumbnail'> = { size: doc.size }
    if (isImage(doc.contentType)) {
      const bytes = await this.objects.read(doc.uploadKey)
      const image = await processImage(bytes, doc.contentType).catch((error: unknown) => {
        // sharp missing on this replica: not the upload's fault, it stays pending (503).
        if (error instanceof HttpProblem) throw error
        return undefined
      })
      if (!image)
        return this.refuse(doc, 'image', field, `The upload is not a readable ${doc.contentType} image`)
      const thumbnail = {
        key: `${doc.key}.thumbnail.webp`,
        contentType: 'image/webp',
        width: image.thumbnailWidth,
        height: image.thumbnailHeight,
      }
      await this.objects.write(thumbnail.key, image.thumbnail, thumbnail.contentType)
      await this.objects.write(doc.key, image.original, doc.contentType)
      served = { size: image.original.length, width: image.width, height: image.height, thumbnail }
    } else {
      // Not an image: the bytes as uploaded, untouched, copied where the PUT URL cannot reach.
      await this.objects.copy(doc.uploadKey, doc.key, doc.contentType)
    }
    await this.objects.delete(doc.uploadKey)
    const ready = await this.attachments.findOneAndUpdate(
      { _id: doc._id, status: 'pending' },
      { $set: { status: 'ready', ...served } },
      { returnDocument: 'after' },
    )
    const kind = isImage(doc.contentType) ? 'image' : 'file'
    if (ready) {
      this.uploads.inc({ kind })
      this.bytes.inc({ kind }, served.size)
      return ready
    }
    // Checked concurrently (the same bytes): whatever that check made of it.
    const current = await this.attachments.findOne({ _id: doc._id })
    if (!current || current.status === 'deleted')
      throw problems.validation([{ field, message: 'No such attachment' }])
    return current
  }

  /** The upload lied: its object and the attachment are removed, 422 naming `field`. */
  private async refuse(
    doc: AttachmentDoc,
    reason: RejectionReason,
    field: string,
    message: string,
  ): Promise<never> {
    this.rejections.inc({ reason })
    await this.objects.delete(doc.uploadKey)
    await this.attachments.deleteOne({ _id: doc._id, status: 'pending' })
    throw problems.validation([{ field, message: `${message}: the upload was removed` }])
  }

  /** Counts an upload against the owner's daily quotas (UTC days), or 429 until the next day. */
  private async takeQuota(ownerId: string, size: number): Promise<void> {
    const now = Date.now()
    const day = new Date(now).toISOString().slice(0, 10)
    const retryAfter = Math.max(1, Math.ceil((DAY_MS - (now % DAY_MS)) / 1000))
    let verdict: unknown
    try {
      verdict = await this.redis.eval(
        TAKE_QUOTA,
        1,
        `chat:attachment-quota:${ownerId}:${day}`,
        size,
        this.rules.dailyCount,
        this.rules.dailyBytes,
        DAY_MS + 60_000,
      )
    } catch (error) {
      // Redis down: uploads stay possible (size and type limits still hold), as the cache is bypassed.
      this.logger.warn(
        { err: error instanceof Error ? error.message : error },
        'attachment quota not checked',
      )
      return
    }
    if (verdict === 0) return
    this.rejections.inc({ reason: verdict === 1 ? 'quota_count' : 'quota_bytes' })
    throw problems.tooManyRequests(retryAfter)
  }

  private toAttachment(doc: AttachmentDoc): Attachment {
    const status = doc.status === 'deleted' ? 'attached' : doc.status
    return {
      id: doc._id,
      filename: doc.filename,
      contentType: doc.contentType,
      size: doc.size,
      status,
      width: doc.width ?? null,
      height: doc.height ?? null,
      conversationId: doc.messageId ? (doc.conversationId ?? null) : null,
      messageId: doc.messageId ?? null,
      createdAt: doc.createdAt.toISOString(),
      download: doc.status === 'pending' ? null : (this.views([messageAttachmentOf(doc)])[0] ?? null),
    }
  }
}

export function messageAttachmentOf(doc: AttachmentDoc): MessageAttachmentDoc {
  return {
    id: doc._id,
    filename: doc.filename,
    contentType: doc.contentType,
    size: doc.size,
    key: doc.key,
    ...(doc.width !== undefined && { width: doc.width }),
    ...(doc.height !== undefined && { height: doc.height }),
    ...(doc.thumbnail && { thumbnail: doc.thumbnail }),
  }
}
