import { monitorEventLoopDelay } from 'node:perf_hooks'

/** EventLoopWatch is the event-loop delay of the latest window, refreshed by a timer. */
export interface EventLoopWatch {
  /** delayMs is the latest window's mean delay in milliseconds; 0 before the first window ends. */
  readonly delayMs: number
  /** stop ends the sampling and the timer. */
  stop(): void
}

// monitorEventLoopDelay's default: a sample every 10 ms costs a timer callback in C++, nothing in JS.
const resolutionMs = 10

/**
 * watchEventLoop samples how late the event loop runs a timer due every 10 ms, and every windowMs
 * stores the mean delay of the window just ended. The mean comes from the window's length and its
 * count of samples, as Node records the whole interval between two runs of its timer: no bucket of
 * the histogram is read or cleared, which costs 100 µs a window (shedding's README). A window
 * without a single sample means the loop was blocked all along: its delay is then the window's
 * length. windowMs must be at least twice the resolution, or quiet windows would look blocked.
 */
export function watchEventLoop(windowMs: number): EventLoopWatch {
  const histogram = monitorEventLoopDelay({ resolution: resolutionMs })
  histogram.enable()
  let delayMs = 0
  let windowStart = performance.now()
  let counted = 0 // the samples before this window
  const timer = setInterval(() => {
    const now = performance.now()
    const samples = histogram.count - counted
    // Take the resolution off the mean interval to leave the delay, as @fastify/under-pressure does.
    delayMs =
      samples === 0 ? now - windowStart - resolutionMs : Math.max(0, (now - windowStart) / samples - resolutionMs)
    windowStart = now
    counted += samples
  }, windowMs)
  timer.unref() // the watch never keeps a process alive on its own
  return {
    get delayMs() {
      return delayMs
    },
    stop() {
      clearInterval(timer)
      histogram.disable()
    },
  }
}
