import { createReadStream } from 'node:fs'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import type { IncomingMessage } from 'node:http'
import { Session } from 'node:inspector/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { getHeapStatistics, writeHeapSnapshot } from 'node:v8'
import { sendJSON, sendProblem } from '../json.ts'
import type { Logger } from '../log.ts'
import type { TrackedResponse } from '../response.ts'
import type { Handler } from '../router.ts'

/** ProfileDeps is what the profiling handlers share. */
export interface ProfileDeps {
  log: Logger
  /** service names the downloaded files. */
  service: string
  /** lock lets one profile of any kind run at a time. */
  lock: ProfileLock
  /** shutdown aborts when the debug listener closes: a profile in progress is then abandoned. */
  shutdown: AbortSignal
}

/** ProfileLock lets one profile run at a time. */
export interface ProfileLock {
  /** run starts job and returns its promise, or returns undefined when a profile is already running. */
  run(job: () => Promise<void>): Promise<void> | undefined
  /** settled resolves once no profile is running. */
  settled(): Promise<void>
}

/** newProfileLock returns an unlocked ProfileLock. */
export function newProfileLock(): ProfileLock {
  let current: Promise<void> | undefined
  return {
    run(job) {
      if (current !== undefined) return undefined
      const running = job()
      current = running.then(
        () => (current = undefined),
        () => (current = undefined),
      )
      return running
    },
    async settled() {
      await current
    },
  }
}

const maxSeconds = 60
const defaultSeconds = 10

/**
 * handleCPUProfile answers `?seconds=N` (an integer from 1 to 60, default 10) with a CPU profile of
 * the whole process over the next N seconds, as a .cpuprofile file that Chrome DevTools and
 * speedscope open. It answers 400 for another `seconds` and 409 while another profile runs.
 */
export function handleCPUProfile(deps: ProfileDeps): Handler {
  return async (req, res) => {
    const seconds = parseSeconds(readQuery(req).get('seconds'))
    if (typeof seconds === 'string') return sendProblem(res, 400, seconds)
    await runProfile(deps, req, res, { profile: 'cpu', seconds }, 'cpuprofile', async (session, abandoned, headers) => {
      await session.post('Profiler.enable')
      await session.post('Profiler.start')
      await sleep(seconds * 1000, undefined, { signal: abandoned }).catch(() => {}) // rejects once abandoned
      if (abandoned.aborted) return
      sendJSON(res, 200, (await session.post('Profiler.stop')).profile, headers)
    })
  }
}

/**
 * handleHeapProfile answers with a heap snapshot (.heapsnapshot), streamed as V8 writes it, or with
 * `?sampling=1` a sampling heap profile (.heapprofile) over `seconds` (1 to 60, default 10), which
 * costs far less on a big heap. It answers 400 for other values and 409 while another profile runs.
 */
export function handleHeapProfile(deps: ProfileDeps): Handler {
  return async (req, res) => {
    const query = readQuery(req)
    const sampling = query.get('sampling') ?? '0'
    if (sampling !== '0' && sampling !== '1') {
      return sendProblem(res, 400, `Expected \`sampling\` to be 0 or 1, got \`${sampling}\`.`)
    }
    if (sampling === '0') {
      if (query.has('seconds')) {
        return sendProblem(
          res,
          400,
          'A heap snapshot takes no `seconds`; add `sampling=1` for a sampling heap profile.',
        )
      }
      return runProfile(deps, req, res, { profile: 'heap' }, 'heapsnapshot', (session, _, headers) =>
        sendHeapSnapshot(deps.log, session, res, headers),
      )
    }
    const seconds = parseSeconds(query.get('seconds'))
    if (typeof seconds === 'string') return sendProblem(res, 400, seconds)
    await runProfile(
      deps,
      req,
      res,
      { profile: 'heap-sampling', seconds },
      'heapprofile',
      async (session, abandoned, headers) => {
        await session.post('HeapProfiler.enable')
        await session.post('HeapProfiler.startSampling')
        await sleep(seconds * 1000, undefined, { signal: abandoned }).catch(() => {}) // rejects once abandoned
        if (abandoned.aborted) return
        sendJSON(res, 200, (await session.post('HeapProfiler.stopSampling')).profile, headers)
      },
    )
  }
}

/** Take takes one profile and answers with it, unless abandoned aborts first: then it must not answer. */
type Take = (session: Session, abandoned: AbortSignal, headers: Record<string, string>) => Promise<void>

/**
 * runProfile takes one profile under the lock with its own inspector session, and logs who asked
 * and how long it took. The profile is abandoned, its session disconnected, as soon as the client
 * goes away or the debug listener closes. HEAD answers the headers without taking a profile.
 */
