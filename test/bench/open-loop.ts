// open-loop is the benchmark's constant-rate load generator, the model of wrk2 (not in Debian):
// requests are due at a fixed rate whether or not earlier ones were answered, as when many
// independent clients call a service, and each one's latency counts from when it was due, so time
// spent waiting for a free connection is not hidden (no coordinated omission).
//
// Its clients keep their connections, as a proxy's pool or long-lived clients do: it opens
// maxConnections first and sends one request on each, so that the service has accepted them all
// before the load starts (libuv accepts one connection per event-loop turn, a handful a second on
// an overloaded service: BENCHMARKS.md). Then a warm-up at warmupRate, not recorded, then the run
// at rate. A due request takes an idle connection, or waits for one; a client gives up after
// timeoutMs, closes its connection and opens a new one when it needs it. Raw sockets and a minimal
// response parser keep the generator's own cost per request low enough to drive three times what
// the service sustains from one CPU.
//
//   node open-loop.js '{"port":8080,"path":"/items","rate":6000,"seconds":20,"warmupRate":1000,
//                       "warmupSeconds":3,"maxConnections":1000,"timeoutMs":5000}'
//
// It prints `run` when the run starts, then one JSON line, OpenLoopReport, once every request of
// the run was answered or given up on.
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks'
import { connect, type Socket } from 'node:net'

/** OpenLoopOptions describe one run. */
export interface OpenLoopOptions {
  port: number
  path: string
  /** rate is the requests due per second during the run, which lasts seconds. */
  rate: number
  seconds: number
  /** warmupRate and warmupSeconds describe the warm-up before the run, which is not recorded. */
  warmupRate: number
  warmupSeconds: number
  /** maxConnections is the clients' connections, opened before the warm-up and never exceeded. */
  maxConnections: number
  /** timeoutMs is how long a client waits from when its request was due before giving up. */
  timeoutMs: number
}

/** Latency summarises one histogram, in milliseconds. */
export interface Latency {
  count: number
  p50: number
  p90: number
  p99: number
  max: number
}

/** OpenLoopReport is what one run measured; the warm-up only counts in sentInAll and answeredInAll. */
export interface OpenLoopReport {
  /** due counts the requests due over the run: rate × seconds. */
  due: number
  /** statuses counts the responses received in full, by status code. */
  statuses: Record<string, number>
  /** ok is the latency of 2xx answers, shed of 503 answers, from when each was due. */
  ok: Latency
  shed: Latency
  /** timedOut counts requests sent and not answered within timeoutMs; expired those never sent in time. */
  timedOut: number
  expired: number
  /** errors counts requests lost to a connection error or close. */
  errors: number
  /** reconnects counts the connections opened during the run, in place of ones given up on. */
  reconnects: number
  /** maxLagMs is the longest the generator's own scheduler ran late: large means it did not keep up. */
  maxLagMs: number
  /** timeline has one entry per second of the run and of the wait for its last answers. */
  timeline: Second[]
  /** sentInAll and answeredInAll count every request, priming and warm-up included. */
  sentInAll: number
  answeredInAll: number
}

/** Second is what happened in one second of a run. */
export interface Second {
  ok: number
  shed: number
  /** lost counts requests timed out, expired or lost to a connection error. */
  lost: number
  /** okP99 is the p99 latency of the 2xx answers received in that second, in ms. */
  okP99: number
  /** waiting counts the requests due and waiting for a connection at the end of that second. */
  waiting: number
}

interface Connection {
  socket: Socket
  /** dueAt is when the request in flight on it was due; undefined when idle. */
  dueAt: number | undefined
  /** head holds the response's bytes until its header block is complete. */
  head: Buffer | undefined
  /** remaining counts the body bytes still to come; -1 until the header block is parsed. */
  remaining: number
  status: number
  reusable: boolean
}

/** Phase is a stretch of requests due at a constant rate. */
interface Phase {
  start: number
  interval: number
  total: number
  scheduled: number
  recorded: boolean
}

const headerEnd = Buffer.from('\r\n\r\n')

