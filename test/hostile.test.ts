// Hostile input over raw sockets: every malformed or malicious request gets a clean answer or a
// clean close, never a stack trace, and the service keeps serving.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { connect } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { exchange, routesWithUpload } from './raw.ts'
import { type Service, startService, withRoutes } from './service.ts'

const H = 'Host: test\r\n'
const get = (target: string, extra = '') => `GET ${target} HTTP/1.1\r\n${H}${extra}\r\n`
const post = (headers: string, body = '') => `POST /upload HTTP/1.1\r\n${H}${headers}\r\n${body}`
const big = 'a'.repeat(20_000)

// [name, bytes sent, statuses expected in order ([] = a clean close with no answer)]
const corpus: [string, string | Buffer, number[]][] = [
  ['plain garbage', 'hello there\r\n\r\n', [400]],
  ['binary bytes', Buffer.from([0, 1, 2, 255, 254, 13, 10, 13, 10]), [400]],
  ['NUL in a header value', get('/health', 'X-A: a\0b\r\n'), [400]],
  ['control byte in a header value', get('/health', 'X-A: a\x01b\r\n'), [400]],
  ['space in a header name', get('/health', 'Bad Header: x\r\n'), [400]],
  ['space before the colon', get('/health', 'X-A : b\r\n'), [400]],
  ['header line without a colon', get('/health', 'NoColon\r\n'), [400]],
  ['obsolete line folding', get('/health', 'X-A: a\r\n b\r\n'), [400]],
  ['bare LF line endings', `GET /health HTTP/1.1\n${H.trim()}\n\n`, [400]],
  ['oversized header', get('/health', `X-Big: ${big}\r\n`), [431]],
  ['oversized URL', get(`/${big}`), [431]],
  [
    'Content-Length with Transfer-Encoding (smuggling)',
    post('Content-Length: 5\r\nTransfer-Encoding: chunked\r\n', '0\r\n\r\n'),
    [400],
  ],
  ['two different Content-Lengths', post('Content-Length: 5\r\nContent-Length: 6\r\n', 'hello!'), [400]],
  ['two equal Content-Lengths', post('Content-Length: 5\r\nContent-Length: 5\r\n', 'hello'), [400]],
  ['negative Content-Length', post('Content-Length: -1\r\n'), [400]],
  ['non-numeric Content-Length', post('Content-Length: abc\r\n'), [400]],
  ['Content-Length with a plus sign', post('Content-Length: +5\r\n', 'hello'), [400]],
  ['unknown Transfer-Encoding', post('Transfer-Encoding: xchunked\r\n'), [400]],
  ['invalid chunk size', post('Transfer-Encoding: chunked\r\n', 'zz\r\nhello\r\n0\r\n\r\n'), [400]],
  ['chunk size overflow', post('Transfer-Encoding: chunked\r\n', 'ffffffffffffffffff\r\nhello\r\n0\r\n\r\n'), [400]],
  ['oversized chunk extension', post('Transfer-Encoding: chunked\r\n', `5;${big}\r\nhello\r\n0\r\n\r\n`), [413]],
  ['body above MAX_BODY_SIZE by Content-Length', post('Content-Length: 2048\r\n', 'x'.repeat(2048)), [413]],
  [
    'body above MAX_BODY_SIZE in chunks',
    post('Transfer-Encoding: chunked\r\n', `${'400\r\n' + 'x'.repeat(1024) + '\r\n'}`.repeat(3) + '0\r\n\r\n'),
    [413],
  ],
  ['body within MAX_BODY_SIZE', post('Content-Length: 5\r\n', 'hello'), [200]],
  ['Expect: 100-continue', post('Content-Length: 5\r\nExpect: 100-continue\r\n', 'hello'), [100, 200]],
  ['body cut short by the client', post('Content-Length: 100\r\n', 'only a few bytes'), [400]],
  ['headers cut short by the client', `GET /health HTTP/1.1\r\n${H}X-Partial: `, [400]],
  ['bad percent-encoding', get('/%zz'), [404]],
  ['percent-encoded path', get('/heal%74h'), [404]],
  ['dot segments', get('/../health'), [404]],
  ['single-dot segment', get('/./health'), [404]],
  ['absolute-form target', get('http://test/health?x=1'), [200]],
  ['absolute-form target without a path', get('http://test'), [404]],
  ['asterisk-form target', `OPTIONS * HTTP/1.1\r\n${H}\r\n`, [400]],
  ['authority-form target (CONNECT)', `CONNECT example.com:443 HTTP/1.1\r\n${H}\r\n`, [405]],
  ['unknown method', `FOO /health HTTP/1.1\r\n${H}\r\n`, [400]],
  ['lowercase method', `get /health HTTP/1.1\r\n${H}\r\n`, [400]],
  ['method too long', `GETGETGET /health HTTP/1.1\r\n${H}\r\n`, [400]],
  ['WebDAV method on a known path', `PROPFIND /health HTTP/1.1\r\n${H}\r\n`, [405]],
  ['TRACE', `TRACE /health HTTP/1.1\r\n${H}\r\n`, [405]],
  ['HTTP/1.1 without Host', 'GET /health HTTP/1.1\r\n\r\n', [400]],
  ['HTTP/1.0 without Host', 'GET /health HTTP/1.0\r\n\r\n', [200]],
  ['HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', [400]],
  ['unknown HTTP version', `GET /health HTTP/9.9\r\n${H}\r\n`, [400]],
  ['space in the path', `GET /hea lth HTTP/1.1\r\n${H}\r\n`, [400]],
  ['NUL in the URL', `GET /health\0 HTTP/1.1\r\n${H}\r\n`, [400]],
  [
    'raw UTF-8 in the URL',
    Buffer.concat([Buffer.from('GET /'), Buffer.from([0xc3, 0xa9]), Buffer.from(` HTTP/1.1\r\n${H}\r\n`)]),
    [400],
  ],
  ['WebSocket upgrade nobody handles', get('/health', 'Connection: Upgrade\r\nUpgrade: websocket\r\n'), [200]],
  ['three pipelined requests', get('/health') + get('/ready') + get('/nope'), [200, 200, 404]],
  ['a valid request, then garbage on the same connection', get('/health') + 'garbage\r\n\r\n', [200, 400]],
  // The attack report (test/attacks.pending.ts has one test per case).
  [
    'eight pipelined requests: a client that reads its answers is not cut',
    get('/health').repeat(8),
    Array.from({ length: 8 }, () => 200),
  ],
  [
    'POST answered 405 before its body arrives, then a half-close',
    `POST /health HTTP/1.1\r\n${H}Content-Length: 100\r\n\r\n`,
    [405],
  ],
  [
    'the same with Expect: 100-continue',
    `POST /health HTTP/1.1\r\n${H}Content-Length: 100\r\nExpect: 100-continue\r\n\r\n`,
    [100, 405],
  ],
  ['a request pipelined after Connection: close', get('/health', 'Connection: close\r\n') + get('/health'), [200]],
  ['two Host headers', get('/health', 'Host: other.example\r\n'), [400]],
]

