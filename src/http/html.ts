/** HTML escaping and URL encoding for pages built from untrusted store names. */
const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => HTML_ESCAPES[ch]!)
}

/**
 * A path segment percent-encoded, `'` included: some readers of listings take an href's text as it
 * is (lftp decodes `&amp;`, `&lt;`, `&gt;` and `&quot;` only, so `&#39;` ended its link).
 */
export function encodeSegment(segment: string): string {
  return encodeURIComponent(segment).replaceAll("'", '%27')
}

/** Percent-encodes each segment of a path, keeping the slashes between them. */
export function encodePath(segments: readonly string[]): string {
  return segments.map(encodeSegment).join('/')
}

/** unnar's own HTML pages (landing, listings, errors) load nothing but their own /_unnar/ assets. */
export const OWN_PAGES_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
