/** The s3:// upstream: URL parsing, error mapping against a fake S3, and a whole cache served from s3rver. */
import assert from 'node:assert/strict'
import { readdir, readFile, mkdtemp, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { brotliCompressSync } from 'node:zlib'
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { parseS3Url, S3Upstream } from '../../src/upstream/s3-upstream.js'
import { UpstreamError, type UpstreamResponse } from '../../src/upstream/upstream.js'
import { cacheDir, fixturePath, type FixturePath } from '../helpers/fixtures.js'
import { encodeRel, sha256Hex, startUnnar, type TestUnnar } from '../helpers/unnar.js'

interface S3rverInstance {
  run(): Promise<AddressInfo>
  close(): Promise<void>
}
type S3rverConstructor = new (options: {
  address: string
  port: number
  silent: boolean
  directory: string
}) => S3rverInstance
const S3rver = createRequire(import.meta.url)('s3rver') as S3rverConstructor

/** s3rver knows only this access key id (it checks the id, not the SigV4 signature itself). */
const S3RVER_KEY = 'S3RVER'
const AWS_ENV = [
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'AWS_PROFILE',
  'AWS_REGION',
  'AWS_CONFIG_FILE',
  'AWS_SHARED_CREDENTIALS_FILE',
  'AWS_EC2_METADATA_DISABLED',
]

/** Sets AWS_* variables for the duration of a test group; `undefined` removes one. Returns the restorer. */
function setAwsEnv(values: Record<string, string | undefined>): () => void {
  const saved = new Map(AWS_ENV.map((k) => [k, process.env[k]]))
  for (const key of AWS_ENV) delete process.env[key]
  for (const [key, value] of Object.entries(values)) if (value !== undefined) process.env[key] = value
  return () => {
    for (const [key, value] of saved) {
      if (value === undefined) delete process.env[key]
      else process.env[key] = value
    }
  }
}

async function readAll(res: UpstreamResponse): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of res.body) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

async function expectUpstreamError(promise: Promise<unknown>, kind: string, pattern?: RegExp): Promise<UpstreamError> {
  try {
    await promise
  } catch (err) {
    assert.ok(err instanceof UpstreamError, `expected an UpstreamError, got ${String(err)}`)
    assert.equal(err.kind, kind, err.message)
    if (pattern !== undefined) assert.match(err.message, pattern)
    return err
  }
  assert.fail(`expected an UpstreamError of kind ${kind}`)
}

