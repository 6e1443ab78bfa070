// /ready runs the readiness checks the dependencies registered: concurrently, each within its
// timeout, the outcome reused briefly; /health never asks them.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { newRoutes } from '../internal/routes.ts'
import { assertProblem, newGate, startService } from './service.ts'

describe('GET /ready with readiness checks', () => {
  it('is 200 when every check passes, and 503 naming the failing ones while /health stays 200', async (t) => {
    let databaseUp = true
    const service = await startService(
      t,
      {},
      {
        routes: (deps) => {
          deps.lifecycle.addCheck('database', () => {
            if (!databaseUp) throw new Error('connection refused')
          })
          deps.lifecycle.addCheck('queue', async () => {})
          return newRoutes(deps)
        },
      },
    )
    assert.equal((await fetch(`${service.url}/ready`)).status, 200)
    databaseUp = false
    let res = await fetch(`${service.url}/ready`)
    // The outcome is reused for a second: poll until it is asked again.
    while (res.status === 200) res = await fetch(`${service.url}/ready`)
    const body = await assertProblem(res, 503, /^Not ready: database\.$/)
    assert.deepEqual(body.checks, [{ name: 'database', reason: 'connection refused' }])
    assert.equal(res.headers.get('cache-control'), 'no-store')
    assert.equal((await fetch(`${service.url}/health`)).status, 200, 'liveness never asks a dependency')
  })

  it('bounds a check that hangs, and runs the checks at once', async (t) => {
    const hung = newGate()
    let calls = 0
    const service = await startService(
      t,
      {},
      {
        routes: (deps) => {
          deps.lifecycle.addCheck('slow', (signal) => {
            calls++
            return new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)))
          })
          deps.lifecycle.addCheck('fast', () => hung.open())
          return newRoutes(deps)
        },
      },
    )
    const started = performance.now()
    const res = await fetch(`${service.url}/ready`)
    const waited = performance.now() - started
    const body = await assertProblem(res, 503, /slow/)
    assert.deepEqual(body.checks, [{ name: 'slow', reason: 'timed out' }])
    assert.ok(waited >= 700 && waited < 5000, `${Math.round(waited)} ms`)
    await hung.opened // the fast check ran while the slow one waited

    // A storm of probes within the second costs one round of checks.
    await Promise.all(Array.from({ length: 20 }, async () => (await fetch(`${service.url}/ready`)).arrayBuffer()))
    assert.ok(calls <= 2, `${calls} rounds of checks for 21 probes`)
  })
})
