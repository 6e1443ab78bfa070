// The jobs add-on: the scheduler under node:test's mock timers (schedules, jitter, overlap, errors,
// the one line per run, stopping), then the whole service with JOBS=on (the drain, the deadline,
// readiness, configuration) and the README's variable table.
import assert from 'node:assert/strict'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { readFileSync } from 'node:fs'
import { describe, it, type TestContext } from 'node:test'
import { Cron } from 'croner'
import { pino } from 'pino'
import { parseConfig } from '../config.ts'
import {
  assertProblem,
  declaredRows,
  type LogLine,
  newGate,
  newLogSink,
  readmeTable,
  startService,
} from '../../test/service.ts'
import { type Job, jobList } from './job-list.ts'
import { addOn, jobVars, newJobsAddOn, parseSchedule, scheduleJobs } from './jobs.ts'

/** flush lets every promise callback run: setImmediate is not mocked, so it follows them all. */
const flush = () => new Promise((resolve) => setImmediate(resolve))

/** told collects what is published on kickstart.job while test t runs. */
function told(t: TestContext): unknown[] {
  const messages: unknown[] = []
  const listener = (message: unknown) => messages.push(message)
  subscribe('kickstart.job', listener)
  t.after(() => void unsubscribe('kickstart.job', listener))
  return messages
}

/**
 * scheduled starts jobs on mock timers and a mock clock from 0, random drawing `random`. live
 * holds the timers set and neither fired nor cleared.
 */
function scheduled(t: TestContext, jobs: Job[], random = () => 0.5) {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 0 })
  const live = new Set<unknown>()
  const set = globalThis.setTimeout
  const clear = globalThis.clearTimeout
  t.mock.method(globalThis, 'setTimeout', (fn: () => void, ms: number) => {
    const timer = set(() => (live.delete(timer), fn()), ms)
    live.add(timer)
    return timer
  })
  t.mock.method(globalThis, 'clearTimeout', (timer: NodeJS.Timeout) => (live.delete(timer), clear(timer)))
  const sink = newLogSink()
  const stopping = new AbortController()
  const schedules = jobs.map((job) => parseSchedule(job.schedule) ?? null)
  const states = scheduleJobs(jobs, schedules, stopping.signal, pino({}, sink), { now: Date.now, random })
  const lines = (msg: string) => sink.logs.filter((line) => line.msg === msg)
  const tick = async (ms: number) => {
    t.mock.timers.tick(ms)
    await flush()
  }
  return { states, stopping, live, lines, tick }
}

