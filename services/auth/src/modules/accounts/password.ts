export type Argon2Cost = {
  /** KiB of memory per hash. */
  memoryCost: number
  timeCost: number
}

const PHC_COST = /^\$argon2id\$v=\d+\$m=(\d+),t=(\d+),p=\d+\$/

/**
 * The same password typed on another device may arrive composed differently ("é" as one code
 * point or as e + accent): compare the NFC form (RFC 8265 OpaqueString, NIST SP 800-63B 5.1.1.2).
 */
const normalise = (password: string) => password.normalize('NFC')

/** argon2id password hashing (Bun.password: native, off the JS thread). */
export class PasswordHasher {
  /** Verified against for unknown emails, so that answer costs what a wrong password costs. */
  private readonly dummyHash: Promise<string>

  constructor(private readonly cost: Argon2Cost) {
    this.dummyHash = this.hash(crypto.randomUUID())
  }

  hash(password: string): Promise<string> {
    return Bun.password.hash(normalise(password), { algorithm: 'argon2id', ...this.cost })
  }

  verify(password: string, hash: string): Promise<boolean> {
    return Bun.password.verify(normalise(password), hash)
  }

  /** Spends one verification's worth of time and memory, then fails. */
  async verifyNothing(password: string): Promise<false> {
    await Bun.password.verify(normalise(password), await this.dummyHash)
    return false
  }

  /** True when `hash` was made with other parameters than the configured ones (rehash on login). */
  needsRehash(hash: string): boolean {
    const match = PHC_COST.exec(hash)
    return !match || Number(match[1]) !== this.cost.memoryCost || Number(match[2]) !== this.cost.timeCost
  }
}
