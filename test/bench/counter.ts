// counter is preloaded (`node --import`) into the servers the benchmark loads. It counts the
// requests node:http received, through diagnostics_channel so the measured code stays untouched,
// and writes the count to the file named by BENCH_COUNT_FILE when the process exits. The bench
// checks that the service wrote exactly one access-log line per request counted here: wrk's own
// count cannot serve, since it leaves up to one request per connection unanswered when its time
// is up, which the server still receives, answers and logs.
import { subscribe } from 'node:diagnostics_channel'
import { writeFileSync } from 'node:fs'

const file = process.env.BENCH_COUNT_FILE
let received = 0

subscribe('http.server.request.start', () => {
  received++
})

// 'exit' also fires after process.exit(), which cmd/server/main.ts calls; only sync I/O works here.
process.on('exit', () => {
  if (file !== undefined) writeFileSync(file, `${received}\n`)
})