describe('parseS3Url', () => {
  it('defaults to us-east-1, the default credential chain and virtual-hosted addressing', () => {
    const loc = parseS3Url('s3://my-cache')
    assert.deepEqual(
      { ...loc },
      {
        bucket: 'my-cache',
        region: 'us-east-1',
        endpoint: undefined,
        profile: undefined,
        forcePathStyle: false,
        name: 's3://my-cache',
      },
    )
  })

  it("reads region (and 2.8's aws-region alias) and profile", () => {
    const loc = parseS3Url('s3://my-cache?region=eu-west-1&profile=cache-reader')
    assert.equal(loc.region, 'eu-west-1')
    assert.equal(loc.profile, 'cache-reader')
    assert.equal(loc.name, 's3://my-cache?region=eu-west-1&profile=cache-reader')
    assert.equal(parseS3Url('s3://my-cache?aws-region=ap-south-1').region, 'ap-south-1')
  })

  it('takes a host:port endpoint with scheme= (default https) and turns on path style', () => {
    const http = parseS3Url('s3://nix?endpoint=127.0.0.1:9000&scheme=http&region=us-east-1')
    assert.equal(http.endpoint, 'http://127.0.0.1:9000')
    assert.equal(http.forcePathStyle, true)
    assert.equal(http.name, 's3://nix?endpoint=127.0.0.1:9000&scheme=http&region=us-east-1')
    assert.equal(parseS3Url('s3://nix?endpoint=minio.example.com').endpoint, 'https://minio.example.com')
    assert.equal(parseS3Url('s3://nix?endpoint=[::1]:9000&scheme=http').endpoint, 'http://[::1]:9000')
  })

  it('takes a full endpoint URL', () => {
    assert.equal(parseS3Url('s3://nix?endpoint=https://minio.example.com').endpoint, 'https://minio.example.com')
    assert.equal(
      parseS3Url('s3://nix?endpoint=http://minio.example.com:9000/').endpoint,
      'http://minio.example.com:9000',
    )
    assert.equal(
      parseS3Url('s3://nix?endpoint=http://minio.example.com&scheme=http').endpoint,
      'http://minio.example.com',
    )
    assert.equal(parseS3Url('s3://nix?endpoint=https%3A%2F%2Fr2.example.com').endpoint, 'https://r2.example.com')
  })

  it('chooses path style for dotted bucket names, and obeys addressing-style', () => {
    assert.equal(parseS3Url('s3://cache.example.org').forcePathStyle, true)
    assert.equal(parseS3Url('s3://nix?addressing-style=path').forcePathStyle, true)
    assert.equal(parseS3Url('s3://nix?endpoint=minio:9000&addressing-style=virtual').forcePathStyle, false)
  })

  it('ignores the write-side and priority parameters of Nix stores, and leaves them out of the name', () => {
    const loc = parseS3Url(
      's3://nix?priority=30&want-mass-query=true&ls-compression=br&secret-key=/etc/nix/key&region=eu-north-1',
    )
    assert.equal(loc.region, 'eu-north-1')
    assert.equal(loc.name, 's3://nix?region=eu-north-1')
  })

  const bad: Array<[string, RegExp]> = [
    ['s3://', /not a bucket name/],
    ['s3://key:secret@nix', /credentials in the URL/],
    ['s3://nix:9000', /port belongs in \?endpoint=/],
    ['s3://nix/prefix', /key prefix/],
    ['s3://bad_bucket!', /not a bucket name|not a URL/],
    ['s3://nix?scheme=ftp&endpoint=x', /scheme must be http or https/],
    ['s3://nix?scheme=http', /needs an endpoint/],
    ['s3://nix?endpoint=ftp://x', /endpoint scheme must be http or https/],
    ['s3://nix?endpoint=https://u:p@minio.example.com', /credentials in the endpoint/],
    ['s3://nix?endpoint=host:9000/path', /neither host\[:port\] nor a URL/],
    ['s3://nix?endpoint=https://minio:9000&scheme=http', /contradicts/],
    ['s3://nix?region=', /"region" is empty/],
    ['s3://nix?region=a&region=b', /given 2 times/],
    ['s3://nix?region=eu west', /not a region/],
    ['s3://nix?region=eu-west-1&aws-region=us-east-1', /disagree/],
    ['s3://nix?addressing-style=dns', /addressing-style must be/],
    ['https://nix', /not an s3:\/\/ URL/],
    ['not a url', /not a URL/],
  ]
  for (const [url, pattern] of bad) {
    it(`refuses ${url}`, () => {
      assert.throws(
        () => parseS3Url(url),
        (err: unknown) => err instanceof TypeError && pattern.test(err.message),
      )
    })
  }

  it('is what createUpstream builds for s3://, and never shows credentials in its name', async () => {
    const { createUpstream } = await import('../../src/upstream/create-upstream.js')
    const upstream = createUpstream('s3://nix?endpoint=127.0.0.1:9000&scheme=http', {
      timeoutMs: 1000,
      userAgent: 'test',
    })
    assert.ok(upstream instanceof S3Upstream)
    assert.equal(upstream.name, 's3://nix?endpoint=127.0.0.1:9000&scheme=http')
    upstream.destroy()
  })
})