describe('job scheduling', () => {
  it('runs an interval job once per interval ± jitter, the first one interval after the start', async (t) => {
    for (const [random, first] of [
      [0, 8000],
      [0.99999, 12000],
    ] as const) {
      await t.test(`random ${random}`, async (t) => {
        let runs = 0
        const job: Job = { name: 'tick', schedule: '10s', jitter: 0.2, run: () => void runs++ }
        const { tick, lines } = scheduled(t, [job], () => random)
        await tick(first - 1)
        assert.equal(runs, 0)
        await tick(1)
        assert.equal(runs, 1, `the first run after ${first} ms`)
        await tick(first - 1)
        assert.equal(runs, 1)
        await tick(1)
        assert.equal(runs, 2)
        assert.deepEqual(
          lines('job finished').map((l) => [l.job, l.outcome, l.durationMs]),
          [
            ['tick', 'ok', 0],
            ['tick', 'ok', 0],
          ],
        )
      })
    }
  })

  it("runs a cron job at the expression's times, without jitter", async (t) => {
    let runs = 0
    const { tick } = scheduled(t, [{ name: 'tens', schedule: '*/10 * * * * *', jitter: 0.5, run: () => void runs++ }])
    await tick(9999)
    assert.equal(runs, 0)
    await tick(1)
    assert.equal(runs, 1)
    await tick(10_000)
    assert.equal(runs, 2)
  })

  it('reaches a cron run further away than a timer can wait (2^31 ms, 24.8 days)', async (t) => {
    let runs = 0
    const { tick } = scheduled(t, [{ name: 'yearly', schedule: '@yearly', run: () => void runs++ }])
    const newYear = new Cron('@yearly').nextRun(new Date(0))?.getTime() ?? 0
    assert.ok(newYear > 2 ** 31)
    await tick(newYear - 1)
    assert.equal(runs, 0)
    await tick(1)
    assert.equal(runs, 1, 'on the first of January')
  })

  it('never overlaps: a run due while the previous one goes is skipped, logged and told', async (t) => {
    const messages = told(t)
    const gate = newGate()
    let runs = 0
    const job: Job = { name: 'slow', schedule: '10s', jitter: 0, run: () => (runs++, gate.opened) }
    const { tick, lines } = scheduled(t, [job])
    await tick(10_000)
    await tick(10_000)
    await tick(10_000)
    assert.equal(runs, 1)
    assert.deepEqual(
      lines('job skipped: the previous run is still going').map((l) => [l.level, l.job, l.skipped]),
      [
        [40, 'slow', 1],
        [40, 'slow', 2],
      ],
    )
    gate.open()
    await tick(0)
    await tick(10_000)
    assert.equal(runs, 2)
    const finished = lines('job finished').map((l) => [l.outcome, l.durationMs])
    assert.deepEqual(finished, [
      ['ok', 20_000],
      ['ok', 0],
    ])
    assert.deepEqual(messages, [
      { job: 'slow', outcome: 'skipped', durationSeconds: 0 },
      { job: 'slow', outcome: 'skipped', durationSeconds: 0 },
      { job: 'slow', outcome: 'ok', durationSeconds: 20 },
      { job: 'slow', outcome: 'ok', durationSeconds: 0 },
    ])
  })

  it('logs and counts a throw or a rejection, which reach neither uncaughtException nor unhandledRejection', async (t) => {
    const escaped: unknown[] = []
    const onEscape = (err: unknown) => escaped.push(err)
    process.on('uncaughtException', onEscape).on('unhandledRejection', onEscape)
    t.after(() => void process.off('uncaughtException', onEscape).off('unhandledRejection', onEscape))
    const messages = told(t)
    let runs = 0
    const job: Job = {
      name: 'flaky',
      schedule: '1s',
      jitter: 0,
      run: () => {
        runs++
        if (runs === 1) throw new Error('thrown')
        if (runs === 2) return Promise.reject(new Error('rejected'))
      },
    }
    const { tick, lines, states } = scheduled(t, [job, { name: 'other', schedule: '1s', jitter: 0, run: () => {} }])
    await tick(1000)
    await tick(1000)
    await tick(1000)
    const finished = lines('job finished').filter((l) => l.job === 'flaky')
    assert.deepEqual(
      finished.map((l) => [l.level, l.outcome, (l.err as { message?: string } | undefined)?.message, l.failures]),
      [
        [50, 'failed', 'thrown', 1],
        [50, 'failed', 'rejected', 2],
        [30, 'ok', undefined, undefined],
      ],
    )
    assert.equal(lines('job finished').filter((l) => l.job === 'other').length, 3, 'the other job is unaffected')
    assert.deepEqual(
      messages.filter((m) => (m as { job: string }).job === 'flaky').map((m) => (m as { outcome: string }).outcome),
      ['failed', 'failed', 'ok'],
    )
    assert.deepEqual([states[0]?.succeeded, states[0]?.lastSuccess], [true, 3000])
    await flush()
    assert.deepEqual(escaped, [])
  })

  it('starts nothing once stopping aborts, clears every timer, and aborts the run in progress', async (t) => {
    const signals: AbortSignal[] = []
    const job: Job = {
      name: 'worker',
      schedule: '1s',
      jitter: 0,
      run: (signal) => {
        signals.push(signal)
        return new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)))
      },
    }
    const idle: Job = { name: 'idle', schedule: '*/5 * * * * *', run: () => {} }
    const { tick, lines, stopping, live } = scheduled(t, [job, idle])
    await tick(1000)
    assert.equal(signals.length, 1)
    assert.equal(live.size, 2)
    stopping.abort()
    assert.equal(signals[0]?.aborted, true, "the run's signal aborts when shutdown begins")
    assert.equal(live.size, 0, 'every timer is cleared')
    await tick(3_600_000)
    assert.equal(signals.length, 1, 'no run starts after stopping')
    assert.deepEqual(
      lines('job finished').map((l) => [l.job, l.outcome, l.err]),
      [['worker', 'aborted', undefined]],
      'a run that stops on its signal is not a failure',
    )
  })
})

