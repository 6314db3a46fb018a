/**
 * A directory of a verified NAR as a tar, tar.gz, tar.zst or zip archive, streamed: files are read
 * from the NAR one after the other as the client takes the archive, and the same directory always
 * gives the same bytes.
 */
import { pipeline, Readable, type Transform } from 'node:stream'
import { ReadableStream as WebReadableStream } from 'node:stream/web'
import { createGzip } from 'node:zlib'
import { pack as tarPack, type Pack } from 'tar-stream'
import { ZipFile } from 'yazl'
import { CompressStream as ZstdCompressStream } from 'zstd-napi'
import type { ListingNode } from '../formats/listing.js'
import type { HeldNar } from './file-source.js'
import { READ_MAX_BYTES } from './nar-source.js'

export const ARCHIVE_FORMATS = ['tar', 'tar.gz', 'tar.zst', 'zip'] as const
export type ArchiveFormat = (typeof ARCHIVE_FORMATS)[number]

type DirectoryNode = Extract<ListingNode, { type: 'directory' }>

/** One node of the archive, by its path inside it (`<name>/…`). */
interface ArchiveEntry {
  readonly path: string
  readonly node: ListingNode
}

/** A regular file's contents in the NAR: small ones read at once, others streamed. */
type OpenFile = (node: RegularNode) => Promise<Uint8Array | Readable>
type RegularNode = Extract<ListingNode, { type: 'regular' }>

// What Nix itself gives every store file (the NAR has no times): the same path, the same bytes.
const TAR_MTIME = new Date(1000)
// DOS times start in 1980 and are local time: yazl writes this date's local fields, so the fields
// are 1980-01-01 00:00 in every time zone (and no Unix-time extra field, which would differ).
const ZIP_MTIME = new Date(1980, 0, 1)
// Writable modes rather than the store's read-only ones: an unpacked archive can be deleted.
const DIR_MODE = 0o755
const FILE_MODE = 0o644
const EXEC_MODE = 0o755
const LINK_MODE = 0o777

/**
 * The archive of `directory` (whose entries go under `name/`), reading contents from `nar`, which
 * must be verified. The NAR is held until the archive ends, fails or is cancelled.
 */
export function archiveStream(
  nar: HeldNar,
  directory: DirectoryNode,
  name: string,
  format: ArchiveFormat,
): ReadableStream<Uint8Array> {
  const fail = (err: Error) => archive.destroy(err)
  // The file being read: both libraries pipe it, and a pipe leaves its source open when the
  // archive is abandoned, which would keep the NAR read (and its lease) forever.
  const reading = new Set<Readable>()
  const open: OpenFile = async (node) => {
    const offset = node.narOffset
    // Listings of unnar's own NAR index always carry offsets.
    if (offset === undefined) throw new Error('a file of a verified NAR without narOffset')
    // No bigger than one streamed read: in one positioned read, as a stream per file costs more
    // than the copy (the 1,563 entries of the tricky fixture as a tar: 1.5 s streamed, 0.8 s so).
    if (node.size <= READ_MAX_BYTES) return nar.source.readBytes(offset, offset + node.size)
    const web = nar.source.read(offset, offset + node.size) as import('node:stream/web').ReadableStream<Uint8Array>
    const file = Readable.fromWeb(web)
    // A pipe does not pass errors on: a failed read fails the archive (rather than the process).
    file.once('error', fail)
    reading.add(file)
    file.once('close', () => reading.delete(file))
    return file
  }
  const entries = walk(directory, name)
  const archive = format === 'zip' ? zipArchive(entries, open, fail) : tarArchive(entries, open)
  const codec = format === 'tar.gz' ? createGzip({ level: 6 }) : format === 'tar.zst' ? zstdCodec() : undefined
  const out = codec === undefined ? archive : pipeline(archive, codec, () => {})
  out.once('close', () => {
    for (const file of reading) file.destroy()
    archive.destroy()
  })
  // Pulled one chunk at a time (Readable.toWeb and web transforms have buffered whole outputs on
  // this Node); cancelled, it destroys `out`.
  return nar.stream(WebReadableStream.from<Uint8Array>(out) as ReadableStream<Uint8Array>)
}

/** Every node below `directory`, itself first, each directory before its entries, in NAR (byte) order. */
function* walk(directory: DirectoryNode, name: string): Generator<ArchiveEntry> {
  yield { path: name, node: directory }
  for (const [entry, node] of directory.entries) {
    const path = `${name}/${entry}`
    if (node.type === 'directory') yield* walk(node, path)
    else yield { path, node }
  }
}

function tarArchive(entries: Iterable<ArchiveEntry>, open: OpenFile): Readable {
  const pack = tarPack()
  writeTar(pack, entries, open).catch((err: Error) => pack.destroy(err))
  // tar-stream is a streamx stream: wrapped, it pipes and ends like a Node one.
  return Readable.from(pack)
}

/** One entry after the other, each file's bytes flowing only as fast as the archive is read. */
async function writeTar(pack: Pack, entries: Iterable<ArchiveEntry>, open: OpenFile): Promise<void> {
  const common = { mtime: TAR_MTIME, uid: 0, gid: 0, uname: '', gname: '' }
  for (const { path, node } of entries) {
    if (pack.destroyed) return
    if (node.type === 'directory') {
      await entryDone(pack, { ...common, name: `${path}/`, type: 'directory', mode: DIR_MODE })
    } else if (node.type === 'symlink') {
      await entryDone(pack, { ...common, name: path, type: 'symlink', linkname: node.target, mode: LINK_MODE })
    } else {
      const mode = node.executable ? EXEC_MODE : FILE_MODE
      const header = { ...common, name: path, type: 'file' as const, size: node.size, mode }
      await entryDone(pack, header, await open(node))
    }
  }
  pack.finalize()
}

function entryDone(pack: Pack, header: Parameters<Pack['entry']>[0], body?: Uint8Array | Readable): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error | null) => (err ? reject(err) : resolve())
    if (body instanceof Readable) {
      const sink = pack.entry(header, done)
      // Its error also reaches `done`; unheard, the event would be thrown out of the process.
      sink.on('error', () => {})
      body.pipe(sink)
    } else if (body !== undefined) pack.entry(header, body, done)
    else pack.entry(header, done)
  })
}

function zipArchive(entries: Iterable<ArchiveEntry>, open: OpenFile, fail: (err: Error) => void): Readable {
  const zip = new ZipFile()
  // yazl reports on the ZipFile, not on its output.
  zip.on('error', fail)
  const common = { mtime: ZIP_MTIME, forceDosTimestamp: true }
  // yazl reads each file only when its turn comes, and writes it as the output is read; it keeps
  // each entry's central-directory record (like the listing itself) until the end.
  for (const { path, node } of entries) {
    if (node.type === 'directory') zip.addEmptyDirectory(`${path}/`, { ...common, mode: 0o040000 | DIR_MODE })
    else if (node.type === 'symlink') {
      // The Unix way (Info-ZIP): the target as the entry's data, S_IFLNK in the external attributes.
      zip.addBuffer(Buffer.from(node.target), path, { ...common, mode: 0o120000 | LINK_MODE, compress: false })
    } else {
      const mode = 0o100000 | (node.executable ? EXEC_MODE : FILE_MODE)
      zip.addReadStreamLazy(path, { ...common, mode, size: node.size }, (done) => {
        open(node).then((body) => {
          done(null, body instanceof Readable ? body : Readable.from([body]))
        }, fail)
      })
    }
  }
  zip.end()
  return zip.outputStream as Readable
}

function zstdCodec(): Transform {
  return new ZstdCompressStream() as unknown as Transform
}
