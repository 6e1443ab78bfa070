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

// version "-" trace-id "-" parent-id "-" trace-flags, lowercase hex; version ff and all-zero ids
// are invalid (https://www.w3.org/TR/trace-context/#traceparent-header-field-values).
const traceparentPattern = /^(?!ff)([0-9a-f]{2})-(?!0{32})([0-9a-f]{32})-(?!0{16})([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/

const zeros = '0'.repeat(32)

/**
 * parseTraceparent validates a `traceparent` header strictly, or returns undefined, so the caller
 * starts a new trace. A version-00 header ends at the flags; a later version may add fields after
 * a dash. Node joins repeated headers with ', ', which fails the pattern: two are invalid.
 */
export function parseTraceparent(header: string | string[] | undefined) {
  const match = typeof header === 'string' ? traceparentPattern.exec(header) : null
  if (match === null || (match[1] === '00' && match[5] !== undefined)) return undefined
  return { traceId: match[2]!, parentId: match[3]!, flags: match[4]! }
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
    return zeros.startsWith(id) ? next(chars) : id
  }
  return { traceId: () => next(32), spanId: () => next(16) }
}
