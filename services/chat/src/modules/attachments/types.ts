/**
 * The content types chat accepts and how it recognises each from the object's first bytes:
 * the declared type is checked against the bytes actually uploaded, never trusted.
 */

/** Bytes read from the start of an upload to recognise its type. */
export const SNIFF_BYTES = 512

const startsWith = (bytes: Uint8Array, signature: readonly number[], offset = 0) =>
  bytes.length >= offset + signature.length && signature.every((byte, i) => bytes[offset + i] === byte)

const ascii = (text: string) => [...text].map((character) => character.charCodeAt(0))

/** UTF-8 text: no NUL and no invalid sequence (a cut last character is fine: the sample is a prefix). */
function isText(bytes: Uint8Array): boolean {
  if (bytes.includes(0)) return false
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(bytes, { stream: true })
    return true
  } catch {
    return false
  }
}

const SNIFFERS = {
  'image/jpeg': (bytes: Uint8Array) => startsWith(bytes, [0xff, 0xd8, 0xff]),
  'image/png': (bytes: Uint8Array) => startsWith(bytes, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
  'image/gif': (bytes: Uint8Array) =>
    startsWith(bytes, ascii('GIF87a')) || startsWith(bytes, ascii('GIF89a')),
  'image/webp': (bytes: Uint8Array) =>
    startsWith(bytes, ascii('RIFF')) && startsWith(bytes, ascii('WEBP'), 8),
  'application/pdf': (bytes: Uint8Array) => startsWith(bytes, ascii('%PDF-')),
  'application/zip': (bytes: Uint8Array) => startsWith(bytes, [0x50, 0x4b, 0x03, 0x04]),
  'video/mp4': (bytes: Uint8Array) => startsWith(bytes, ascii('ftyp'), 4),
  'audio/mpeg': (bytes: Uint8Array) =>
    startsWith(bytes, ascii('ID3')) ||
    (bytes.length >= 2 && bytes[0] === 0xff && ((bytes[1] ?? 0) & 0xe0) === 0xe0),
  'text/plain': isText,
} as const satisfies Record<string, (bytes: Uint8Array) => boolean>

export type AttachmentType = keyof typeof SNIFFERS

/** The types sharp decodes: they get width, height, a thumbnail and their metadata stripped. */
export const IMAGE_TYPES: ReadonlySet<string> = new Set([
  'image/jpeg',
  'image/png',
  'image/gif',
  'image/webp',
])

export const DEFAULT_ATTACHMENT_TYPES = Object.keys(SNIFFERS).join(',')

/** One known type, as a regular expression (the configuration's allow-list may name only these). */
export const ATTACHMENT_TYPE_PATTERN = Object.keys(SNIFFERS)
  .map((type) => type.replace(/[.+/]/g, (character) => `\\${character}`))
  .join('|')

/** Whether the first bytes of an object are of `type`. */
export function bytesAre(type: string, bytes: Uint8Array): boolean {
  const sniff = (SNIFFERS as Record<string, (bytes: Uint8Array) => boolean>)[type]
  return sniff?.(bytes) === true
}
