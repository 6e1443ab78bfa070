import type { TrackedResponse } from './response.ts'

/** Inflight is the set of responses not yet finished or aborted, in order of arrival, newest first. */
export interface Inflight extends Iterable<TrackedResponse> {
  readonly size: number
  add(res: TrackedResponse): void
  delete(res: TrackedResponse): void
}

/**
 * newInflight returns an empty Inflight: a doubly linked list threaded through the responses
 * themselves, so adding and removing allocate nothing. A Set here reallocated its table every few
 * dozen requests; the tables that survived a scavenge filled the old generation and tripled the
 * mark-compact pauses, which set the p99 latency (BENCHMARKS.md).
 */
export function newInflight(): Inflight {
  let head: TrackedResponse | undefined
  let size = 0
  return {
    get size() {
      return size
    },
    add(res) {
      res.nextInflight = head
      res.prevInflight = undefined
      if (head !== undefined) head.prevInflight = res
      head = res
      size++
    },
    delete(res) {
      if (res.prevInflight !== undefined) res.prevInflight.nextInflight = res.nextInflight
      else if (head === res) head = res.nextInflight
      else return // not in the list
      if (res.nextInflight !== undefined) res.nextInflight.prevInflight = res.prevInflight
      res.prevInflight = undefined
      res.nextInflight = undefined
      size--
    },
    *[Symbol.iterator]() {
      for (let res = head; res !== undefined; res = res.nextInflight) yield res
    },
  }
}
