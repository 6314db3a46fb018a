/** The Range header (RFC 9110 §14): parse, then resolve against a size. One range only. */

export type RangeSpec = { readonly first: number; readonly last: number | undefined } | { readonly suffix: number }

/**
 * The single byte range asked for, or undefined when the header is absent, malformed, not in bytes,
 * or asks for several ranges: all of those are answered with the whole file (200), which RFC 9110
 * allows. unnar does not send multipart/byteranges (no browser or download tool needs it).
 */
export function parseRange(header: string | undefined): RangeSpec | undefined {
  if (header === undefined) return undefined
  const match = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header)
  if (match === null) return undefined
  const [, first, last] = match as unknown as [string, string, string]
  if (first === '' && last === '') return undefined
  if (first === '') return { suffix: Number(last) }
  const spec = { first: Number(first), last: last === '' ? undefined : Number(last) }
  if (spec.last !== undefined && spec.last < spec.first) return undefined
  return spec
}

/** Inclusive `start`/`end`, or 'unsatisfiable' (→ 416). */
export function resolveRange(spec: RangeSpec, size: number): { start: number; end: number } | 'unsatisfiable' {
  if ('suffix' in spec) {
    if (spec.suffix === 0 || size === 0) return 'unsatisfiable'
    return { start: Math.max(0, size - spec.suffix), end: size - 1 }
  }
  if (spec.first >= size) return 'unsatisfiable'
  return { start: spec.first, end: Math.min(spec.last ?? size - 1, size - 1) }
}
