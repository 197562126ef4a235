import { t } from 'elysia'
import { Id, Timestamp } from '../conversations/model'

/** The most attachments one message may carry. */
export const MAX_ATTACHMENTS_PER_MESSAGE = 10

/** Longest filename kept, in characters. */
export const MAX_FILENAME_LENGTH = 255

export const AttachmentParams = t.Object({ id: Id('Attachment id') })

export const CreateAttachmentBody = t.Object({
  filename: t.String({
    minLength: 1,
    maxLength: 4 * MAX_FILENAME_LENGTH,
    description: `The file's name, only ever shown (the stored key is generated): path and control characters are dropped, 1–${MAX_FILENAME_LENGTH} characters must remain`,
  }),
  contentType: t.String({
    minLength: 1,
    maxLength: 255,
    description:
      'One of CHAT_ATTACHMENT_CONTENT_TYPES (422 naming `body.contentType` otherwise); the bytes are checked against it',
  }),
  size: t.Integer({
    minimum: 1,
    description:
      'Exact size in bytes, at most CHAT_ATTACHMENT_MAX_BYTES (422 naming `body.size`); the upload is checked against it',
  }),
})
export type CreateAttachmentBody = typeof CreateAttachmentBody.static

export const AttachmentStatus = t.Union([t.Literal('pending'), t.Literal('ready'), t.Literal('attached')], {
  description:
    '`pending`: declared, upload expected; `ready`: bytes checked, may be attached; `attached`: part of a message',
})

export const PresignedUpload = t.Object(
  {
    method: t.Literal('PUT', { description: 'Always PUT: send the bytes as the whole request body' }),
    url: t.String({ description: 'Presigned: PUT the bytes here, with the headers below' }),
    headers: t.Record(t.String(), t.String(), {
      description:
        'Headers to send with the PUT; the bytes are checked against the declared type and size afterwards',
    }),
    expiresAt: Timestamp('When `url` stops accepting the upload'),
  },
  { description: 'A presigned S3 PUT, valid for CHAT_ATTACHMENT_UPLOAD_URL_SECONDS' },
)

/** Fields an attachment and its message view share, described once. */
const Pixels = (side: string) =>
  t.Union([t.Integer({ minimum: 1 }), t.Null()], {
    description: `${side} in pixels of an image as served, once checked; null before, and for other files`,
  })
const Filename = t.String({
  description: 'As uploaded, cleaned (JSON-escaped; Content-Disposition carries it RFC 6266-encoded)',
})
const ContentType = t.String({
  description: 'MIME type, lowercase, one of CHAT_ATTACHMENT_CONTENT_TYPES; checked against the bytes',
})
const Size = t.Integer({
  minimum: 1,
  description:
    'Bytes: as declared until the upload is checked, then as served (an image without its metadata)',
})

const ThumbnailSide = t.Integer({
  minimum: 1,
  description: 'In pixels, at most 320: the image scaled down, its aspect ratio kept',
})

const Thumbnail = t.Object({
  url: t.String({ description: 'Presigned GET of the thumbnail (at most 320 px on its longer side, WebP)' }),
  width: ThumbnailSide,
  height: ThumbnailSide,
})

/** An attachment as a message view shows it. */
export const MessageAttachment = t.Object({
  id: t.String({ description: 'Attachment id (GET /attachments/{id} renews the URLs)' }),
  filename: Filename,
  contentType: ContentType,
  size: Size,
  width: Pixels('Width'),
  height: Pixels('Height'),
  url: t.String({
    description:
      'Presigned GET, valid for CHAT_ATTACHMENT_DOWNLOAD_URL_SECONDS; `Content-Disposition: attachment` unless an image',
  }),
  expiresAt: Timestamp('When `url` and `thumbnail.url` stop working'),
  thumbnail: t.Union([Thumbnail, t.Null()], {
    description: 'A small WebP preview; null for files that are not images',
  }),
})
export type MessageAttachment = typeof MessageAttachment.static

export const Attachment = t.Object({
  id: t.String({ description: 'UUIDv7' }),
  filename: Filename,
  contentType: ContentType,
  size: Size,
  status: AttachmentStatus,
  width: Pixels('Width'),
  height: Pixels('Height'),
  conversationId: t.Union([t.String(), t.Null()], {
    description: 'The conversation of its message; null until a sent message carries it',
  }),
  messageId: t.Union([t.String(), t.Null()], {
    description: 'The message that carries it; null until one is sent with it',
  }),
  createdAt: Timestamp('When the upload was declared'),
  download: t.Union([MessageAttachment, t.Null()], {
    description: 'Presigned downloads, once the bytes are checked',
  }),
})
export type Attachment = typeof Attachment.static

export const CreatedAttachment = t.Composite([Attachment, t.Object({ upload: PresignedUpload })])
export type CreatedAttachment = typeof CreatedAttachment.static
