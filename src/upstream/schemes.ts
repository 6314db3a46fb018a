/** The URL schemes an upstream may have: a leaf, so config.ts can check URLs without importing the upstreams. */
export const SUPPORTED_SCHEMES = ['http:', 'https:', 'file:', 's3:'] as const
