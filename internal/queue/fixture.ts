// The service as a process for rolling.test.ts: cmd/server/main.ts with the queue add-on alone,
// whose one queue's handler is a stand-in that takes a little time and records, in a file written
// at once, each message it starts and finishes, before the message is acked: what a SIGKILL cuts
// short shows as started and never finished there. Test code: it reads process.env as main does.
import { appendFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { newStdoutOutput } from '../log.ts'
import { run } from '../run.ts'
import { newQueueAddOn } from './queue.ts'

const { FIXTURE_QUEUE = 'work', FIXTURE_HANDLE_MS = '10', FIXTURE_PROGRESS = '/dev/null' } = process.env
const record = (what: string, id: unknown) => appendFileSync(FIXTURE_PROGRESS, `${what} ${String(id)} ${process.pid}\n`)
const addOn = newQueueAddOn({
  [FIXTURE_QUEUE]: () => async (message, signal) => {
    record('start', message.properties.messageId)
    await sleep(Number(FIXTURE_HANDLE_MS), undefined, { signal })
    record('done', message.properties.messageId)
  },
})
const stdout = newStdoutOutput(1)
const code = await run({ env: process.env, stdout, events: process, addOns: [addOn] })
await stdout.flush(2000)
process.exit(code)