describe('hostile input', () => {
  let service: Service
  before(async () => {
    const env = { HEADERS_TIMEOUT: '1s', REQUEST_TIMEOUT: '2s', MAX_BODY_SIZE: '1KiB' }
    service = await startService(undefined, env, { routes: routesWithUpload })
  })
  after(async () => assert.equal(await service.stop(), 0))

  async function assertStillServing() {
    const res = await fetch(`${service.url}/health`)
    assert.equal(res.status, 200)
    await res.arrayBuffer()
  }

  it(`has at least 30 cases (${corpus.length})`, () => assert.ok(corpus.length >= 30))

  for (const [name, bytes, expected] of corpus) {
    it(`${name} → ${expected.length > 0 ? expected.join(', ') : 'close'}`, async () => {
      const answer = await exchange(service.port, [bytes])
      assert.equal(answer.closed, true, 'the server answered and closed, or closed')
      assert.deepEqual(answer.statuses, expected, answer.text.slice(0, 300))
      assert.doesNotMatch(answer.text, /\n\s+at |Error:|node:internal/, 'no stack trace or internal message')
      const last = expected.at(-1) ?? 0
      if ([400, 405, 408, 413, 431].includes(last)) {
        const response = answer.text.slice(answer.text.lastIndexOf('HTTP/1.1 '))
        assert.match(response, /\r\ncontent-type: application\/problem\+json\r\n/i)
        assert.match(response, /\r\nx-request-id: [\w-]+\r\n/i)
        if (last !== 405) assert.match(response, /\r\nconnection: close\r\n/i)
      }
      await assertStillServing()
    })
  }

  it('answers a slowloris client with 408 once HEADERS_TIMEOUT (1s) passes', async () => {
    const started = performance.now()
    const parts = ['GET /health HTTP/1.1\r\n', H, 'X-Slow: 1\r\n', 'X-Slow: 2\r\n', 'X-Slow: 3\r\n', 'X-Slow: 4\r\n']
    const answer = await exchange(service.port, parts, { pauseMs: 400, halfClose: false, timeoutMs: 10_000 })
    const waited = performance.now() - started
    assert.deepEqual(answer.statuses, [408])
    assert.match(answer.text, /\r\nconnection: close\r\n/i)
    assert.ok(waited >= 900 && waited < 5000, `closed after ${Math.round(waited)} ms`)
    await assertStillServing()
  })

  it('ignores a client that resets mid-request, without a log line', async () => {
    const before = service.logs.length
    const socket = connect(service.port, '127.0.0.1')
    await once(socket, 'connect')
    socket.write(`GET /health HTTP/1.1\r\n${H}X-Half: `)
    socket.resetAndDestroy()
    await once(socket, 'close')
    await assertStillServing()
    const since = service.logs.slice(before)
    assert.deepEqual(
      since.map((l) => l.msg),
      ['request'],
      'only the access line of the health check',
    )
  })

  it('logs a client that goes away mid-response as aborted', async (t) => {
    let wrote: () => void = () => {}
    const written = new Promise<void>((resolve) => (wrote = resolve))
    const local = await startService(
      t,
      {},
      {
        routes: withRoutes({
          '/stream': {
            GET: (_req, res) => {
              res.writeHead(200, { 'content-type': 'text/plain' })
              res.write('first part', () => wrote())
            },
          },
        }),
      },
    )
    const socket = connect(local.port, '127.0.0.1')
    await once(socket, 'connect')
    socket.write(get('/stream', 'X-Request-Id: leaves-early\r\n'))
    await written
    await once(socket, 'data')
    socket.resetAndDestroy()
    const line = await local.waitForLog((l) => l.msg === 'request' && l.requestId === 'leaves-early')
    assert.equal(line.aborted, true)
    assert.equal(line.status, 200)
    assert.equal((await fetch(`${local.url}/health`)).status, 200)
  })

  it('closes and logs the pipelined requests queued behind a connection the client reset', async (t) => {
    // Node 22 leaves the responses queued behind the first unanswered: they would never close, log,
    // or leave the in-flight count, and the drain would wait for them.
    let arrived: () => void = () => {}
    const handled = new Promise<void>((resolve) => (arrived = resolve))
    const routes = withRoutes({ '/stall': { GET: () => arrived() } })
    const local = await startService(t, { SHUTDOWN_TIMEOUT: '2s' }, { routes })
    const socket = connect(local.port, '127.0.0.1')
    await once(socket, 'connect')
    socket.write([1, 2, 3].map((n) => get('/stall', `X-Request-Id: queued-${n}\r\n`)).join(''))
    await handled
    socket.resetAndDestroy()
    for (const n of [1, 2, 3]) {
      const line = await local.waitForLog((l) => l.msg === 'request' && l.requestId === `queued-${n}`, `queued-${n}`)
      assert.equal(line.aborted, true)
    }
    assert.equal(await local.stop(), 0, 'nothing left in flight to wait for')
  })

  it('logs malformed requests at most 10 per second, and counts the rest', async (t) => {
    const local = await startService(t)
    await Promise.all(Array.from({ length: 40 }, () => exchange(local.port, ['garbage\r\n\r\n'])))
    assert.equal(await local.stop(), 0)
    const rejected = local.logs.filter((l) => l.msg === 'rejected malformed request')
    const summary = local.logs.find((l) => l.msg === 'lines about misbehaving clients left out of the log')
    const reported = rejected.reduce((sum, l) => sum + 1 + Number(l.dropped ?? 0), 0) + Number(summary?.dropped ?? 0)
    assert.equal(reported, 40, 'every rejection is either logged or counted')
    assert.ok(rejected.length <= 20, `${rejected.length} lines for 40 rejections within a second or two`)
    for (const line of rejected) {
      assert.equal(line.level, 'warn')
      assert.equal(line.status, 400)
      assert.equal(line.code, 'HPE_INVALID_METHOD')
    }
  })
})
