import { dirname, join } from 'node:path'
import { problems } from '@parley/common'

type Sharp = typeof import('sharp').default

/**
 * sharp, loaded on the first image. From node_modules when run by bun; in the container image,
 * a compiled executable that resolves no package from disk, from the copy laid out beside it by
 * services/chat/scripts/image-files.sh. Resolves to undefined where neither loads: the service
 * still starts and serves everything else.
 */
let loading: Promise<Sharp | undefined> | undefined
function loadSharp(): Promise<Sharp | undefined> {
  const bundled = join(dirname(process.execPath), 'sharp', 'dist', 'sharp.mjs')
  loading ??= import('sharp')
    .catch(() => import(bundled))
    .then(
      (module: { default: Sharp }) => module.default,
      () => undefined,
    )
  return loading
}

/** Longest side of a thumbnail, in pixels. */
export const THUMBNAIL_MAX_PX = 320

/** Decoding stops past this many pixels (a 48 MP photo fits; a decompression bomb does not). */
const MAX_INPUT_PIXELS = 60_000_000

export type ProcessedImage = {
  /** The image as served: re-encoded in its own format without EXIF/XMP/IPTC (so no GPS), upright. */
  original: Uint8Array
  width: number
  height: number
  /** WebP, at most THUMBNAIL_MAX_PX on its longer side. */
  thumbnail: Uint8Array
  thumbnailWidth: number
  thumbnailHeight: number
}

/**
 * Re-encodes an uploaded image with sharp (libvips): sharp writes no metadata unless asked
 * (`withMetadata` is never called), so the served copy carries no EXIF, hence no location. The
 * EXIF orientation is applied first, since it is dropped with the rest. Animated GIF/WebP keep
 * their frames. Throws on bytes that do not decode; a 503 problem where sharp cannot load.
 */
export async function processImage(bytes: Uint8Array, contentType: string): Promise<ProcessedImage> {
  const sharp = await loadSharp()
  if (!sharp) throw problems.serviceUnavailable('Image processing is unavailable on this replica')
  const animated = contentType === 'image/gif' || contentType === 'image/webp'
  const input = () => sharp(bytes, { animated, limitInputPixels: MAX_INPUT_PIXELS, failOn: 'error' })
  const upright = animated ? input() : input().rotate()
  const encoded = (() => {
    switch (contentType) {
      case 'image/jpeg':
        return upright.jpeg({ quality: 90, mozjpeg: true })
      case 'image/png':
        return upright.png()
      case 'image/gif':
        return upright.gif()
      default:
        return upright.webp({ quality: 90 })
    }
  })()
  const original = await encoded.toBuffer({ resolveWithObject: true })
  const thumbnail = await sharp(original.data, { limitInputPixels: MAX_INPUT_PIXELS })
    .resize(THUMBNAIL_MAX_PX, THUMBNAIL_MAX_PX, { fit: 'inside', withoutEnlargement: true })
    .webp({ quality: 80 })
    .toBuffer({ resolveWithObject: true })
  return {
    original: new Uint8Array(original.data),
    width: original.info.width,
    // An animated image's pages are stacked: its height is one page's.
    height: original.info.pageHeight ?? original.info.height,
    thumbnail: new Uint8Array(thumbnail.data),
    thumbnailWidth: thumbnail.info.width,
    thumbnailHeight: thumbnail.info.height,
  }
}