/** reasonOf returns the reason /ready gives for the only failing check, which must be name. */
function reasonOf(body: Record<string, unknown>, name: string): string {
  const checks = body.checks as { name: string; reason: string }[]
  assert.deepEqual(
    checks.map((check) => check.name),
    [name],
  )
  return checks[0]?.reason ?? ''
}

/** jobLines returns the `job finished` lines of job name. */
const jobLines = (logs: LogLine[], name: string) => logs.filter((l) => l.msg === 'job finished' && l.job === name)

describe('the jobs add-on in the service', () => {
  it('is off unless JOBS=on', async (t) => {
    let runs = 0
    const jobs = newJobsAddOn([{ name: 'often', schedule: '1ms', run: () => void runs++ }])
    const service = await startService(t, {}, { addOns: [jobs] })
    assert.ok(!service.logs.some((l) => l.msg === 'jobs on'))
    assert.equal(await service.stop(), 0)
    assert.equal(runs, 0)
  })

  it('lets a running job finish after its signal aborts at SIGTERM, then exits 0; none starts after', async (t) => {
    const started = newGate()
    const abortedWhileRunning: boolean[] = []
    let runs = 0
    const job: Job = {
      name: 'drainable',
      schedule: '5ms',
      run: async (signal, log) => {
        if (signal.aborted) abortedWhileRunning.push(true) // a run started after shutdown began
        if (++runs < 3) return
        started.open()
        await new Promise((resolve) => signal.addEventListener('abort', resolve))
        log.info('saving progress')
        await flush() // the clean-up a job does once told to stop
      },
    }
    const env = { JOBS: 'on', SHUTDOWN_DELAY: '100ms' }
    const service = await startService(t, env, { addOns: [newJobsAddOn([job])] })
    const on = service.logs.find((l) => l.msg === 'jobs on')
    assert.deepEqual(on?.jobs, { drainable: { kind: 'every', ms: 5 } })
    await started.opened
    assert.equal(await service.stop(), 0)
    const order = ['shutdown started', 'saving progress', 'stopped accepting connections', 'shutdown complete']
    const at = order.map((msg) => service.logs.findIndex((l) => l.msg === msg))
    assert.deepEqual(
      [...at].sort((a, b) => a - b),
      at,
      `in order: ${order.join(', ')}; ${at.join(', ')}`,
    )
    assert.ok(at[0] !== -1 && !at.includes(-1))
    const lines = jobLines(service.logs, 'drainable')
    assert.equal(lines.length, runs, 'one line per run')
    assert.deepEqual(
      lines.map((l) => l.outcome),
      Array(runs).fill('ok'),
    )
    assert.deepEqual(abortedWhileRunning, [], 'no run starts once shutdown begins, through SHUTDOWN_DELAY')
    const hook = service.logs.find((l) => l.msg === 'shutdown hook finished' && l.hook === 'jobs')
    assert.ok(hook, 'the jobs hook waited for the run')
  })

  it('names a job that ignores its signal past SHUTDOWN_TIMEOUT, and exits 1', async (t) => {
    const started = newGate()
    const job: Job = { name: 'stubborn', schedule: '5ms', run: () => (started.open(), new Promise(() => {})) }
    const env = { JOBS: 'on', SHUTDOWN_TIMEOUT: '200ms' }
    const service = await startService(t, env, { addOns: [newJobsAddOn([job])] })
    await started.opened
    assert.equal(await service.stop(), 1)
    const [line, ...more] = jobLines(service.logs, 'stubborn')
    assert.deepEqual(more, [])
    assert.equal(line?.outcome, 'abandoned')
    assert.equal(line?.level, 'error')
    assert.ok((line?.durationMs as number) >= 150, String(line?.durationMs))
    assert.ok(service.logs.some((l) => l.msg === 'shutdown hook timed out' && l.hook === 'jobs'))
  })

  it('stops its jobs when a later add-on fails to start, though no shutdown began', async () => {
    const ran = newGate()
    const signals: AbortSignal[] = []
    const job: Job = {
      name: 'early',
      schedule: '1ms',
      run: (signal) => {
        signals.push(signal)
        ran.open()
      },
    }
    const failing = {
      name: 'failing',
      vars: {},
      start: async () => {
        // A real start waits on a socket, which keeps the process alive; the jobs' timers are
        // unref'd, so this wait holds the event loop itself.
        const hold = setInterval(() => {}, 60_000)
        await ran.opened.finally(() => clearInterval(hold))
        throw new Error('the database is down')
      },
    }
    await assert.rejects(
      startService(undefined, { JOBS: 'on' }, { addOns: [newJobsAddOn([job]), failing] }),
      /returned 1 before listening/,
    )
    assert.ok(
      signals.length > 0 && signals.every((signal) => signal.aborted),
      'their signal aborted, so are their timers',
    )
  })

  it('keeps serving while jobs fail', async (t) => {
    const job: Job = { name: 'failing', schedule: '5ms', run: () => Promise.reject(new Error('upstream down')) }
    const service = await startService(t, { JOBS: 'on' }, { addOns: [newJobsAddOn([job])] })
    await service.waitForLog((l) => l.msg === 'job finished' && l.failures === 3)
    assert.equal((await fetch(`${service.url}/health`)).status, 200)
    assert.equal(await service.stop(), 0)
  })

  it('fails /ready, naming the job, while its last success or the start is older than mustSucceedWithin', async (t) => {
    let offset = 0 // the clock runs, and the test moves it forward
    let succeed = false
    const job: Job = {
      name: 'refresh',
      schedule: '5ms',
      mustSucceedWithin: '10m',
      run: () => {
        if (!succeed) throw new Error('secret-token in a URL')
        succeed = false // one success, then failures again
      },
    }
    const clock = { now: () => Date.now() + offset, random: Math.random }
    const service = await startService(t, { JOBS: 'on' }, { addOns: [newJobsAddOn([job], clock)] })
    const ready = () => fetch(`${service.url}/ready`)
    /** untilReady polls /ready until its status is status: the outcome is reused for a second. */
    const until = async (status: number) => {
      let res = await ready()
      while (res.status !== status) res = (await res.arrayBuffer(), await ready())
      return res
    }
    offset += 10 * 60_000 + 1000
    let body = await assertProblem(await until(503), 503, /^Not ready: job refresh\.$/)
    assert.match(reasonOf(body, 'job refresh'), /^no success in the 60\ds since start, over 10m$/)

    succeed = true
    await service.waitForLog((l) => l.msg === 'job finished' && l.outcome === 'ok')
    await (await until(200)).arrayBuffer()
    offset += 10 * 60_000 + 2000
    body = await assertProblem(await until(503), 503)
    assert.match(reasonOf(body, 'job refresh'), /^last succeeded 60\ds ago, over 10m$/)
    assert.doesNotMatch(JSON.stringify(body), /secret/, "a job's error message never reaches /ready")
  })

  it('stops the start with the variable named when a value is invalid', async () => {
    await assert.rejects(
      startService(undefined, { JOBS: 'on', JOB_HEAP_WATCH_SCHEDULE: '5' }, { addOns: [addOn] }),
      /Expected `JOB_HEAP_WATCH_SCHEDULE` to be off, a duration like 30s or 1h, or a cron expression like \*\/5 \* \* \* \*, got `5`/,
    )
  })
})