/** newOpenLoop returns the generator's state and operations for options. */
function newOpenLoop(options: OpenLoopOptions) {
  const request = Buffer.from(`GET ${options.path} HTTP/1.1\r\nHost: 127.0.0.1:${options.port}\r\n\r\n`, 'latin1')
  const ok = createHistogram()
  const shed = createHistogram()
  const second = { ok: 0, shed: 0, lost: 0, okLatency: createHistogram() }
  const statuses: Record<string, number> = {}
  const idle: Connection[] = []
  const busy = new Set<Connection>()
  const waiting: number[] = [] // due times of requests waiting for a connection, oldest first
  let waitingHead = 0
  const counts = { timedOut: 0, expired: 0, errors: 0, open: 0, reconnects: 0, sent: 0, answered: 0 }
  let recordFrom = Number.POSITIVE_INFINITY // requests due from then on are the run's

  const lose = (dueAt: number) => {
    if (dueAt < recordFrom) return false
    second.lost++
    return true
  }

  function send(conn: Connection, dueAt: number) {
    conn.dueAt = dueAt
    conn.head = undefined
    conn.remaining = -1
    busy.add(conn)
    counts.sent++
    conn.socket.write(request)
  }

  function open(): Connection {
    const socket = connect(options.port, '127.0.0.1')
    socket.setNoDelay(true)
    const conn: Connection = { socket, dueAt: undefined, head: undefined, remaining: -1, status: 0, reusable: true }
    counts.open++
    if (performance.now() >= recordFrom) counts.reconnects++
    socket.on('data', (chunk: Buffer) => onData(conn, chunk))
    socket.on('error', () => {}) // 'close' follows and counts the loss
    socket.on('close', () => onClose(conn))
    return conn
  }

  function dispatch(dueAt: number) {
    let conn = idle.pop()
    while (conn !== undefined && conn.socket.destroyed) conn = idle.pop()
    if (conn !== undefined) return send(conn, dueAt)
    if (counts.open < options.maxConnections) return send(open(), dueAt)
    waiting.push(dueAt)
  }

  function onData(conn: Connection, chunk: Buffer) {
    if (conn.dueAt === undefined) return // bytes after a timeout or an unasked answer: ignored
    let body = chunk
    if (conn.remaining < 0) {
      const bytes = conn.head === undefined ? chunk : Buffer.concat([conn.head, chunk])
      const end = bytes.indexOf(headerEnd)
      if (end < 0) {
        conn.head = bytes
        return
      }
      const head = bytes.toString('latin1', 0, end)
      conn.status = Number(head.slice(9, 12))
      const length = /\r\ncontent-length: *(\d+)/i.exec(head)?.[1]
      if (length === undefined) throw new Error(`a response without Content-Length:\n${head}`)
      conn.remaining = Number(length)
      conn.reusable = !/\r\nconnection: *close/i.test(head)
      body = bytes.subarray(end + 4)
    }
    conn.remaining -= body.byteLength
    if (conn.remaining <= 0) answered(conn, conn.dueAt)
  }

  function answered(conn: Connection, dueAt: number) {
    counts.answered++
    if (dueAt >= recordFrom) record(conn.status, performance.now() - dueAt)
    conn.dueAt = undefined
    busy.delete(conn)
    if (!conn.reusable) return void conn.socket.end()
    const next = nextWaiting(performance.now())
    if (next !== undefined) send(conn, next)
    else idle.push(conn)
  }

  function record(status: number, ms: number) {
    const micros = Math.max(1, Math.round(ms * 1000))
    if (status >= 200 && status < 300) {
      ok.record(micros)
      second.okLatency.record(micros)
      second.ok++
    } else if (status === 503) {
      shed.record(micros)
      second.shed++
    }
    statuses[status] = (statuses[status] ?? 0) + 1
  }

  /** nextWaiting returns the oldest waiting request still worth sending; older ones expire. */
  function nextWaiting(now: number): number | undefined {
    while (waitingHead < waiting.length) {
      const dueAt = waiting[waitingHead++] ?? 0
      if (now - dueAt < options.timeoutMs) return dueAt
      if (lose(dueAt)) counts.expired++
    }
    waiting.length = waitingHead = 0
    return undefined
  }

  function onClose(conn: Connection) {
    counts.open--
    if (conn.dueAt === undefined) return
    if (lose(conn.dueAt)) counts.errors++
    busy.delete(conn)
    conn.dueAt = undefined
  }

  function checkTimeouts(now: number) {
    for (const conn of busy) {
      const dueAt = conn.dueAt ?? now
      if (now - dueAt < options.timeoutMs) continue
      if (lose(dueAt)) counts.timedOut++
      busy.delete(conn)
      conn.dueAt = undefined // so that its close is not counted as an error too
      conn.socket.destroy()
    }
    while (waitingHead < waiting.length && now - (waiting[waitingHead] ?? now) >= options.timeoutMs) {
      if (lose(waiting[waitingHead++] ?? now)) counts.expired++
    }
    waiting.splice(0, waitingHead) // drops what was taken or expired, so the queue does not grow for ever
    waitingHead = 0
  }

  /** schedule sends the requests of phase due by now, oldest first; it returns whether any remain. */
  function schedule(phase: Phase, now: number): boolean {
    const due = Math.min(phase.total, Math.floor((now - phase.start) / phase.interval) + 1)
    while (phase.scheduled < due) {
      const dueAt = phase.start + phase.scheduled++ * phase.interval
      // A free connection takes the oldest waiting request first.
      if (waitingHead < waiting.length) waiting.push(dueAt)
      else dispatch(dueAt)
    }
    // Connections given up on leave room for new ones, which take the oldest waiting requests.
    while (counts.open < options.maxConnections && waitingHead < waiting.length) {
      const dueAt = nextWaiting(now)
      if (dueAt !== undefined) send(open(), dueAt)
    }
    return phase.scheduled < phase.total
  }

  return {
    counts,
    idle,
    busy,
    open,
    send,
    schedule,
    checkTimeouts,
    startRecording(now: number) {
      recordFrom = now
    },
    pending: () => busy.size + waiting.length - waitingHead,
    closeSecond(): Second {
      const okP99 = second.okLatency.count === 0 ? 0 : second.okLatency.percentile(99) / 1000
      const { ok: okCount, shed: shedCount, lost } = second
      second.ok = second.shed = second.lost = 0
      second.okLatency.reset()
      return { ok: okCount, shed: shedCount, lost, okP99, waiting: waiting.length - waitingHead }
    },
    report(): Omit<OpenLoopReport, 'due' | 'maxLagMs' | 'timeline'> {
      const { timedOut, expired, errors, reconnects, sent, answered: answeredInAll } = counts
      const summary = { ok: summarise(ok), shed: summarise(shed), statuses }
      return { ...summary, timedOut, expired, errors, reconnects, sentInAll: sent, answeredInAll }
    },
  }
}

