// A bounded fuzz run: random mutations of valid requests over raw sockets, with the hostile-input
// invariants. Every case comes from its seed and its number alone, so a seed reproduces its cases
// whatever the timing: CI (CI=true) runs a fixed list of seeds, a local run one random seed, and
// every failure names the seed. FUZZ_SEED=<seed> reruns one, FUZZ_CASES sets the cases per seed.
import assert from 'node:assert/strict'
import { it } from 'node:test'
import { exchange, routesWithUpload } from './raw.ts'
import { startService } from './service.ts'

const fixedSeeds = [1, 2, 0xc0ffee]
const seeds = process.env.FUZZ_SEED
  ? [Number(process.env.FUZZ_SEED)]
  : process.env.CI
    ? fixedSeeds
    : [Math.floor(Math.random() * 2 ** 32)]
const casesPerSeed = Number(process.env.FUZZ_CASES ?? 1000)
const concurrency = 8

/** mulberry32 is a small seeded PRNG: the same seed gives the same run. */
function mulberry32(state: number) {
  return () => {
    state = (state + 0x6d2b79f5) | 0
    let t = Math.imul(state ^ (state >>> 15), 1 | state)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const valid = [
  'GET /health HTTP/1.1\r\nHost: fuzz\r\nUser-Agent: fuzz\r\nAccept: */*\r\n\r\n',
  'HEAD /ready?x=1 HTTP/1.1\r\nHost: fuzz\r\nX-Request-Id: abc-123\r\n\r\n',
  'GET /openapi.yaml HTTP/1.1\r\nHost: fuzz\r\nConnection: keep-alive\r\n\r\n',
  'POST /upload HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world',
  'POST /upload HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n',
  'DELETE /health HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 0\r\n\r\n',
]
const interesting = [
  '\r\n',
  '\n',
  '\r',
  ' ',
  ':',
  '\0',
  '%',
  '/',
  '..',
  '?',
  '#',
  'Transfer-Encoding: chunked\r\n',
  'Content-Length: 99999\r\n',
  'ÿ',
  '\t',
  '0\r\n\r\n',
]

function mutate(random: () => number, input: string): string {
  const pick = (n: number) => Math.floor(random() * n)
  let out = input
  for (let i = 0, n = 1 + pick(4); i < n; i++) {
    const at = pick(out.length + 1)
    switch (pick(6)) {
      case 0: // flip one byte
        out = out.slice(0, at) + String.fromCharCode(pick(256)) + out.slice(at + 1)
        break
      case 1: // insert an interesting token
        out = out.slice(0, at) + (interesting[pick(interesting.length)] ?? '') + out.slice(at)
        break
      case 2: // delete a range
        out = out.slice(0, at) + out.slice(at + 1 + pick(8))
        break
      case 3: // duplicate a range
        out = out.slice(0, at) + out.slice(at, at + 1 + pick(40)) + out.slice(at)
        break
      case 4: // truncate
        out = out.slice(0, at)
        break
      default: // splice in another valid request
        out = out.slice(0, at) + (valid[pick(valid.length)] ?? '')
    }
  }
  return out
}

for (const seed of seeds) {
  it(`survives random mutations of valid requests (FUZZ_SEED=${seed}, ${casesPerSeed} cases)`, async (t) => {
    const service = await startService(
      t,
      { HEADERS_TIMEOUT: '1s', REQUEST_TIMEOUT: '2s', MAX_BODY_SIZE: '1KiB' },
      { routes: routesWithUpload },
    )
    const statuses = new Map<number, number>()
    let next = 0
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        for (let n = next++; n < casesPerSeed; n = next++) {
          const random = mulberry32((seed + Math.imul(n, 0x9e3779b1)) >>> 0)
          const input = mutate(random, valid[Math.floor(random() * valid.length)] ?? '')
          const answer = await exchange(service.port, [Buffer.from(input, 'latin1')])
          const context = `case ${n} of FUZZ_SEED=${seed}, input ${JSON.stringify(input)}`
          assert.equal(answer.closed, true, `no answer and no close: ${context}`)
          assert.ok(answer.text === '' || answer.text.startsWith('HTTP/1.1 '), `not HTTP: ${context}`)
          assert.doesNotMatch(answer.text, /\n\s+at |Error:|node:internal/, `leaked internals: ${context}`)
          for (const status of answer.statuses) {
            assert.ok(status < 500, `${status}: ${context}`)
            statuses.set(status, (statuses.get(status) ?? 0) + 1)
          }
        }
      }),
    )
    t.diagnostic(`statuses ${JSON.stringify(Object.fromEntries(statuses))}`)
    assert.equal((await fetch(`${service.url}/health`)).status, 200)
    assert.equal(await service.stop(), 0)
    assert.deepEqual(
      service.logs.filter((l) => l.level === 'error' || l.level === 'fatal'),
      [],
      `FUZZ_SEED=${seed}`,
    )
  })
}
