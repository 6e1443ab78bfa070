import type { Logger } from 'pino'
import { getHeapStatistics } from 'node:v8'

/** HeapFigures are the two figures of v8.getHeapStatistics() the watch compares. */
export type HeapFigures = Pick<ReturnType<typeof getHeapStatistics>, 'used_heap_size' | 'heap_size_limit'>

/**
 * newHeapWatch returns the example job: it warns `heap near its limit` when the V8 heap in use is
 * above ratio of its limit. A leak ends in V8's out-of-memory exit (README.md, Container); this
 * line says so minutes before, in the logs, where no metrics are scraped. readHeap is for tests.
 */
export function newHeapWatch(ratio: number, readHeap: () => HeapFigures = getHeapStatistics) {
  return (_signal: AbortSignal, log: Logger) => {
    const { used_heap_size: usedBytes, heap_size_limit: limitBytes } = readHeap()
    if (usedBytes > ratio * limitBytes) log.warn({ usedBytes, limitBytes, ratio }, 'heap near its limit')
  }
}
