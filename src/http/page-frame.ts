/** The frame of unnar's own generated pages (search results, file viewer): head, top bar, scripts. */
import { escapeHtml } from './html.js'

export interface PageFrame {
  readonly title: string
  /** The `<body>` class, which the stylesheet keys on. */
  readonly bodyClass: string
  /** Extra stylesheets of /_unnar/, with the media query each applies to. */
  readonly stylesheets?: ReadonlyArray<readonly [href: string, media: string]>
  /** Scripts of /_unnar/, deferred. */
  readonly scripts: readonly string[]
}

/** Everything before `main`'s content. */
export function pageStart({ title, bodyClass, stylesheets = [] }: PageFrame): string {
  const extra = stylesheets.map(([href, media]) => `<link rel="stylesheet" href="${href}" media="${media}">`).join('')
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="color-scheme" content="light dark">` +
    `<title>${escapeHtml(title)}</title><link rel="stylesheet" href="/_unnar/unnar.css">${extra}` +
    `<link rel="icon" href="/_unnar/favicon.svg" type="image/svg+xml"></head>` +
    `<body class="${bodyClass}"><header class="top"><a class="brand" href="/">unnar</a></header>`
  )
}

/** Everything after `main`. */
export function pageEnd({ scripts }: PageFrame): string {
  return `${scripts.map((src) => `<script src="${src}" defer></script>`).join('')}</body></html>\n`
}
