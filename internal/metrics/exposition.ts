// The Prometheus text exposition format, version 0.0.4, which every Prometheus since 2.0 and every
// agent that scrapes it reads: https://prometheus.io/docs/instrumenting/exposition_formats/

/** contentType is the text format's media type, as Prometheus' own client libraries send it. */
export const contentType = 'text/plain; version=0.0.4; charset=utf-8'

/** Labels are a sample's label names and values; an undefined value leaves its label out. */
export type Labels = Readonly<Record<string, string | number | undefined>>

/**
 * formatLabels returns labels as the text format writes them, `a="x",b="y"`, in the order given,
 * without braces so that more can be appended (`le`); '' when there are none.
 */
export function formatLabels(labels: Labels): string {
  return Object.entries(labels)
    .flatMap(([name, value]) => (value === undefined ? [] : [`${name}="${escapeLabel(String(value))}"`]))
    .join(',')
}

/** escapeLabel escapes a label value: backslash, double quote and line feed. */
export function escapeLabel(value: string): string {
  return value.replaceAll('\\', '\\\\').replaceAll('"', '\\"').replaceAll('\n', '\\n')
}

/** formatHeader returns the HELP and TYPE lines that open the family called name. */
export function formatHeader(name: string, type: 'counter' | 'gauge' | 'histogram', help: string): string {
  return `# HELP ${name} ${help.replaceAll('\\', '\\\\').replaceAll('\n', '\\n')}\n# TYPE ${name} ${type}\n`
}

/** formatValue writes a sample value as Go's ParseFloat reads it: +Inf, -Inf and NaN spelled its way. */
export function formatValue(value: number): string {
  if (value === Infinity) return '+Inf'
  if (value === -Infinity) return '-Inf'
  return String(value) // NaN, integers and JavaScript's shortest round-trip decimal, 1e-7 included
}

/** formatSample returns one sample line: name, labels (already formatted) if any, value. */
export function formatSample(name: string, labels: string, value: number): string {
  return labels === '' ? `${name} ${formatValue(value)}\n` : `${name}{${labels}} ${formatValue(value)}\n`
}

/** formatFamily returns a whole family of one sample per entry, or '' when entries is empty. */
export function formatFamily(
  name: string,
  type: 'counter' | 'gauge',
  help: string,
  entries: readonly (readonly [labels: Labels, value: number])[],
): string {
  if (entries.length === 0) return ''
  let text = formatHeader(name, type, help)
  for (const [labels, value] of entries) text += formatSample(name, formatLabels(labels), value)
  return text
}

/**
 * HistogramSeries holds one series of a histogram: its labels, formatted, the count of each bucket
 * (not cumulative; the last counts what is above every boundary) and the sum of what it counted.
 */
export interface HistogramSeries {
  readonly labels: string
  readonly counts: Float64Array
  sum: number
}

/** newHistogramSeries returns an empty series with one count per boundary plus one above them. */
export function newHistogramSeries(labels: Labels, boundaries: readonly number[]): HistogramSeries {
  return { labels: formatLabels(labels), counts: new Float64Array(boundaries.length + 1), sum: 0 }
}

/** bucketOf returns the index of the first boundary value is at or below: the bucket it counts in. */
export function bucketOf(boundaries: readonly number[], value: number): number {
  // A linear scan from the bottom: most observations land in the first buckets, where it stops.
  let i = 0
  for (const boundary of boundaries) {
    if (value <= boundary) return i
    i++
  }
  return i
}

/**
 * formatHistogram returns the samples of every series: the cumulative `_bucket`s, each with its
 * `le` (the boundaries, formatted), `+Inf` last, then `_sum` and `_count`. The HELP and TYPE lines
 * are the caller's.
 */
export function formatHistogram(name: string, le: readonly string[], series: Iterable<HistogramSeries>): string {
  let text = ''
  for (const { labels, counts, sum } of series) {
    const prefix = labels === '' ? `${name}_bucket{le="` : `${name}_bucket{${labels},le="`
    let cumulative = 0
    for (const [i, count] of counts.entries()) {
      cumulative += count
      text += `${prefix}${le[i] ?? '+Inf'}"} ${cumulative}\n`
    }
    text += formatSample(`${name}_sum`, labels, sum) + formatSample(`${name}_count`, labels, cumulative)
  }
  return text
}
