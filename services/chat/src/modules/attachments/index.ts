import {
  type AccessTokenVerifier,
  authPlugin,
  problemResponses,
  problems,
  requestContext,
} from '@parley/common'
import { Elysia } from 'elysia'
import { Attachment, AttachmentParams, CreateAttachmentBody, CreatedAttachment } from './model'
import type { AttachmentService } from './service'

/** `attachments` absent (a deployment or benchmark without an object store): every route answers 503. */
export function attachmentRoutes(verifier: AccessTokenVerifier, service: AttachmentService | undefined) {
  const attachments = () => {
    if (!service) throw problems.serviceUnavailable('Attachments are not configured')
    return service
  }
  return new Elysia({ name: 'chat.attachments', detail: { tags: ['attachments'] } })
    .use(requestContext)
    .use(authPlugin(verifier))
    .post(
      '/attachments',
      async ({ identity, body, status }) => status(201, await attachments().create(identity.userId, body)),
      {
        auth: true,
        body: CreateAttachmentBody,
        response: { 201: CreatedAttachment, ...problemResponses(400, 401, 422, 429, 503) },
        detail: {
          summary: 'Declare an upload',
          description:
            'Returns the attachment (`pending`) and a presigned PUT valid for CHAT_ATTACHMENT_UPLOAD_URL_SECONDS. 422 naming `body.contentType` outside CHAT_ATTACHMENT_CONTENT_TYPES, `body.size` above CHAT_ATTACHMENT_MAX_BYTES, `body.filename` with nothing left after cleaning. 429 (Retry-After: the next UTC day) past CHAT_ATTACHMENT_DAILY_COUNT or CHAT_ATTACHMENT_DAILY_BYTES. Then PUT the bytes, optionally `POST …/complete`, and send a message with `attachmentIds`.',
        },
      },
    )
    .post(
      '/attachments/:id/complete',
      ({ identity, params }) => attachments().complete(identity.userId, params.id),
      {
        auth: true,
        params: AttachmentParams,
        response: { 200: Attachment, ...problemResponses(401, 404, 409, 422, 503) },
        detail: {
          summary: 'Check an upload',
          description:
            "The owner only (404 otherwise). Checks the object's real size and type against the declared ones: 422 naming `params.id` when they differ (the object and the attachment are removed); 409 while nothing is uploaded yet (it stays pending). An image is re-encoded without its metadata (EXIF location included), measured and given a thumbnail. Idempotent; sending a message with the attachment does the same check. 503 while the object store is unavailable (the attachment stays pending).",
        },
      },
    )
    .get('/attachments/:id', ({ identity, params }) => attachments().get(identity.userId, params.id), {
      auth: true,
      params: AttachmentParams,
      response: { 200: Attachment, ...problemResponses(401, 404, 422, 503) },
      detail: {
        summary: 'An attachment with fresh download URLs',
        description:
          'Its owner, or a participant of the conversation of its message; 404 for anyone else. `download` carries presigned GETs valid for CHAT_ATTACHMENT_DOWNLOAD_URL_SECONDS (`Content-Disposition: attachment` for non-images).',
      },
    })
}
