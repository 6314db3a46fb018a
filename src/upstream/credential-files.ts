/**
 * Upstream credentials from files that change while unnar runs: rotated tokens, a new netrc. A
 * file is looked at (one stat) at most once per `recheckMs`, when an upstream request wants
 * credentials, and read again when it changed. A file that cannot be read or parsed keeps the
 * credentials it gave before, with a warning: a half-written or briefly missing file must not log
 * unnar out of its caches.
 */
import { statSync } from 'node:fs'
import type { Logger } from '../log.js'
import type { NetrcEntry } from '../formats/netrc.js'
import type { UpstreamCredentials } from './credentials.js'

/** What an HTTP upstream asks for its credentials, on every request. */
export interface CredentialSource {
  /** The credentials to use now: the same object as long as nothing changed. */
  current(): UpstreamCredentials
}

/**
 * A file whose parsed content is kept, and replaced when the file changes and parses to something.
 * A change to nothing (an emptied file, one caught in the middle of being rewritten in place) is
 * refused like a broken one: a file meant to hold no credentials any more needs a restart.
 */
class WatchedFile<T> {
  readonly #path: string
  readonly #parse: (path: string) => T
  readonly #isEmpty: (value: T) => boolean
  readonly #log: Logger
  #value: T
  #signature: string

  /** Reads the file now; throws as `parse` does (the start refuses a bad file). */
  constructor(path: string, parse: (path: string) => T, isEmpty: (value: T) => boolean, log: Logger) {
    this.#path = path
    this.#parse = parse
    this.#isEmpty = isEmpty
    this.#log = log
    this.#signature = signature(path)
    this.#value = parse(path)
  }

  get value(): T {
    return this.#value
  }

  /** True when the file changed and its new content was taken. */
  refresh(): boolean {
    const now = signature(this.#path)
    if (now === this.#signature) return false
    this.#signature = now
    try {
      const value = this.#parse(this.#path)
      if (this.#isEmpty(value) && !this.#isEmpty(this.#value)) throw new Error('it has no entries now')
      this.#value = value
      this.#log.info('upstream credentials file changed: read again', { file: this.#path })
      return true
    } catch (err) {
      // Logged once per change of the file, not once per request.
      this.#log.warn('upstream credentials file changed but cannot be used: keeping what it gave before', {
        file: this.#path,
        error: (err as Error).message,
      })
      return false
    }
  }
}

/** Any change of the file, including one replacing it by rename (how secrets are usually rotated). */
function signature(path: string): string {
  try {
    const s = statSync(path, { bigint: true })
    return `${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`
  } catch (err) {
    return `missing:${(err as NodeJS.ErrnoException).code ?? ''}`
  }
}

export interface CredentialFilesOptions {
  readonly netrcFile: string | undefined
  readonly readNetrc: (file: string) => NetrcEntry[]
  readonly tokensFile: string | undefined
  readonly readTokens: (file: string) => ReadonlyMap<string, string>
  /** Tokens that do not come from a file; they win over the file's for the same host. */
  readonly fixedTokens: ReadonlyMap<string, string>
  readonly log: Logger
  readonly recheckMs?: number
}

export class CredentialFiles implements CredentialSource {
  readonly #netrc: WatchedFile<NetrcEntry[]> | undefined
  readonly #tokens: WatchedFile<ReadonlyMap<string, string>> | undefined
  readonly #fixedTokens: ReadonlyMap<string, string>
  readonly #recheckMs: number
  #checkedAt: number
  #credentials: UpstreamCredentials

  constructor(options: CredentialFilesOptions) {
    this.#netrc =
      options.netrcFile === undefined
        ? undefined
        : new WatchedFile(options.netrcFile, options.readNetrc, (entries) => entries.length === 0, options.log)
    this.#tokens =
      options.tokensFile === undefined
        ? undefined
        : new WatchedFile(options.tokensFile, options.readTokens, (tokens) => tokens.size === 0, options.log)
    this.#fixedTokens = options.fixedTokens
    this.#recheckMs = options.recheckMs ?? 1000
    this.#checkedAt = performance.now()
    this.#credentials = this.#combine()
  }

  current(): UpstreamCredentials {
    const now = performance.now()
    if (now - this.#checkedAt >= this.#recheckMs) {
      this.#checkedAt = now
      // Both are looked at: each logs its own change.
      const netrcChanged = this.#netrc?.refresh() ?? false
      const tokensChanged = this.#tokens?.refresh() ?? false
      if (netrcChanged || tokensChanged) this.#credentials = this.#combine()
    }
    return this.#credentials
  }

  #combine(): UpstreamCredentials {
    const fromFile = this.#tokens?.value
    return {
      netrc: this.#netrc?.value,
      tokens: fromFile === undefined ? this.#fixedTokens : new Map([...fromFile, ...this.#fixedTokens]),
    }
  }
}