describe('jobs variables', () => {
  const vars = jobVars([
    { name: 'heap-watch', schedule: '1m', run: () => {} },
    { name: 'nightly', schedule: '0 3 * * *', run: () => {} },
  ])

  it('read JOBS and each JOB_<NAME>_SCHEDULE: off, a duration or a cron expression', () => {
    assert.deepEqual(parseConfig({}, vars), {
      config: {
        on: false,
        'heap-watch': { kind: 'every', ms: 60_000 },
        nightly: { kind: 'cron', expression: '0 3 * * *' },
      },
      problems: [],
    })
    const env = { JOBS: 'on', JOB_HEAP_WATCH_SCHEDULE: '*/10 * * * * *', JOB_NIGHTLY_SCHEDULE: 'off' }
    assert.deepEqual(parseConfig(env, vars).config, {
      on: true,
      'heap-watch': { kind: 'cron', expression: '*/10 * * * * *' },
      nightly: null,
    })
    const schedule = 'off, a duration like 30s or 1h, or a cron expression like */5 * * * *'
    const cases: [Record<string, string>, string][] = [
      [{ JOBS: 'yes' }, 'Expected `JOBS` to be `on` or `off`, got `yes`'],
      [{ JOB_NIGHTLY_SCHEDULE: '30' }, `Expected \`JOB_NIGHTLY_SCHEDULE\` to be ${schedule}, got \`30\``],
      [{ JOB_NIGHTLY_SCHEDULE: '0s' }, `Expected \`JOB_NIGHTLY_SCHEDULE\` to be ${schedule}, got \`0s\``],
      [
        { JOB_NIGHTLY_SCHEDULE: '61 * * * *' },
        `Expected \`JOB_NIGHTLY_SCHEDULE\` to be ${schedule}, got \`61 * * * *\``,
      ],
      [
        { JOB_NIGHTLY_SCHEDULE: '0 0 3 * * * 2030' },
        `Expected \`JOB_NIGHTLY_SCHEDULE\` to be ${schedule}, got \`0 0 3 * * * 2030\``,
      ],
      [
        { JOB_NIGHTLY_SCHEDULE: '2030-01-01T00:00:00' },
        `Expected \`JOB_NIGHTLY_SCHEDULE\` to be ${schedule}, got \`2030-01-01T00:00:00\``,
      ],
    ]
    for (const [env, problem] of cases)
      assert.deepEqual(parseConfig(env, vars).problems, [problem], JSON.stringify(env))
  })

  it('refuse a job list with a name that is not unique kebab-case, or a bad jitter or mustSucceedWithin', () => {
    const job: Job = { name: 'a', schedule: '1m', run: () => {} }
    assert.throws(() => jobVars([job, job]), /job name a is not unique/)
    assert.throws(() => jobVars([{ ...job, name: 'on' }]), /job name on/)
    assert.throws(() => jobVars([{ ...job, name: 'Big_Job' }]), /job name Big_Job/)
    assert.throws(() => jobVars([{ ...job, jitter: 1 }]), /jitter/)
    assert.throws(() => jobVars([{ ...job, mustSucceedWithin: '10' }]), /mustSucceedWithin/)
  })

  it("hold the README's variable table to the declaration of job-list.ts", () => {
    const readme = readFileSync(new URL('README.md', import.meta.url), 'utf8')
    assert.deepEqual(readmeTable(readme, '## Configuration'), declaredRows(jobVars(jobList)))
  })
})
