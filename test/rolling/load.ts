// The load: a few loops, each sending GET requests one after another through a keep-alive agent
// at a steady pace, each request with its own X-Request-Id, every outcome counted.
import { Agent, request } from 'node:http'

/** LoadOptions says where to send the load and how much. */
export interface LoadOptions {
  port: number
  path: string
  /** connections is the number of loops, and so of keep-alive connections. */
  connections: number
  /** rate is the requests per second aimed at, over all loops; a slow machine gets fewer. */
  rate: number
  /** idPrefix starts every X-Request-Id, to tell the load's access-log lines from the checks'. */
  idPrefix: string
}

/** Failure is one request that did not get a 200 carrying its own id. */
export interface Failure {
  id: string
  /** at is when it failed (Date.now()), to place it against the restarts. */
  at: number
  what: string
}

/** LoadResult is everything the load counted. */
export interface LoadResult {
  sent: number
  /** answered holds the ids of the requests answered 200. */
  answered: string[]
  /** statuses counts the responses by status code. */
  statuses: Map<number, number>
  /** errors counts the requests that got no response, by error code. */
  errors: Map<string, number>
  failures: Failure[]
  durationMs: number
}

/** Load is load under way. */
export interface Load {
  /** finished counts the requests that got a response or an error so far. */
  finished(): number
  /** stop lets every request under way finish, then resolves with the counts. */
  stop(): Promise<LoadResult>
}

// A bound for a stuck request only: every request here should take milliseconds.
const requestTimeoutMs = 10_000

type Outcome = { status: number; echoed: string | string[] | undefined } | { error: string }

/** startLoad starts the loops at once. */
export function startLoad(options: LoadOptions): Load {
  const agent = new Agent({ keepAlive: true, maxSockets: options.connections })
  const result: LoadResult = {
    sent: 0,
    answered: [],
    statuses: new Map(),
    errors: new Map(),
    failures: [],
    durationMs: 0,
  }
  let finished = 0
  let stopping = false
  const started = performance.now()
  const intervalMs = (options.connections * 1000) / options.rate

  function record(id: string, outcome: Outcome) {
    finished++
    if ('error' in outcome) {
      result.errors.set(outcome.error, (result.errors.get(outcome.error) ?? 0) + 1)
      result.failures.push({ id, at: Date.now(), what: outcome.error })
      return
    }
    result.statuses.set(outcome.status, (result.statuses.get(outcome.status) ?? 0) + 1)
    if (outcome.status !== 200) result.failures.push({ id, at: Date.now(), what: `status ${outcome.status}` })
    else if (outcome.echoed !== id)
      result.failures.push({ id, at: Date.now(), what: `answered as ${String(outcome.echoed)}` })
    else result.answered.push(id)
  }

  async function loop(index: number) {
    // Loops start spread over one interval, so requests arrive evenly rather than in bursts.
    const first = started + (index * intervalMs) / options.connections
    for (let n = 0; ; n++) {
      // Pacing, not synchronisation: a loop that falls behind sends at once.
      const wait = first + n * intervalMs - performance.now()
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
      if (stopping) return
      const id = `${options.idPrefix}-${index}-${n}`
      result.sent++
      record(id, await send(agent, options, id))
    }
  }

  const loops = Array.from({ length: options.connections }, (_, index) => loop(index))
  return {
    finished: () => finished,
    async stop() {
      stopping = true
      await Promise.all(loops)
      result.durationMs = performance.now() - started
      agent.destroy()
      return result
    },
  }
}

/** send makes one request and resolves with its status or its error; it never rejects. */
function send(agent: Agent, options: LoadOptions, id: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const headers = { 'x-request-id': id }
    const req = request({ agent, host: '127.0.0.1', port: options.port, path: options.path, headers }, (res) => {
      res.on('error', (err) => resolve({ error: describeError(err) }))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, echoed: res.headers['x-request-id'] }))
      res.resume()
    })
    req.setTimeout(requestTimeoutMs, () => req.destroy(new Error(`no response within ${requestTimeoutMs} ms`)))
    req.on('error', (err) => resolve({ error: describeError(err) }))
    req.end()
  })
}

function describeError(err: Error): string {
  return (err as NodeJS.ErrnoException).code ?? err.message
}
