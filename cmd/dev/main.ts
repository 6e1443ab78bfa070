// npm run dev: the service from the TypeScript sources, which Node runs directly (type stripping),
// restarted by `node --watch-path` within a second of a saved change to cmd/, internal/ or
// openapi.yaml. Each start first writes dist/build-info.json and dist/openapi.yaml as the build
// does, so the service reports the same facts and serves the same spec as from dist/; the log lines
// are made readable by pino-pretty. Ctrl-C stops it like SIGINT stops the service.
import { prettyFactory } from 'pino-pretty'
import { loadAddOns } from '../../internal/addon.ts'
import { addOns } from '../server/main.ts'
import { run } from '../../internal/run.ts'
import '../stamp/main.ts'

const pretty = prettyFactory({ colorize: process.stdout.isTTY, translateTime: 'SYS:HH:MM:ss.l' })
const stdout = { write: (line: string) => void process.stdout.write(pretty(line)) }
const loaded = await loadAddOns(addOns, process.env)
process.exit(await run({ env: process.env, stdout, events: process, addOns: loaded }))
