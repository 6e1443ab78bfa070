// The headline: nothing lost at shutdown extends to messages. Three instances of the service, real
// processes from the sources (fixture.ts: the queue add-on with a handler that takes 40 ms and
// records what it starts and finishes), consume one queue of a real RabbitMQ while a producer
// publishes steadily. A rolling restart (SIGTERM, exit 0, a new instance, the next), then a SIGKILL
// mid-handler: every message is handled, the queue and its dead-letter queue end empty. Without
// rabbitmq-server these tests skip, saying why; under CI=true that is a failure.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it, type TestContext } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { type LogSink, newLogSink } from '../../test/service.ts'
import { type Broker, findRabbitMQ, newPublisher, type Publisher, type QueueStats, startBroker } from './broker.ts'

const fixture = fileURLToPath(new URL('fixture.ts', import.meta.url))
const timeout = 240_000

/** Instance is one process of the service. */
interface Instance extends Pick<LogSink, 'logs' | 'waitForLog'> {
  pid: number
  kill(signal: NodeJS.Signals): void
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

describe('three consumers under a rolling restart', { timeout }, () => {
  let broker: Broker | undefined
  let skip: string | undefined
  let dir = ''
  before(async () => {
    skip = findRabbitMQ(process.env)
    if (skip !== undefined) return
    dir = mkdtempSync(join(tmpdir(), 'kickstart-queue-'))
    broker = await startBroker()
  })
  after(async () => {
    await broker?.stop()
    broker?.dispose()
    if (dir !== '') rmSync(dir, { recursive: true, force: true })
  })

  /** setUp starts three instances on a fresh queue and a producer, or skips t without a broker. */
  async function setUp(t: TestContext, queue: string) {
    if (broker === undefined) {
      t.skip(skip)
      return undefined
    }
    const progress = join(dir, `${queue}.progress`)
    writeFileSync(progress, '')
    const env = {
      AMQP_URL: broker.url,
      FIXTURE_QUEUE: queue,
      FIXTURE_PROGRESS: progress,
      FIXTURE_HANDLE_MS: '40',
      QUEUE_PREFETCH: '10',
    }
    const start = () => startInstance(t, env)
    const instances = await Promise.all([start(), start(), start()])
    const publisher = await newPublisher(broker.url)
    t.after(() => publisher.close())
    const producer = startProducer(publisher, queue)
    // Every instance takes its share before anything stops.
    await waitUntil(() => instances.every((instance) => acked(instance).length >= 20), 'each instance to ack 20')
    return { broker, publisher, progress, start, instances, producer }
  }

  it('a rolling restart loses nothing: every message handled, acked once, none left', async (t) => {
    const started = performance.now()
    const setup = await setUp(t, 'rolling')
    if (setup === undefined) return
    const { broker, publisher, progress, start, instances, producer } = setup
    const all = [...instances]
    const restarts: string[] = []
    for (const [i, old] of instances.entries()) {
      const signalled = performance.now()
      old.kill('SIGTERM')
      assert.deepEqual(await old.exit, { code: 0, signal: null })
      const exitMs = ms(signalled)
      const stopped = old.logs.find((l) => l.msg === 'queue stopped consuming')
      assert.ok(stopped, 'it stopped consuming before it exited')
      const next = await start()
      instances[i] = next
      all.push(next)
      await waitUntil(() => acked(next).length >= 20, 'the new instance to ack 20')
      restarts.push(`exit 0 after ${exitMs} (${String(stopped.inflight)} in flight at SIGTERM)`)
    }
    const ids = await producer.stop()
    await waitUntil(() => doneIds(progress).size === ids.length, `all ${ids.length} messages handled`)
    await Promise.all(instances.map(stopInstance))

    const ackedIds = all.flatMap(acked)
    assert.deepEqual(count(ackedIds, ids), new Map([[1, ids.length]]), 'every message acked exactly once')
    const others = all.flatMap((instance) => instance.logs.filter((l) => l.msg === 'message' && l.outcome !== 'acked'))
    assert.deepEqual(others, [], 'no retry, no dead letter, nothing returned')
    await assertEmpty(broker, publisher, 'rolling')
    t.diagnostic(`${ids.length} messages, 3 restarts (${restarts.join('; ')}), ${ms(started)} in all`)
  })

  it('a SIGKILL mid-handler loses nothing: its unacked messages are handled by another instance', async (t) => {
    const started = performance.now()
    const setup = await setUp(t, 'killed')
    if (setup === undefined) return
    const { broker, publisher, progress, start, instances, producer } = setup
    const [first, victim, third] = instances as [Instance, Instance, Instance]
    await waitUntil(() => inHand(progress, victim.pid).size > 0, 'the victim to be mid-handler')
    victim.kill('SIGKILL')
    assert.deepEqual(await victim.exit, { code: null, signal: 'SIGKILL' })
    const cut = inHand(progress, victim.pid) // final: the process is gone
    const replacement = await start() // as Kubernetes would
    const ids = await producer.stop()
    await waitUntil(() => doneIds(progress).size === ids.length, `all ${ids.length} messages handled`)
    const survivors = [first, third, replacement]
    await Promise.all(survivors.map(stopInstance))
    const all = (instances: Instance[]) => [...instances, replacement]

    assert.ok(cut.size > 0)
    const handlers = doneBy(progress)
    for (const id of cut) {
      assert.ok(
        handlers.get(id)?.some((pid) => pid !== victim.pid),
        `${id}, cut short by the kill, handled by another`,
      )
      const line = survivors.flatMap((instance) => instance.logs).find((l) => l.msg === 'message' && l.messageId === id)
      assert.equal(line?.attempt, 2, `${id} came back with its delivery counted`)
    }
    // The victim's last lines died with it, and an ack it gave just before may not have left it:
    // a message it finished may show no acked line, or two; every other message shows exactly one.
    const times = new Map<string, number>()
    for (const id of all(instances).flatMap(acked)) times.set(id, (times.get(id) ?? 0) + 1)
    for (const id of ids) {
      if (times.get(id) === 1) continue
      assert.ok(handlers.get(id)?.includes(victim.pid), `${id} acked ${times.get(id) ?? 0} times`)
    }
    await assertEmpty(broker, publisher, 'killed')
    t.diagnostic(
      `${ids.length} messages, ${cut.size} in the victim's hands at SIGKILL, all handled again; ` +
        `messages by acked lines: ${JSON.stringify(Object.fromEntries(count(all(instances).flatMap(acked), ids)))}; ${ms(started)} in all`,
    )
  })
})

/** startInstance spawns fixture.ts with env and resolves once it consumes; it is killed after t if still running. */
async function startInstance(t: TestContext, env: Record<string, string>): Promise<Instance> {
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', fixture], {
    env: { PATH: process.env.PATH, PORT: '0', HOST: '127.0.0.1', SHUTDOWN_TIMEOUT: '10s', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  t.after(() => child.kill('SIGKILL'))
  const sink = newLogSink()
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => sink.write(chunk))
  const exit = once(child, 'exit').then(([code, signal]) => ({ code, signal }) as Awaited<Instance['exit']>)
  const instance = { pid: child.pid ?? 0, kill: (signal: NodeJS.Signals) => child.kill(signal), exit, ...sink }
  await Promise.race([
    sink.waitForLog((l) => l.msg === 'listening', 'the listening line'),
    exit.then((how) => Promise.reject(new Error(`exited ${JSON.stringify(how)} before listening`))),
  ])
  // Connected before it listens, unless its first attempt failed: then it says why, and retries.
  await sink.waitForLog((l) => l.msg === 'queue connected', 'queue connected')
  const failed = sink.logs.find((l) => l.msg === 'queue disconnected')
  if (failed !== undefined) t.diagnostic(`an instance connected after it listened: ${String(failed.reason)}`)
  return instance
}

async function stopInstance(instance: Instance): Promise<void> {
  instance.kill('SIGTERM')
  assert.deepEqual(await instance.exit, { code: 0, signal: null })
}

/**
 * startProducer publishes messages m-0, m-1, … to queue, twenty at a time, each confirmed, at a
 * steady pace (a few hundred a second, about half of what the three instances handle) until stop,
 * which resolves with the ids published.
 */
function startProducer(publisher: Publisher, queue: string) {
  const ids: string[] = []
  let stopped = false
  const done = (async () => {
    while (!stopped) {
      const batch = Array.from({ length: 20 }, (_, i) => `m-${ids.length + i}`)
      await Promise.all(batch.map((id) => publisher.publish(queue, JSON.stringify({ id }), { messageId: id })))
      ids.push(...batch)
      await sleep(10) // the pace, not a wait for anything
    }
  })()
  return {
    async stop() {
      stopped = true
      await done
      return ids
    },
  }
}

/** acked returns the ids of the messages an instance logged as acked. */
function acked(instance: Pick<Instance, 'logs'>): string[] {
  return instance.logs.filter((l) => l.msg === 'message' && l.outcome === 'acked').map((l) => l.messageId as string)
}

/** count maps how many times an id occurs in found to how many of ids occur that often. */
function count(found: string[], ids: string[]): Map<number, number> {
  const times = new Map(ids.map((id) => [id, 0]))
  for (const id of found) times.set(id, (times.get(id) ?? 0) + 1)
  const histogram = new Map<number, number>()
  for (const n of times.values()) histogram.set(n, (histogram.get(n) ?? 0) + 1)
  return histogram
}

function readProgress(file: string): { what: string; id: string; pid: number }[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      const [what = '', id = '', pid = ''] = line.split(' ')
      return { what, id, pid: Number(pid) }
    })
}

