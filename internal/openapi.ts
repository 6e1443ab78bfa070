import type { Handler } from './router.ts'

/** handleOpenAPI serves spec, the bytes of the openapi.yaml the build wrote, unchanged. */
export function handleOpenAPI(spec: Buffer): Handler {
  const headers = { 'content-type': 'application/yaml', 'content-length': spec.byteLength }
  return (_req, res) => {
    res.writeHead(200, headers).end(spec)
  }
}
