// bare-server is the benchmark's baseline: plain node:http answering every request with one
// constant response, the bytes and headers the service's /health sent once, and doing nothing else
// (no routing, no request id generation, no logging). The service/bare ratio is therefore the
// whole cost of the template's features. Usage: node bare-server.js PORT HEADERS_JSON BODY
import { createServer } from 'node:http'

const [port, headersJson, body] = process.argv.slice(2)
if (port === undefined || headersJson === undefined || body === undefined) {
  process.stderr.write('usage: node bare-server.js PORT HEADERS_JSON BODY\n')
  process.exit(2)
}
const headers = JSON.parse(headersJson) as Record<string, string>

const server = createServer((_req, res) => {
  res.writeHead(200, headers).end(body)
})
server.listen(Number(port))

// Stop like the service does on SIGTERM: no new connections, idle ones closed, then exit 0 once the
// event loop is empty (counter.ts writes its count on 'exit').
process.once('SIGTERM', () => {
  server.close()
  server.closeIdleConnections()
})