function doneIds(file: string): Set<string> {
  return new Set(readProgress(file).flatMap(({ what, id }) => (what === 'done' ? [id] : [])))
}

/** doneBy maps each message to the processes that finished handling it. */
function doneBy(file: string): Map<string, number[]> {
  const by = new Map<string, number[]>()
  for (const { what, id, pid } of readProgress(file)) if (what === 'done') by.set(id, [...(by.get(id) ?? []), pid])
  return by
}

/** inHand returns the messages pid started and has not finished. */
function inHand(file: string, pid: number): Set<string> {
  const held = new Set<string>()
  for (const entry of readProgress(file)) {
    if (entry.pid !== pid) continue
    if (entry.what === 'start') held.add(entry.id)
    else held.delete(entry.id)
  }
  return held
}

/**
 * assertEmpty asks the broker that queue and its dead-letter queue hold nothing: live, through a
 * passive declare, and through rabbitmqctl, whose statistics lag: read once they show no consumer.
 */
async function assertEmpty(broker: Broker, publisher: Publisher, queue: string): Promise<void> {
  for (const name of [queue, `${queue}.dlq`]) {
    assert.deepEqual(await publisher.count(name), { messages: 0, consumers: 0 }, name)
  }
  let stats: QueueStats[] = []
  await waitUntilAsync(async () => {
    stats = (await broker.queues()).filter((q) => q.name === queue || q.name === `${queue}.dlq`)
    return stats.length === 2 && stats.every((q) => q.consumers === 0)
  }, 'rabbitmqctl to show no consumer')
  assert.deepEqual(
    stats
      .map((q) => [q.name, q.messages, q.messages_unacknowledged])
      .sort((a, b) => String(a[0]).localeCompare(String(b[0]))),
    [
      [queue, 0, 0],
      [`${queue}.dlq`, 0, 0],
    ],
  )
}

function ms(since: number): string {
  return `${Math.round(performance.now() - since)} ms`
}

/** waitUntil polls check until it holds, and fails after 60 s naming what it waited for. */
function waitUntil(check: () => boolean, what: string): Promise<void> {
  return waitUntilAsync(async () => check(), what)
}

async function waitUntilAsync(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = performance.now() + 60_000
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}
