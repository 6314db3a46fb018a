/** `nix-cache-info`: `Key: value` lines (StoreDir, WantMassQuery, Priority); Nix trims values and ignores the rest. */
export interface CacheInfo {
  readonly storeDir?: string
  readonly wantMassQuery?: boolean
  readonly priority?: number
}

export function parseCacheInfo(text: string): CacheInfo {
  const info: { storeDir?: string; wantMassQuery?: boolean; priority?: number } = {}
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':')
    if (colon < 0) continue
    const key = line.slice(0, colon)
    const value = line.slice(colon + 1).trim()
    if (key === 'StoreDir') info.storeDir = value
    else if (key === 'WantMassQuery') info.wantMassQuery = value === '1'
    else if (key === 'Priority' && /^-?\d+$/.test(value)) info.priority = Number(value)
  }
  return info
}