describe('S3Upstream against a fake S3 endpoint', { timeout: 30_000 }, () => {
  type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void
  let handler: Handler = (_req, res) => res.end()
  let server: http.Server
  let port: number
  let restoreEnv: () => void
  const upstreams: S3Upstream[] = []
  const upstream = (timeoutMs = 2000) => {
    const u = new S3Upstream(new URL(`s3://bucket?endpoint=127.0.0.1:${port}&scheme=http`), {
      timeoutMs,
      userAgent: 'unnar-test',
    })
    upstreams.push(u)
    return u
  }
  const s3Error = (status: number, code: string) => (_req: http.IncomingMessage, res: http.ServerResponse) => {
    res.writeHead(status, { 'content-type': 'application/xml' })
    res.end(
      `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${code} message</Message><RequestId>1</RequestId></Error>`,
    )
  }

  before(async () => {
    restoreEnv = setAwsEnv({
      AWS_ACCESS_KEY_ID: 'AKIDTEST',
      AWS_SECRET_ACCESS_KEY: 'secret-test',
      AWS_EC2_METADATA_DISABLED: 'true',
    })
    server = http.createServer((req, res) => handler(req, res))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    port = (server.address() as AddressInfo).port
  })
  after(async () => {
    for (const u of upstreams) u.destroy()
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
    restoreEnv()
  })

  it('signs a path-style GET for the key and returns body, size and Content-Encoding', async () => {
    let seen: http.IncomingHttpHeaders = {}
    let seenUrl = ''
    handler = (req, res) => {
      seen = req.headers
      seenUrl = req.url ?? ''
      res.writeHead(200, {
        'content-length': '5',
        'content-encoding': 'ZSTD ',
        'content-type': 'application/octet-stream',
      })
      res.end('hello')
    }
    const res = await upstream().get('nar/abc.nar.xz')
    assert.ok(res !== undefined)
    assert.equal(res.size, 5)
    assert.equal(res.contentEncoding, 'zstd')
    assert.equal((await readAll(res)).toString(), 'hello')
    assert.match(seenUrl, /^\/bucket\/nar\/abc\.nar\.xz(\?|$)/)
    assert.match(
      String(seen.authorization),
      /^AWS4-HMAC-SHA256 Credential=AKIDTEST\/\d{8}\/us-east-1\/s3\/aws4_request/,
    )
    assert.ok(!String(seen.authorization).includes('secret-test'))
    assert.match(String(seen['user-agent']), /unnar-test/)
  })

  for (const [status, code] of [
    [404, 'NoSuchKey'],
    [403, 'AccessDenied'],
    [404, 'NotFound'],
    [403, 'Forbidden'],
    [410, 'Gone'],
  ] as const) {
    it(`treats HTTP ${status} ${code} as missing`, async () => {
      handler = s3Error(status, code)
      assert.equal(await upstream().get('x.narinfo'), undefined)
    })
  }

  it('treats an empty-bodied 404 (as for HEAD-like answers) as missing', async () => {
    handler = (_req, res) => {
      res.writeHead(404)
      res.end()
    }
    assert.equal(await upstream().get('x.narinfo'), undefined)
  })

  for (const code of ['SignatureDoesNotMatch', 'InvalidAccessKeyId', 'ExpiredToken']) {
    it(`reports 403 ${code} as a failure, not as a missing object`, async () => {
      handler = s3Error(403, code)
      await expectUpstreamError(
        upstream().get('x.narinfo'),
        'bad-status',
        new RegExp(`HTTP 403 ${code} for x\\.narinfo \\(check the AWS credentials`),
      )
    })
  }

  it('reports NoSuchBucket as a failure naming the bucket', async () => {
    handler = s3Error(404, 'NoSuchBucket')
    await expectUpstreamError(upstream().get('x.narinfo'), 'bad-status', /NoSuchBucket: bucket "bucket" does not exist/)
  })

  it('reports 500 and 503 as bad-status', async () => {
    handler = s3Error(500, 'InternalError')
    await expectUpstreamError(upstream().get('x.narinfo'), 'bad-status', /HTTP 500 InternalError for x\.narinfo/)
    handler = s3Error(503, 'SlowDown')
    await expectUpstreamError(upstream().get('x.narinfo'), 'bad-status', /HTTP 503 SlowDown/)
  })

  it('retries a 503 SlowDown (twice at most), as for HTTP upstreams', async () => {
    let requests = 0
    const slowDown = s3Error(503, 'SlowDown')
    handler = (req, res) => {
      requests++
      if (requests === 1) return slowDown(req, res)
      res.writeHead(200, { 'content-length': '2' })
      res.end('ok')
    }
    const res = await upstream().get('x.narinfo')
    assert.ok(res !== undefined)
    assert.equal((await readAll(res)).toString(), 'ok')
    assert.equal(requests, 2)
    requests = 0
    handler = (req, res) => {
      requests++
      slowDown(req, res)
    }
    await expectUpstreamError(upstream().get('x.narinfo'), 'bad-status', /HTTP 503 SlowDown/)
    assert.equal(requests, 3)
  })

  it('maps a server that never answers to a timeout', async () => {
    let asked = 0
    handler = () => void asked++ // headers never come
    await expectUpstreamError(upstream(300).get('x.narinfo'), 'timeout')
    assert.equal(asked, 1, 'one attempt, no SDK retries')
  })

  it('fails a body that stalls mid-way with a timeout', async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-length': '100' })
      res.write('0123456789') // then silence
    }
    const res = await upstream(300).get('nar/x.nar')
    assert.ok(res !== undefined)
    await expectUpstreamError(readAll(res), 'timeout', /stalled/)
  })

  it('fails a body cut short with a network error', async () => {
    handler = (req, res) => {
      res.writeHead(200, { 'content-length': '100' })
      res.write('0123456789', () => req.socket.destroy())
    }
    const res = await upstream().get('nar/x.nar')
    assert.ok(res !== undefined)
    await expectUpstreamError(readAll(res), 'network')
  })

  it('maps a refused connection to a network error', async () => {
    const closed = http.createServer()
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
    const deadPort = (closed.address() as AddressInfo).port
    await new Promise((resolve) => closed.close(resolve))
    const dead = new S3Upstream(new URL(`s3://bucket?endpoint=http://127.0.0.1:${deadPort}`), { timeoutMs: 2000 })
    upstreams.push(dead)
    await expectUpstreamError(dead.get('x.narinfo'), 'network', /ECONNREFUSED/)
  })

  it('passes the abort signal through', async () => {
    const controller = new AbortController()
    handler = () => controller.abort() // once the request is at the server, unanswered
    const pending = upstream(10_000).get('x.narinfo', controller.signal)
    const started = Date.now()
    await assert.rejects(pending, (err: Error) => err.name === 'AbortError')
    assert.ok(Date.now() - started < 2000)
  })

  it('reports missing credentials as a failure', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-aws-'))
    const restore = setAwsEnv({
      AWS_EC2_METADATA_DISABLED: 'true',
      AWS_CONFIG_FILE: path.join(dir, 'none'),
      AWS_SHARED_CREDENTIALS_FILE: path.join(dir, 'none'),
    })
    try {
      handler = s3Error(500, 'ShouldNotBeAsked')
      await expectUpstreamError(upstream().get('x.narinfo'), 'network', /no AWS credentials/)
    } finally {
      restore()
      await rm(dir, { recursive: true, force: true })
    }
  })
})

