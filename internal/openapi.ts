import { readFileSync } from 'node:fs'
import type { Handler } from './routes.ts'

// What the build writes (npm run build: tsc, then cmd/stamp) sits in dist/, beside the compiled code;
// the sources, run directly (npm run dev, npm test), read the same files there.
const buildDir = new URL(import.meta.url.endsWith('.ts') ? '../dist/' : '../', import.meta.url)

/**
 * readSpec reads openapi.yaml, which the build copies next to the compiled code (and which sits at
 * the repository root when the sources run directly), so the service finds it from any working
 * directory. It throws when the file is missing: a service must not run without its contract.
 */
export function readSpec(file = new URL('openapi.yaml', buildDir)): Buffer {
  return readFileSync(file)
}

/** handleOpenAPI serves spec, the bytes of openapi.yaml, unchanged. */
export function handleOpenAPI(spec: Buffer): Handler {
  const headers = { 'content-type': 'application/yaml', 'content-length': spec.byteLength }
  return (_req, res) => {
    res.writeHead(200, headers).end(spec)
  }
}
