// stamp runs after tsc in `npm run build`: it writes dist/build-info.json (what /health reports)
// and copies openapi.yaml into dist/, so dist/ holds everything the service reads at start-up.
import { execFileSync } from 'node:child_process'
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs'
import { type Git, newBuildInfo } from '../../internal/build-info.ts'

const root = new URL('../../../', import.meta.url)
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

const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as { name: string; version?: string }
const info = newBuildInfo(pkg, process.env, readGit())
writeFileSync(new URL('build-info.json', dist), `${JSON.stringify(info, null, 2)}\n`)
copyFileSync(new URL('openapi.yaml', root), new URL('openapi.yaml', dist))
