import { randomFillSync } from 'node:crypto'

/** TraceContext is the W3C trace context of one request, as this service continues it. */
export interface TraceContext {
  traceId: string // 32 hex digits: the caller's, or new
  spanId: string // 16 hex digits: this request's own span
  flags: string // the caller's trace-flags, or '00' for a new trace
}

// version "-" trace-id "-" parent-id "-" trace-flags, lowercase hex; version ff and all-zero ids
// are invalid (https://www.w3.org/TR/trace-context/#traceparent-header-field-values).
const traceparentPattern = /^(?!ff)([0-9a-f]{2})-(?!0{32})([0-9a-f]{32})-(?!0{16})([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/

const zeros = '0'.repeat(32)

/**
 * parseTraceparent validates a `traceparent` header, or returns undefined for a new trace. Version 00
 * ends at the flags; later ones may add fields. Two headers, joined by Node with ', ', are invalid.
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
 * newIdSource returns generators of random trace and span ids, cut from a hex string made of 4 KiB
 * of random bytes at a time: an id costs a slice, not a call into C++.
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
    // All-zero ids are invalid: unlikely (2^-64), but forbidden.
    return zeros.startsWith(id) ? next(chars) : id
  }
  return { traceId: () => next(32), spanId: () => next(16) }
}