/**
 * runOpenLoop opens and primes the connections, warms the server up, runs, and resolves with what
 * it measured. onRun is called when the run starts.
 */
export async function runOpenLoop(options: OpenLoopOptions, onRun: () => void = () => {}): Promise<OpenLoopReport> {
  const loop = newOpenLoop(options)
  const connections = Array.from({ length: options.maxConnections }, () => loop.open())
  await Promise.all(connections.map((conn) => onceConnected(conn.socket)))
  // One request on each connection: answered means accepted, before any load is on. A connection
  // still unanswered after twice the timeout is given up on; the run opens another when it needs one.
  for (const conn of connections) loop.send(conn, performance.now())
  const deadline = performance.now() + 2 * options.timeoutMs
  while (loop.busy.size > 0 && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
  loop.checkTimeouts(Number.POSITIVE_INFINITY)

  const phase = (rate: number, seconds: number, recorded: boolean): Phase => ({
    start: performance.now(),
    interval: 1000 / rate,
    total: Math.round(rate * seconds),
    scheduled: 0,
    recorded,
  })
  const warmup = phase(options.warmupRate, options.warmupSeconds, false)
  let current = warmup
  let maxLagMs = 0
  const timeline: Second[] = []
  return new Promise((resolve) => {
    let lastTick = performance.now()
    let lastCheck = lastTick
    let nextSecond = Number.POSITIVE_INFINITY
    const timer = setInterval(() => {
      const now = performance.now()
      if (current.recorded) maxLagMs = Math.max(maxLagMs, now - lastTick - 1)
      lastTick = now
      if (!loop.schedule(current, now) && current === warmup) {
        current = phase(options.rate, options.seconds, true)
        loop.startRecording(current.start)
        nextSecond = current.start + 1000
        onRun()
      }
      if (now - lastCheck >= 50) {
        lastCheck = now
        loop.checkTimeouts(now)
      }
      if (now >= nextSecond) {
        nextSecond += 1000
        timeline.push(loop.closeSecond())
      }
      if (!current.recorded || current.scheduled < current.total || loop.pending() > 0) return
      clearInterval(timer)
      timeline.push(loop.closeSecond())
      for (const conn of loop.idle) conn.socket.destroy()
      resolve({ due: current.total, maxLagMs, timeline, ...loop.report() })
    }, 1)
  })
}

function onceConnected(socket: Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve())
    socket.once('error', reject)
  })
}

function summarise(histogram: RecordableHistogram): Latency {
  const ms = (micros: number) => (histogram.count === 0 ? 0 : micros / 1000)
  return {
    count: histogram.count,
    p50: ms(histogram.percentile(50)),
    p90: ms(histogram.percentile(90)),
    p99: ms(histogram.percentile(99)),
    max: ms(histogram.max),
  }
}

if (import.meta.main) {
  const options = JSON.parse(process.argv[2] ?? '') as OpenLoopOptions
  const report = await runOpenLoop(options, () => process.stdout.write('run\n'))
  process.stdout.write(`${JSON.stringify(report)}\n`)
}
