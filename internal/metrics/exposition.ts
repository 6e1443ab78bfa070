// The Prometheus text exposition format 0.0.4, which every Prometheus since 2.0 and every agent that
// scrapes it reads: https://prometheus.io/docs/instrumenting/exposition_formats/

/** contentType is the text format's media type, as Prometheus' own client libraries send it. */
export const contentType = 'text/plain; version=0.0.4; charset=utf-8'

/** Labels are a series' label names and values, written in this order; an undefined value leaves its label out. */
export type Labels = Readonly<Record<string, string | number | undefined>>

/**
 * Series is one series of a counter or a histogram: its labels, formatted; its value (a
 * histogram's sum); a histogram's bounds and the count of each bucket, not cumulative, the last
 * counting what is above every bound.
 */
export interface Series {
  readonly labels: string
  value: number
  readonly bounds: readonly number[]
  readonly buckets: Float64Array | undefined
}

/** Family holds the series of a counter or a histogram, each made the first time its labels occur. */
export interface Family {
  /** series returns the series with labels, made on first use: keep it to record without allocating. */
  series: (labels: Labels) => Series
  /** add records value in the series with labels: a counter adds it, a histogram observes it. */
  add: (labels: Labels, value: number) => void
  /** all lists the series, oldest first. */
  all: () => Iterable<Series>
}

/** newFamily returns an empty counter, or a histogram with bounds. */
export function newFamily(bounds?: readonly number[]): Family {
  const all = new Map<string, Series>()
  function series(labels: Labels): Series {
    const key = formatLabels(labels)
    let found = all.get(key)
    if (found === undefined) {
      const buckets = bounds && new Float64Array(bounds.length + 1)
      all.set(key, (found = { labels: key, value: 0, bounds: bounds ?? [], buckets }))
    }
    return found
  }
  return { series, add: (labels, value) => observe(series(labels), value), all: () => all.values() }
}

/** observe adds value to series; in a histogram, it also counts it in the first bucket whose bound is at or above it. */
export function observe(series: Series, value: number): void {
  series.value += value
  if (series.buckets === undefined) return
  // A linear scan from the bottom: most observations land in the first buckets, where it stops.
  let i = 0
  for (const bound of series.bounds) {
    if (value <= bound) break
    i++
  }
  series.buckets[i] = (series.buckets[i] ?? 0) + 1
}

/**
 * Source is where a family's samples come from: a Family recorded as things happen, or values
 * read at the scrape, one unlabelled (undefined: unknown, no sample) or one per labels.
 */
export type Source = Family | number | undefined | readonly (readonly [Labels, number])[]

/** formatFamily returns the family called name, HELP and TYPE first, or '' while it has no sample. */
export function formatFamily(name: string, type: 'counter' | 'gauge' | 'histogram', help: string, source: Source) {
  if (source === undefined) return ''
  if (typeof source === 'number') source = [[{}, source]]
  let text = ''
  if ('all' in source) for (const series of source.all()) text += formatSeries(name, series)
  else for (const [labels, value] of source) text += formatSample(name, formatLabels(labels), value)
  // help is ours: no backslash or line feed to escape
  return text === '' ? '' : `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${text}`
}

/** formatSeries returns a counter's sample, or a histogram's cumulative buckets, `+Inf` last, then its sum and count. */
function formatSeries(name: string, { labels, value, bounds, buckets }: Series): string {
  if (buckets === undefined) return formatSample(name, labels, value)
  const prefix = labels === '' ? `${name}_bucket{le="` : `${name}_bucket{${labels},le="`
  let text = ''
  let count = 0
  for (const [i, n] of buckets.entries()) text += `${prefix}${bounds[i] ?? '+Inf'}"} ${(count += n)}\n`
  return text + formatSample(`${name}_sum`, labels, value) + formatSample(`${name}_count`, labels, count)
}

/** formatLabels returns `a="x",b="y"`, escaping backslash, double quote and line feed in the values. */
export function formatLabels(labels: Labels): string {
  let text = ''
  for (const [name, value] of Object.entries(labels)) {
    if (value === undefined) continue
    const escaped = String(value).replaceAll('\\', '\\\\').replaceAll('"', '\\"').replaceAll('\n', '\\n')
    text += `${text === '' ? '' : ','}${name}="${escaped}"`
  }
  return text
}

// String() writes NaN, integers and the shortest round-trip decimal as Go's ParseFloat reads them;
// only the infinities are spelled differently.
function formatSample(name: string, labels: string, value: number): string {
  const text = value === Infinity ? '+Inf' : value === -Infinity ? '-Inf' : String(value)
  return labels === '' ? `${name} ${text}\n` : `${name}{${labels}} ${text}\n`
}
