/**
 * Row 6b: the ceiling of any node:http server on this machine. Answers every request with the same
 * status line, headers and bytes, the least work a Node server can do per request.
 *
 *   node --import tsx bench/bare-http-server.ts PORT BODY_FILE HEADERS_JSON
 */
import { readFileSync } from 'node:fs'
import http from 'node:http'

const [port, bodyFile, headersJson] = process.argv.slice(2)
const body = readFileSync(bodyFile!)
const headers = JSON.parse(headersJson!) as string[]
http
  .createServer((_req, res) => {
    res.writeHead(200, headers)
    res.end(body)
  })
  .listen(Number(port), '127.0.0.1')
