// The knock-outs of `npm run bench:instr -- --ablation`: each turns one feature of the service off
// by a textual patch to the compiled JavaScript in a copy of dist/, so the instruction count can
// say what that feature costs per request. They are written against the compiled code of commit
// 232ceb4. When the core changes shape, a patch whose `find` text is gone fails loudly, naming
// itself: update its find and replace (read the new dist/internal/*.js after `npm run build`),
// or delete the knock-out when the feature no longer exists.
import { cpSync, existsSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** Patch replaces the text find, which must occur exactly once, by replace in file (relative to dist/). */
export interface Patch {
  file: string
  find: string
  replace: string
}

/** Knockout is one feature turned off: its name, what it removes, and the patches that do it. */
export interface Knockout {
  name: string
  removes: string
  patches: Patch[]
  /** accessLog is false when the knock-out stops the access-log lines, which the bench then expects none of. */
  accessLog: boolean
}

const server = 'internal/server.js'
const response = 'internal/response.js'
const connections = 'internal/connections.js'

/** knockouts is the table, one entry per feature, cheapest patch that removes just that feature. */
export const knockouts: readonly Knockout[] = [
  {
    name: 'access-log-write',
    removes: 'the access line is built but not written to stdout',
    patches: [{ file: 'internal/access-log.js', find: 'output.write(`{"level"', replace: 'void (`{"level"' }],
    accessLog: false,
  },
  {
    name: 'access-log',
    removes: 'no access line: neither built nor written',
    patches: [{ file: server, find: 'logAccess(res);', replace: ';' }],
    accessLog: false,
  },
  {
    name: 'request-id-header',
    removes: 'the X-Request-Id response header',
    patches: [{ file: response, find: "'x-request-id': this.requestId, 'x-content", replace: "'x-content" }],
    accessLog: true,
  },
  {
    name: 'nosniff-header',
    removes: 'the X-Content-Type-Options: nosniff response header',
    patches: [{ file: response, find: ", 'x-content-type-options': 'nosniff' };", replace: ' };' }],
    accessLog: true,
  },
  {
    name: 'writehead-override',
    removes: "the decorator's writeHead (no header added, no copy of the handler's headers)",
    // Renamed, the method no longer overrides ServerResponse's.
    patches: [
      {
        file: response,
        find: 'writeHead(statusCode, reasonOrHeaders, maybeHeaders) {',
        replace: 'unusedWriteHead(statusCode, reasonOrHeaders, maybeHeaders) {',
      },
    ],
    accessLog: true,
  },
  {
    name: 'byte-counting',
    removes: "the decorator's end(), which counts the body bytes (the access line then says 0)",
    patches: [
      {
        file: response,
        find: '    end(chunk, encoding, callback) {',
        replace: '    unusedEnd(chunk, encoding, callback) {',
      },
    ],
    accessLog: true,
  },
  {
    name: 'traceparent-parse',
    removes: "reading and checking the caller's traceparent header",
    patches: [
      {
        file: server,
        find: 'const parent = parseTraceparent(req.headers.traceparent);',
        replace: 'const parent = undefined;',
      },
    ],
    accessLog: true,
  },
  {
    name: 'trace-ids',
    removes: 'generating the trace and span ids (every request gets the same constant ids)',
    patches: [
      {
        file: server,
        find: "res.trace = { traceId: parent?.traceId ?? ids.traceId(), spanId: ids.spanId(), flags: parent?.flags ?? '00' };",
        replace:
          "res.trace = { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', flags: '00' };",
      },
    ],
    accessLog: true,
  },
  {
    name: 'request-context',
    removes: 'entering the AsyncLocalStorage request context (the handler is called directly)',
    // The draining branch's call ends in '));' and so does not match.
    patches: [
      {
        file: server,
        find: '    else\n            context.run(res, dispatch, req, res);',
        replace: '    else\n            dispatch(req, res);',
      },
    ],
    accessLog: true,
  },
  {
    name: 'connection-tracking',
    removes: 'the per-connection queue of responses, the pipelining bound and the count in flight',
    patches: [
      // What stays is one 'close' listener that times the response and writes its access line.
      {
        file: server,
        find: 'if (!connections.track(res))\n            return;',
        replace: "res.on('close', untracked);",
      },
      {
        file: server,
        find: 'const done = hooks.flatMap((hook) => hook.done ?? []);',
        replace:
          'const done = hooks.flatMap((hook) => hook.done ?? []);\n    function untracked() { this.closedAt = performance.now(); logAccess(this); for (const hook of done) hook(this); }',
      },
    ],
    accessLog: true,
  },
  {
    name: 'route-lookup',
    removes: 'the router: the first match found is reused for every request (a direct lookup)',
    patches: [
      {
        file: server,
        find: 'const match = route(res.path);',
        replace: 'const match = (dispatch.match ??= route(res.path));',
      },
    ],
    accessLog: true,
  },
  {
    name: 'host-check',
    removes: 'counting the Host headers in the raw header list',
    patches: [{ file: server, find: ': checkHost(req);', replace: ': undefined;' }],
    accessLog: true,
  },
  {
    name: 'timing',
    removes: 'the two performance.now() calls that time a request (the access line then says a duration of 0)',
    patches: [
      { file: response, find: 'startedAt = performance.now();', replace: 'startedAt = 0;' },
      { file: connections, find: 'this.closedAt = performance.now();', replace: 'this.closedAt = 0;' },
    ],
    accessLog: true,
  },
  {
    name: 'health-clock',
    removes: "/health's clock read (the uptime stays that of the first request)",
    patches: [
      {
        file: 'internal/health.js',
        find: 'const seconds = Math.floor((Date.now() - startedAt.getTime()) / 1000);',
        replace: 'const seconds = last === -1 ? 0 : last;',
      },
    ],
    accessLog: true,
  },
]

/**
 * applyPatch returns source with patch applied, or throws naming the knock-out when its find text
 * occurs anywhere but exactly once: the compiled code changed and the table needs updating.
 */
export function applyPatch(knockout: string, source: string, patch: Patch): string {
  const first = source.indexOf(patch.find)
  const again = first === -1 ? -1 : source.indexOf(patch.find, first + 1)
  if (first === -1 || again !== -1) {
    throw new Error(
      `patch ${knockout} no longer applies: ${JSON.stringify(patch.find)} occurs ${first === -1 ? 'nowhere' : 'more than once'} in dist/${patch.file}: update test/bench/knockouts.ts`,
    )
  }
  return source.slice(0, first) + patch.replace + source.slice(first + patch.find.length)
}

/**
 * copyBuild copies the built tree (dist/) into dir/dist and makes it runnable there: the project's
 * package.json beside it ("type": "module") and a link to its node_modules (pino). It returns the
 * copy's dist directory.
 */
export function copyBuild(root: string, dir: string): string {
  const dist = join(dir, 'dist')
  cpSync(join(root, 'dist'), dist, { recursive: true })
  writeFileSync(join(dir, 'package.json'), readFileSync(join(root, 'package.json')))
  if (!existsSync(join(dir, 'node_modules'))) symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'))
  return dist
}

/** applyKnockout patches the copy of the build in dist; it throws, naming the knock-out, when a patch fails. */
export function applyKnockout(dist: string, knockout: Knockout): void {
  for (const patch of knockout.patches) {
    const file = join(dist, patch.file)
    if (!existsSync(file)) {
      throw new Error(
        `patch ${knockout.name} no longer applies: dist/${patch.file} is gone: update test/bench/knockouts.ts`,
      )
    }
    writeFileSync(file, applyPatch(knockout.name, readFileSync(file, 'utf8'), patch))
  }
}
