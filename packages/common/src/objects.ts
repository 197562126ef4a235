import { type Static, type TObject, Type as t } from '@sinclair/typebox'
import { DEVELOPMENT_DEFAULT, requiredSetting } from './config'
import { problems } from './errors'

/**
 * Any S3-compatible object store. Bun's built-in S3 client (`Bun.S3Client`): SigV4 signing,
 * presigned GET/PUT with expiry and a signed content type, stat, ranged reads, writes and
 * deletes, with no dependency (the AWS SDK v3 and its presigner weigh megabytes and several
 * packages for the same few calls).
 */
export const ObjectStoreEnv = {
  S3_ENDPOINT: t.Optional(
    t.String({
      pattern: '^https?://',
      [DEVELOPMENT_DEFAULT]: 'http://127.0.0.1:7070',
      description:
        'S3-compatible endpoint the service calls; required unless PARLEY_ENV=development (then http://127.0.0.1:7070)',
    }),
  ),
  S3_PUBLIC_ENDPOINT: t.Optional(
    t.String({
      pattern: '^https?://',
      description:
        'Endpoint in the presigned URLs handed to clients, when they reach the store by another address (default S3_ENDPOINT)',
    }),
  ),
  S3_REGION: t.String({ minLength: 1, default: 'us-east-1', description: 'Region signed into requests' }),
  S3_BUCKET: t.String({ minLength: 1, default: 'parley', description: 'Bucket of the objects (must exist)' }),
  S3_ACCESS_KEY_ID: t.Optional(
    t.String({
      minLength: 1,
      [DEVELOPMENT_DEFAULT]: 'parley',
      description: 'Access key id; required unless PARLEY_ENV=development (then parley)',
    }),
  ),
  S3_SECRET_ACCESS_KEY: t.Optional(
    t.String({
      minLength: 1,
      [DEVELOPMENT_DEFAULT]: 'parley-dev-secret',
      description: 'Secret access key (a Secret in the chart); required unless PARLEY_ENV=development',
    }),
  ),
  S3_TIMEOUT_MS: t.Integer({
    minimum: 100,
    default: 10_000,
    description: 'Longest wait for one object-store call before it fails as 503',
  }),
}

export type ObjectStoreConfig = Static<TObject<typeof ObjectStoreEnv>>

/** What the store knows of an object. */
export type ObjectInfo = { size: number; contentType: string }

export type PresignGetOptions = {
  expiresInSeconds: number
  /** Sent back as the response's Content-Disposition (response-content-disposition). */
  contentDisposition?: string
  /** Sent back as the response's Content-Type (response-content-type). */
  contentType?: string
}

const NOT_FOUND = new Set(['NoSuchKey', 'NotFound', 'ERR_S3_FILE_NOT_FOUND'])

const codeOf = (error: unknown): unknown => (error as { code?: unknown } | null)?.code

function isMissing(error: unknown): boolean {
  const code = codeOf(error)
  return typeof code === 'string' && NOT_FOUND.has(code)
}

/**
 * A bucket of an S3-compatible store. Every call that reaches the store fails as a 503 problem
 * when the store is unreachable, slow past `timeoutMs` or answers with a server error, so a
 * request either finishes its object work or writes nothing after it.
 */
export class ObjectStore {
  private readonly client: Bun.S3Client
  /** Presigns for clients: the same credentials, the public endpoint in the URL (the host is signed). */
  private readonly presigner: Bun.S3Client

  constructor(
    options: {
      endpoint: string
      publicEndpoint?: string
      region: string
      bucket: string
      accessKeyId: string
      secretAccessKey: string
    },
    private readonly timeoutMs = 10_000,
  ) {
    const base = {
      region: options.region,
      bucket: options.bucket,
      accessKeyId: options.accessKeyId,
      secretAccessKey: options.secretAccessKey,
    }
    this.client = new Bun.S3Client({ ...base, endpoint: options.endpoint })
    this.presigner = new Bun.S3Client({ ...base, endpoint: options.publicEndpoint ?? options.endpoint })
  }

