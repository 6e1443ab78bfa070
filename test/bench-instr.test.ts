// The parts of `npm run bench:instr` that need no valgrind: the exact client, the patch mechanism
// of the knock-outs, the summary line and the ceilings. A full run is in BENCHMARKS.md.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, it, type TestContext } from 'node:test'
import { parseSummary } from './bench/callgrind.ts'
import { findFreePort, listensOn } from './bench/servers.ts'
import { parseResponse, sendRequests, waitForReady } from './bench/instr-client.ts'
import { type Count, checkCeilings, perRequest } from './bench/instr-report.ts'
import { ablationRows, ceilings, rows } from './bench/instr-rows.ts'
import { applyPatch, knockouts } from './bench/knockouts.ts'

describe('parseResponse', () => {
  const head = 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n'
  it('waits for the end of the head, then for the whole body', () => {
    assert.equal(parseResponse(Buffer.from(head.slice(0, -2))), undefined)
    assert.equal(parseResponse(Buffer.from(`${head}{"ok":tru`)), undefined)
    assert.deepEqual(parseResponse(Buffer.from(`${head}{"ok":true}`)), {
      status: 200,
      length: head.length + 11,
      close: false,
    })
  })
  it('says when the server closes the connection', () => {
    const closing = 'HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nConnection: close\r\n\r\n'
    assert.deepEqual(parseResponse(Buffer.from(closing)), { status: 503, length: closing.length, close: true })
  })
  it('refuses a response it cannot delimit', () => {
    const chunked = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'
    assert.throws(() => parseResponse(Buffer.from(chunked)), /without Content-Length/)
  })
})

/** startCounting starts a node:http server that counts requests and connections, stopped after the test. */
async function startCounting(t: TestContext, port = 0) {
  const seen = { requests: 0, connections: 0 }
  const server = createServer((_req, res) => {
    seen.requests++
    res.writeHead(200, { 'content-length': 2 }).end('ok')
  })
  server.on('connection', () => seen.connections++)
  server.listen(port, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => server.close())
  return { port: (server.address() as AddressInfo).port, seen }
}

describe('the instruction count client', () => {
  it('sends exactly the requests asked for, over exactly the connections asked for', async (t) => {
    const { port, seen } = await startCounting(t)
    await sendRequests(port, '/health', 101, 16)
    assert.deepEqual(seen, { requests: 101, connections: 16 })
  })
  it('sends one request once the server listens, however long it took', async (t) => {
    const port = await findFreePort()
    let polls = 0
    let server: Awaited<ReturnType<typeof startCounting>> | undefined
    const starting = startCounting(t, port).then((started) => (server = started))
    // listening() turns true on the third poll only, after the server listens.
    const listening = () => ++polls > 2 && server !== undefined
    await waitForReady(port, '/health', { listening, alive: () => true }, 5000, 5)
    await starting
    assert.deepEqual(server?.seen, { requests: 1, connections: 1 })
    assert.ok(polls >= 3)
  })
  it('fails when the server exits before it listens', async () => {
    const server = { listening: () => false, alive: () => false }
    await assert.rejects(waitForReady(1, '/health', server, 5000), /exited before it listened on port 1/)
  })
  it('tells a port this process listens on from one it does not', async (t) => {
    const { port } = await startCounting(t)
    assert.equal(listensOn(process.pid, port), true)
    assert.equal(listensOn(process.pid, await findFreePort()), false)
  })
  it('fails on anything but a 200', async (t) => {
    const server = createServer((_req, res) => res.writeHead(404, { 'content-length': 0 }).end())
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    t.after(() => server.close())
    await assert.rejects(sendRequests((server.address() as AddressInfo).port, '/health', 2, 1), /status 404/)
  })
})

describe('the knock-out patches', () => {
  it('replace the one occurrence of their text', () => {
    const patch = { file: 'internal/x.js', find: 'logAccess(res);', replace: ';' }
    assert.equal(applyPatch('k', 'a(); logAccess(res); b();', patch), 'a(); ; b();')
  })
  it('fail loudly, naming the knock-out and the table, when their text is gone or ambiguous', () => {
    const patch = { file: 'internal/x.js', find: 'logAccess(res);', replace: ';' }
    const expected =
      /^Error: patch access-log no longer applies: .* occurs nowhere in dist\/internal\/x\.js: update test\/bench\/knockouts\.ts$/
    assert.throws(() => applyPatch('access-log', 'log(res);', patch), expected)
    assert.throws(() => applyPatch('access-log', 'logAccess(res); logAccess(res);', patch), /occurs more than once/)
  })
  it('each change something, under a name of their own', () => {
    assert.equal(new Set(knockouts.map((k) => k.name)).size, knockouts.length)
    for (const knockout of knockouts) {
      assert.ok(knockout.patches.length > 0, knockout.name)
      for (const patch of knockout.patches) assert.notEqual(patch.find, patch.replace, knockout.name)
    }
  })
})

describe('the rows and the report', () => {
  it('have unique ids, and a ceiling only for rows that exist', () => {
    assert.equal(new Set(rows.map((row) => row.id)).size, rows.length)
    assert.equal(new Set(ablationRows(1).map((row) => row.id)).size, ablationRows(1).length)
    for (const id of Object.keys(ceilings))
      assert.ok(
        rows.some((row) => row.id === id && row.ci),
        id,
      )
  })
  it('read the summary line of callgrind output', () => {
    assert.equal(parseSummary('events: Ir\nsummary: 788525601\n\nob=(1) /x\n'), 788525601)
    assert.throws(() => parseSummary('events: Ir\n'), /no summary: line/)
  })
  it('take the difference of two runs over the difference of their requests', () => {
    assert.equal(perRequest({ n1: 788_525_601, n2: 1_154_798_261 }, 1000, 4000), 122_090.886_666_666_67)
  })
  it('hold each ratio to bare to its ceiling', () => {
    const row = (id: string) => rows.find((r) => r.id === id) ?? assert.fail(id)
    const count = (id: string, perRequest: number): Count => ({
      row: row(id),
      repetition: 1,
      summaries: { n1: 0, n2: 0 },
      perRequest,
    })
    const counts = [count('bare/16', 100), count('service/16', 150), count('service/1', 150)]
    const result = checkCeilings(counts, { 'service/16': { ratio: 1.3, option: 'max-ratio-16' } })
    assert.deepEqual(result.failures, ['service/16: 1.500× bare, ceiling 1.30× (--max-ratio-16)'])
    // service/1 has no bare row counted: no ratio, nothing to hold.
    assert.deepEqual(checkCeilings(counts, { 'service/1': { ratio: 1.3, option: 'max-ratio-1' } }).failures, [])
  })
})
