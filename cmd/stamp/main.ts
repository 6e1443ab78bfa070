// stamp writes what the service reads at start-up into dist/: build-info.json (what /health reports)
// and openapi.yaml. `npm run build` runs it after tsc; `npm test` and `npm run dev` run it too, as
// the sources then read the same files from dist/.
import { execFileSync } from 'node:child_process'
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { type Git, newBuildInfo } from '../../internal/build-info.ts'

const root = new URL('../../', import.meta.url)
const dist = new URL('dist/', root)

function git(...args: string[]): string {
  return execFileSync('git', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
}

function readGit(): Git | null {
  try {
    return {
      commit: git('rev-parse', 'HEAD'),
      commitTime: git('log', '-1', '--format=%cI'),
      dirty: git('status', '--porcelain') !== '',
    }
  } catch {
    return null // no git, no .git (a container build) or no commit yet: the facts stay unknown
  }
}

/** write replaces file through a temporary one, so a reader never sees half a file. */
function write(name: string, data: string | Buffer) {
  const file = new URL(name, dist)
  const partial = new URL(`${name}.${process.pid}.partial`, dist)
  writeFileSync(partial, data)
  renameSync(partial, file)
}

const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as { name: string; version?: string }
mkdirSync(dist, { recursive: true })
write('build-info.json', `${JSON.stringify(newBuildInfo(pkg, process.env, readGit()), null, 2)}\n`)
write('openapi.yaml', readFileSync(new URL('openapi.yaml', root)))
