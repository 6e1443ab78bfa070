// The service's entry point: it hands the process's environment, stdout and events to run() and
// exits with its code. All logic lives in internal/.
import { newLogOutput } from '../../internal/log.ts'
import { run } from '../../internal/run.ts'

const stdout = newLogOutput(1)
const code = await run({ env: process.env, stdout, events: process })
stdout.flushSync()
// run() has drained the server and every log line is written. Exit now rather than wait for the
// event loop: after a forced stop a hung request or hook may still hold it open.
process.exit(code)
