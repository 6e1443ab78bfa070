import { randomFillSync } from 'node:crypto'

/** TraceContext is the W3C trace context of one request, as this service continues it. */
export interface TraceContext {
  /** traceId is 32 lowercase hex digits: the caller's, or new when the caller sent none. */
  traceId: string
  /** spanId is 16 lowercase hex digits: new for every request, this service's span. */
  spanId: string
  /** flags is the caller's trace-flags (2 hex digits), or '00' for a new trace. */
  flags: string
}

// version "-" trace-id "-" parent-id "-" trace-flags, lowercase hex only
// (https://www.w3.org/TR/trace-context/#traceparent-header-field-values).
const traceparentPattern = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/
const zeroTraceId = '0'.repeat(32)
const zeroSpanId = '0'.repeat(16)

/**
 * parseTraceparent validates a `traceparent` header strictly: two lowercase hex digits of version
 * (not ff), a non-zero 32-digit trace id, a non-zero 16-digit parent id, two digits of flags. A
 * version-00 header has nothing after the flags; a later version may add fields after a dash.
 * It returns undefined for anything else, so the caller starts a new trace.
 */
export function parseTraceparent(
  header: string | string[] | undefined,
): { traceId: string; parentId: string; flags: string } | undefined {
  // Node joins repeated headers with ', ', which fails the pattern: two traceparents are invalid.
  if (typeof header !== 'string' || header.length < 55) return undefined
  const match = traceparentPattern.exec(header)
  if (match === null) return undefined
  const [, version, traceId = '', parentId = '', flags = '', rest] = match
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined
  if (traceId === zeroTraceId || parentId === zeroSpanId) return undefined
  return { traceId, parentId, flags }
}

/** formatTraceparent writes the `traceparent` a handler sends with its calls, continuing this request's trace. */
export function formatTraceparent(trace: TraceContext): string {
  return `00-${trace.traceId}-${trace.spanId}-${trace.flags}`
}

/**
 * newIdSource returns generators of random trace ids (16 bytes) and span ids (8 bytes) as hex.
 * They are cut from a hex string made 4 KiB of random bytes at a time, so an id costs a slice, not
 * a system call or a call into C++.
 */
export function newIdSource(): { traceId: () => string; spanId: () => string } {
  const pool = Buffer.alloc(4096)
  let hex = ''
  let offset = 0
  function next(chars: number): string {
    if (offset + chars > hex.length) {
      hex = randomFillSync(pool).toString('hex')
      offset = 0
    }
    const id = hex.slice(offset, (offset += chars))
    // All-zero ids are invalid; the chance is 2^-64 or less, but the spec forbids them outright.
    return id === zeroTraceId || id === zeroSpanId ? next(chars) : id
  }
  return { traceId: () => next(32), spanId: () => next(16) }
}
