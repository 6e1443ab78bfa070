// The example job: a warning when the heap nears its limit, and its place in the job list.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { pino } from 'pino'
import { newLogSink, startService } from '../../test/service.ts'
import { newHeapWatch } from './heap-watch.ts'
import { addOn } from './jobs.ts'

const mib = 1024 * 1024

describe('heap-watch', () => {
  it('warns with the figures when the heap in use is above the ratio of its limit, and is silent below', () => {
    const sink = newLogSink()
    const log = pino({}, sink)
    const signal = new AbortController().signal
    newHeapWatch(0.8, () => ({ used_heap_size: 100 * mib, heap_size_limit: 128 * mib }))(signal, log)
    assert.equal(sink.logs.length, 0)
    newHeapWatch(0.8, () => ({ used_heap_size: 103 * mib, heap_size_limit: 128 * mib }))(signal, log)
    assert.deepEqual(
      sink.logs.map((l) => [l.level, l.msg, l.usedBytes, l.limitBytes, l.ratio]),
      [[40, 'heap near its limit', 103 * mib, 128 * mib, 0.8]],
    )
  })

  it('runs in the service from the job list, with JOBS=on', async (t) => {
    const env = { JOBS: 'on', JOB_HEAP_WATCH_SCHEDULE: '5ms' }
    const service = await startService(t, env, { addOns: [addOn] })
    const line = await service.waitForLog((l) => l.msg === 'job finished')
    assert.deepEqual([line.job, line.outcome], ['heap-watch', 'ok'])
    assert.ok(!service.logs.some((l) => l.msg === 'heap near its limit'), 'a test process is far from its limit')
    assert.equal(await service.stop(), 0)
  })
})
