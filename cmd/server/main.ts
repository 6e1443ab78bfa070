// The service's entry point: it hands the process's environment, stdout and events to run() and
// exits with its code. All logic lives in internal/.
import { run } from '../../internal/run.ts'

const code = await run({ env: process.env, stdout: process.stdout, events: process })
// run() has drained the server and written every log line. Exit now rather than wait for the event
// loop: after a forced stop a hung request or hook may still hold it open.
process.exit(code)
