// The file viewer's line anchors: `#L10` or `#L10-L20` highlights those lines (on load and when the
// hash changes); a click on a line number picks that line, shift-click a range from the last one,
// as on GitHub. Without this file `#L10` still scrolls to its line and CSS marks it (:target).
;(() => {
  const rows = document.querySelectorAll('table.code tr')
  if (rows.length === 0) return
  let marked = []
  let anchor = 0

  /** [first, last] from `#L10` or `#L10-L20` (either order), within the file; null otherwise. */
  function parse(hash) {
    const match = /^#L(\d+)(?:-L?(\d+))?$/.exec(hash)
    if (match === null) return null
    const a = Number(match[1])
    const b = match[2] === undefined ? a : Number(match[2])
    const first = Math.max(1, Math.min(a, b))
    const last = Math.min(rows.length, Math.max(a, b))
    return first <= last ? [first, last] : null
  }

  function mark(range) {
    for (const row of marked) row.classList.remove('hl')
    marked = []
    if (range === null) return
    for (let line = range[0]; line <= range[1]; line++) {
      const row = rows[line - 1]
      row.classList.add('hl')
      marked.push(row)
    }
  }

  function show(scroll) {
    const range = parse(location.hash)
    mark(range)
    if (range === null) return
    anchor = range[0]
    if (scroll) rows[range[0] - 1].scrollIntoView({ block: 'center' })
  }

  document.querySelector('table.code').addEventListener('click', (event) => {
    const link = event.target.closest('td.ln a')
    if (link === null) return
    event.preventDefault()
    const line = Number(link.getAttribute('data-line'))
    const hash =
      event.shiftKey && anchor !== 0 && anchor !== line
        ? '#L' + Math.min(anchor, line) + '-L' + Math.max(anchor, line)
        : '#L' + line
    // replaceState: no jump, and one history entry per page rather than one per click.
    history.replaceState(null, '', hash)
    mark(parse(hash))
    if (!event.shiftKey) anchor = line
  })
  window.addEventListener('hashchange', () => show(true))
  show(true)
})()
