// stamp writes what the service reads at start-up into dist/: build-info.json (what /health
// reports) and openapi.yaml, the public spec with the add-ons' fragments (internal/*/openapi.yaml)
// merged in. `npm run build` runs it after tsc; `npm test` and `npm run dev` run it too, as the
// sources read the same files from dist/.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { isMap, parseDocument, type YAMLMap } from 'yaml'
import type { BuildInfo } from '../../internal/build-info.ts'

const root = new URL('../../', import.meta.url)
const dist = new URL('dist/', root)

/** Git is what `git` answered in the checkout, or null where git or .git is absent. */
interface Git {
  commit: string
  commitTime: string
  dirty: boolean
}

/**
 * newBuildInfo combines package.json, the build's environment and git: `VERSION`, `GIT_COMMIT`
 * and `GIT_COMMIT_TIME` win over git (a container build has no .git), and whatever neither knows
 * is null. It throws when `GIT_COMMIT_TIME` is not a date, so a bad build argument fails the build.
 */
function newBuildInfo(
  pkg: { name: string; version?: string },
  env: Readonly<Record<string, string | undefined>>,
  git: Git | null,
): BuildInfo {
  const commitTime = env.GIT_COMMIT_TIME || git?.commitTime || null
  if (commitTime !== null && Number.isNaN(Date.parse(commitTime))) {
    throw new Error(`GIT_COMMIT_TIME must be a date like 2024-11-05T09:30:00Z, got ${commitTime}`)
  }
  return {
    service: pkg.name,
    version: env.VERSION || pkg.version || null,
    commit: env.GIT_COMMIT || git?.commit || null,
    commitTime: commitTime === null ? null : new Date(commitTime).toISOString(),
    dirty: env.GIT_COMMIT ? null : (git?.dirty ?? null),
  }
}

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

/**
 * mergeSpec returns openapi.yaml with the paths, components and tags of every fragment added; a
 * fragment's references to the public document become local ones. Without fragments it returns
 * the file's bytes unchanged. It throws when a fragment adds a path or component that exists.
 */
function mergeSpec(): string | Buffer {
  const file = new URL('openapi.yaml', root)
  const fragments = readdirSync(new URL('internal/', root), { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && existsSync(new URL(`internal/${entry.name}/openapi.yaml`, root)))
    .map((entry) => `internal/${entry.name}/openapi.yaml`)
  if (fragments.length === 0) return readFileSync(file)
  const spec = parseDocument(readFileSync(file, 'utf8'))
  for (const name of fragments) {
    const text = readFileSync(new URL(name, root), 'utf8').replaceAll("'../../openapi.yaml#", "'#")
    const fragment = parseDocument(text)
    for (const key of ['paths', 'components']) {
      for (const path of key === 'paths' ? [[key]] : sectionsOf(fragment.getIn([key]))) {
        const added = fragment.getIn(path) as YAMLMap | undefined
        for (const pair of added?.items ?? []) {
          const at = [...path, String(pair.key)]
          if (spec.hasIn(at)) throw new Error(`${name}: ${at.join('.')} is in openapi.yaml already`)
          spec.setIn(at, pair.value)
        }
      }
    }
    for (const tag of (fragment.get('tags') as YAMLMap | undefined)?.items ?? []) spec.addIn(['tags'], tag)
  }
  return spec.toString({ lineWidth: 0 })
}

function sectionsOf(components: unknown): string[][] {
  return isMap(components) ? components.items.map((pair) => ['components', String(pair.key)]) : []
}

/** write replaces file through a temporary one, so a reader never sees half a file. */
function write(name: string, data: string | Buffer) {
  const partial = new URL(`${name}.${process.pid}.partial`, dist)
  writeFileSync(partial, data)
  renameSync(partial, new URL(name, dist))
}

const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as { name: string; version?: string }
mkdirSync(dist, { recursive: true })
write('build-info.json', `${JSON.stringify(newBuildInfo(pkg, process.env, readGit()), null, 2)}\n`)
write('openapi.yaml', mergeSpec())