async function runProfile(
  deps: ProfileDeps,
  req: IncomingMessage,
  res: TrackedResponse,
  what: { profile: string; seconds?: number },
  extension: string,
  take: Take,
): Promise<void> {
  const headers = fileHeaders(deps.service, extension)
  if (req.method === 'HEAD') {
    res.writeHead(200, headers).end()
    return
  }
  const job = deps.lock.run(async () => {
    const started = performance.now()
    const fields = {
      ...what,
      requestId: res.requestId,
      remoteAddr: req.socket.remoteAddress,
      userAgent: req.headers['user-agent'],
    }
    deps.log.info(fields, 'profile started')
    const abandon = new AbortController()
    const onAbandon = () => abandon.abort()
    res.once('close', onAbandon)
    deps.shutdown.addEventListener('abort', onAbandon, { once: true })
    const session = new Session()
    session.connect()
    try {
      await take(session, abandon.signal, headers)
      const durationMs = Math.round(performance.now() - started)
      // The answer was complete if the handler ended it; a response cut before that was abandoned.
      if (!res.writableEnded) deps.log.warn({ ...fields, durationMs }, 'profile abandoned')
      else deps.log.info({ ...fields, durationMs, bytes: res.bodyBytes }, 'profile finished')
    } finally {
      // Disconnecting ends whatever the session started: a profile still running is dropped.
      session.disconnect()
      res.off('close', onAbandon)
      deps.shutdown.removeEventListener('abort', onAbandon)
    }
  })
  if (job === undefined) {
    return sendProblem(res, 409, 'Another profile is in progress; one runs at a time. Try again when it finishes.')
  }
  await job
}

/**
 * sendHeapSnapshot has V8 write the snapshot to a file in the temp directory, then streams the file
 * to the client at the client's pace and deletes it: the serialised snapshot, often larger than the
 * heap, never sits in memory. Where no temp directory is writable (a read-only root filesystem with
 * no volume at /tmp), V8's chunks go straight to the socket instead; they queue there until sent,
 * because V8 serialises synchronously and cannot wait for 'drain'.
 */
async function sendHeapSnapshot(log: Logger, session: Session, res: TrackedResponse, headers: Record<string, string>) {
  // The whole process stops while V8 writes: say how long it may take before paying for it.
  const heapUsedBytes = getHeapStatistics().used_heap_size
  const estimatedPauseSeconds = Math.ceil(heapUsedBytes / snapshotBytesPerSecond)
  log.warn({ heapUsedBytes, estimatedPauseSeconds }, 'heap snapshot: the process pauses while V8 writes it')
  let dir: string | undefined
  try {
    dir = await mkdtemp(join(tmpdir(), snapshotPrefix))
  } catch (err) {
    log.warn(
      { tmpdir: tmpdir(), code: (err as NodeJS.ErrnoException).code },
      'no writable temp directory: heap snapshot queued in memory',
    )
  }
  if (dir === undefined) {
    res.writeHead(200, headers)
    session.on('HeapProfiler.addHeapSnapshotChunk', (message) => res.write(message.params.chunk))
    await session.post('HeapProfiler.takeHeapSnapshot', { reportProgress: false })
    res.end()
    return
  }
  try {
    const file = writeHeapSnapshot(join(dir, 'snapshot.heapsnapshot'))
    res.writeHead(200, headers)
    await pipeline(createReadStream(file), res).catch(() => {}) // a client that left is logged as aborted
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

// Measured on a 2-core machine: 54 MB took 1.6 s, a 370 MB heap over 20 s (README.md in this folder).
const snapshotBytesPerSecond = 18 * 1024 * 1024
const snapshotPrefix = 'heapsnapshot-'

/**
 * cleanLeftovers deletes the temp directories of snapshots a killed process left behind (SIGKILL
 * mid-snapshot skips the cleanup), so an emptyDir at /tmp does not fill up over restarts.
 */
export async function cleanLeftovers(log: Logger): Promise<void> {
  const names = await readdir(tmpdir()).catch(() => [])
  const leftovers = names.filter((name) => name.startsWith(snapshotPrefix))
  await Promise.all(leftovers.map((name) => rm(join(tmpdir(), name), { recursive: true, force: true })))
  if (leftovers.length > 0) log.info({ removed: leftovers }, 'removed heap snapshots a previous process left behind')
}

function readQuery(req: IncomingMessage): URLSearchParams {
  const url = req.url ?? ''
  const query = url.indexOf('?')
  return new URLSearchParams(query === -1 ? '' : url.slice(query + 1))
}

/** parseSeconds returns the number of seconds, or the problem's detail when value is not 1 to 60. */
function parseSeconds(value: string | null): number | string {
  if (value === null) return defaultSeconds
  const seconds = /^\d{1,2}$/.test(value) ? Number(value) : 0
  if (seconds >= 1 && seconds <= maxSeconds) return seconds
  return `Expected \`seconds\` to be an integer from 1 to ${maxSeconds}, got \`${value}\`.`
}

/**
 * fileHeaders names the download after the service and the time, in ISO 8601's basic format
 * (20261121T234502Z): the extended format's colons are not allowed in Windows file names.
 */
function fileHeaders(service: string, extension: string): Record<string, string> {
  const time = new Date().toISOString().replace(/\.\d+/, '').replaceAll(/[-:]/g, '')
  const name = `${service.replaceAll(/[^\w.-]/g, '_')}-${time}.${extension}`
  return {
    'content-type': 'application/json',
    'content-disposition': `attachment; filename="${name}"`,
    'cache-control': 'no-store',
  }
}