  /**
   * A URL that accepts PUTs of the key until it expires. Bun signs the host only, so neither the
   * type nor the length is enforced by the store: the caller checks the object afterwards.
   */
  presignPut(key: string, contentType: string, expiresInSeconds: number): string {
    return this.presigner.presign(key, { method: 'PUT', type: contentType, expiresIn: expiresInSeconds })
  }

  /** A URL that GETs the object until it expires. */
  presignGet(key: string, options: PresignGetOptions): string {
    return this.presigner.presign(key, {
      method: 'GET',
      expiresIn: options.expiresInSeconds,
      ...(options.contentDisposition !== undefined && { contentDisposition: options.contentDisposition }),
      ...(options.contentType !== undefined && { type: options.contentType }),
    })
  }

  /** The object's size and type, or undefined when there is none. */
  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const stat = await this.call(() => this.client.file(key).stat())
      return { size: stat.size, contentType: stat.type }
    } catch (error) {
      if (isMissing(error)) return undefined
      throw error
    }
  }

  /** The object's first `length` bytes (fewer when it is shorter): a ranged GET. */
  async head(key: string, length: number): Promise<Uint8Array> {
    return new Uint8Array(await this.call(() => this.client.file(key).slice(0, length).arrayBuffer()))
  }

  async read(key: string): Promise<Uint8Array> {
    return new Uint8Array(await this.call(() => this.client.file(key).arrayBuffer()))
  }

  async write(key: string, data: Uint8Array, contentType: string): Promise<void> {
    await this.call(() => this.client.write(key, data, { type: contentType }))
  }

  /** Copies an object to another key (streamed through this process, as Bun has no CopyObject). */
  async copy(from: string, to: string, contentType: string): Promise<void> {
    await this.call(() => this.client.write(to, this.client.file(from), { type: contentType }))
  }

  /** Deletes the object; deleting a missing one succeeds (S3 semantics). */
  async delete(key: string): Promise<void> {
    try {
      await this.call(() => this.client.delete(key))
    } catch (error) {
      if (!isMissing(error)) throw error
    }
  }

  /** Readiness: the bucket answers a one-key listing. */
  async check(): Promise<void> {
    await this.call(() => this.client.list({ maxKeys: 1 }))
  }

  /**
   * Runs one store call within the timeout; unreachable, slow or failing (5xx) → 503. A kept-alive
   * connection the store closed meanwhile is retried once on a new one.
   */
  private async call<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await this.attempt(run)
    } catch (error) {
      if (codeOf(error) !== 'ConnectionClosed') throw error
      return this.attempt(run)
    }
  }

  private async attempt<T>(run: () => Promise<T>): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(problems.serviceUnavailable('The object store did not answer in time')),
        this.timeoutMs,
      )
    })
    try {
      return await Promise.race([run(), timeout])
    } catch (error) {
      if (isMissing(error) || isClientError(error) || codeOf(error) === 'ConnectionClosed') throw error
      if (error instanceof Error && error.name === 'HttpProblem') throw error
      throw problems.serviceUnavailable('The object store is unavailable')
    } finally {
      clearTimeout(timer)
    }
  }
}

/** A 4xx answer of the store other than a missing key (e.g. access denied): a bug or a misconfiguration, not an outage. */
function isClientError(error: unknown): boolean {
  const code = codeOf(error)
  return (
    typeof code === 'string' &&
    /^(AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|NoSuchBucket)$/.test(code)
  )
}

/** The store of a service's configuration (credentials required outside development). */
export function objectStoreFor(config: ObjectStoreConfig): ObjectStore {
  return new ObjectStore(
    {
      endpoint: requiredSetting(config, 'S3_ENDPOINT'),
      ...(config.S3_PUBLIC_ENDPOINT !== undefined && { publicEndpoint: config.S3_PUBLIC_ENDPOINT }),
      region: config.S3_REGION,
      bucket: config.S3_BUCKET,
      accessKeyId: requiredSetting(config, 'S3_ACCESS_KEY_ID'),
      secretAccessKey: requiredSetting(config, 'S3_SECRET_ACCESS_KEY'),
    },
    config.S3_TIMEOUT_MS,
  )
}