/** Every file of the cache directory, as keys relative to its root. */
async function listFiles(root: string, rel = ''): Promise<string[]> {
  const out: string[] = []
  for (const entry of await readdir(path.join(root, rel), { withFileTypes: true })) {
    const key = rel === '' ? entry.name : `${rel}/${entry.name}`
    if (entry.isDirectory()) out.push(...(await listFiles(root, key)))
    else if (entry.isFile()) out.push(key)
  }
  return out
}

/** The `?json` listing unnar gives for the root of a fixture path, built from the manifest. */
function expectedRootListing(fixture: FixturePath): unknown {
  const entries: Record<string, unknown> = {}
  for (const [rel, entry] of Object.entries(fixture.entries)) {
    if (rel === '' || rel.includes('/')) continue
    if (entry.type === 'directory') entries[rel] = { type: 'directory' }
    else if (entry.type === 'symlink') entries[rel] = { type: 'symlink', target: entry.target }
    else entries[rel] = { type: 'regular', size: entry.size, executable: entry.executable === true }
  }
  return { type: 'directory', entries }
}

describe('a Nix cache in S3 (s3rver)', { timeout: 120_000 }, () => {
  const bucket = 'nix-cache'
  let dataDir: string
  let s3: S3rverInstance
  let port: number
  let url: string
  let restoreEnv: () => void
  let unnar: TestUnnar
  let uploadedLs = 0

  before(async () => {
    restoreEnv = setAwsEnv({
      AWS_ACCESS_KEY_ID: S3RVER_KEY,
      AWS_SECRET_ACCESS_KEY: S3RVER_KEY,
      AWS_EC2_METADATA_DISABLED: 'true',
    })
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'unnar-s3rver-'))
    s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dataDir })
    port = (await s3.run()).port
    url = `s3://${bucket}?endpoint=127.0.0.1:${port}&scheme=http&region=us-east-1`

    const client = new S3Client({
      region: 'us-east-1',
      endpoint: `http://127.0.0.1:${port}`,
      forcePathStyle: true,
      credentials: { accessKeyId: S3RVER_KEY, secretAccessKey: S3RVER_KEY },
    })
    try {
      await client.send(new CreateBucketCommand({ Bucket: bucket }))
      const root = cacheDir('xz')
      const keys = await listFiles(root)
      await Promise.all(
        keys.map(async (key) => {
          const data = await readFile(path.join(root, key))
          // cache.nixos.org stores listings compressed, with the matching Content-Encoding.
          const isListing = key.endsWith('.ls')
          if (isListing) uploadedLs++
          await client.send(
            new PutObjectCommand({
              Bucket: bucket,
              Key: key,
              Body: isListing ? brotliCompressSync(data) : data,
              ...(isListing ? { ContentEncoding: 'br', ContentType: 'application/json' } : {}),
              ...(key.endsWith('.narinfo') ? { ContentType: 'text/x-nix-narinfo' } : {}),
            }),
          )
        }),
      )
    } finally {
      client.destroy()
    }
    assert.ok(uploadedLs > 0, 'the fixture cache has .ls files')
    unnar = await startUnnar([url])
  })

  after(async () => {
    await unnar?.stop()
    await s3?.close()
    await rm(dataDir, { recursive: true, force: true })
    restoreEnv()
  })

  it('names the upstream by its URL without credentials', async () => {
    const res = await fetch(`${unnar.url}/api/upstreams`)
    const list = (await res.json()) as Array<{ name: string }>
    assert.deepEqual(
      list.map((u) => u.name),
      [url],
    )
    assert.ok(!JSON.stringify(unnar.logs).includes(S3RVER_KEY))
  })

  for (const kind of ['basic', 'tricky']) {
    it(`lists the root of ${kind} from the br-encoded .ls alone`, async () => {
      const fixture = fixturePath(kind)
      const res = await fetch(unnar.store(`${fixture.hash}-${fixture.name}/?json`))
      assert.equal(res.status, 200)
      assert.deepEqual(await res.json(), expectedRootListing(fixture))
      const downloads = unnar.logs.filter((l) => l.msg === 'downloading NAR' && l.storePath === fixture.storePath)
      assert.equal(downloads.length, 0, 'no NAR was downloaded for the listing')
      assert.equal(unnar.logs.filter((l) => l.msg === 'ignoring unusable listing').length, 0)
    })
  }

  for (const kind of ['basic', 'tricky']) {
    it(`serves every regular file of ${kind} with the manifest sha256`, async () => {
      const fixture = fixturePath(kind)
      const base = `${fixture.hash}-${fixture.name}`
      const regular = Object.entries(fixture.entries).filter(([, entry]) => entry.type === 'regular')
      assert.ok(regular.length > 0)
      // Eight at a time: tricky's 1,524 files one after the other took 15 s, a minute on a loaded machine.
      for (let i = 0; i < regular.length; i += 8) {
        await Promise.all(
          regular.slice(i, i + 8).map(async ([rel, entry]) => {
            const res = await fetch(unnar.store(`${base}/${encodeRel(rel)}`), {
              headers: { 'accept-encoding': 'identity' },
            })
            assert.equal(res.status, 200, `${rel}: status`)
            const body = await res.arrayBuffer()
            assert.equal(body.byteLength, entry.size, `${rel}: size`)
            assert.equal(await sha256Hex(body), entry.sha256, `${rel}: sha256`)
          }),
        )
      }
      const downloads = unnar.logs.filter((l) => l.msg === 'downloading NAR' && l.storePath === fixture.storePath)
      assert.equal(downloads.length, 1, 'the NAR was fetched from S3 once')
    })
  }

  it('answers 404 for a store path the bucket does not have, and for a missing file', async () => {
    const missing = await fetch(unnar.store(`${'0'.repeat(32)}-nothing/bin/x`))
    assert.equal(missing.status, 404)
    assert.match(await missing.text(), /^404 Not Found/)
    const basic = fixturePath('basic')
    const noFile = await fetch(unnar.store(`${basic.hash}-${basic.name}/no/such/file`))
    assert.equal(noFile.status, 404)
    await noFile.arrayBuffer()
  })

  it('reads with a named profile from the shared credentials file', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-aws-'))
    const credentials = path.join(dir, 'credentials')
    await writeFile(
      credentials,
      `[s3test]\naws_access_key_id = ${S3RVER_KEY}\naws_secret_access_key = ${S3RVER_KEY}\n\n[wrong]\naws_access_key_id = NOT-${S3RVER_KEY}\naws_secret_access_key = not-the-secret\n`,
    )
    const restore = setAwsEnv({
      AWS_SHARED_CREDENTIALS_FILE: credentials,
      AWS_CONFIG_FILE: path.join(dir, 'config'),
      AWS_EC2_METADATA_DISABLED: 'true',
    })
    const good = new S3Upstream(new URL(`${url}&profile=s3test`), { timeoutMs: 5000 })
    const wrong = new S3Upstream(new URL(`${url}&profile=wrong`), { timeoutMs: 5000 })
    try {
      const basic = fixturePath('basic')
      const res = await good.get(`${basic.hash}.narinfo`)
      assert.ok(res !== undefined)
      assert.match((await readAll(res)).toString(), new RegExp(`^StorePath: ${basic.storePath}\n`))
      assert.equal(await good.get('nonexistent.narinfo'), undefined)
      await expectUpstreamError(wrong.get(`${basic.hash}.narinfo`), 'bad-status', /HTTP 403 InvalidAccessKeyId/)
    } finally {
      good.destroy()
      wrong.destroy()
      restore()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
