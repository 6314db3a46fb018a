// Enhancements for unnar's directory listing: sorting, filtering, "copy curl command".
// The page works without this file; everything it needs is in the markup (data-size on rows).
;(() => {
  const table = document.getElementById('listing')
  const body = document.getElementById('entries')
  if (table === null || body === null) return

  const rows = Array.from(body.rows)
  // Read once: names (for filtering, lower-cased) and sizes (for sorting). NAR order is name order.
  // A symlink's name is a span (its target is the link): see listing-page.ts.
  const names = rows.map((row) =>
    (row.cells[1].querySelector('a:not(.target), .link') || row.cells[1]).textContent.replace(/\/$/, '').toLowerCase(),
  )
  const sizes = rows.map((row) => Number(row.getAttribute('data-size')))
  const order = rows.map((_, index) => index)

  // ---- copy curl command -------------------------------------------------------------------
  const toast = document.getElementById('toast')
  let toastTimer = 0
  function announce(text) {
    if (toast === null) return
    toast.textContent = text
    toast.classList.add('show')
    clearTimeout(toastTimer)
    toastTimer = setTimeout(() => toast.classList.remove('show'), 2500)
  }

  const template = document.createElement('button')
  template.type = 'button'
  template.className = 'copy'
  template.textContent = 'curl'
  template.title = 'Copy a curl command that downloads this file'
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i]
    if (row.className !== 'f' && row.className !== 'x') continue
    const button = template.cloneNode(true)
    button.setAttribute('aria-label', 'Copy curl command for ' + row.cells[1].querySelector('a').textContent)
    row.cells[4].appendChild(button)
  }

  function curlCommand(link) {
    // An absolute, percent-encoded URL; a quote would end the shell string, so it is encoded too.
    const url = new URL(link.getAttribute('href'), location.href).href.replace(/'/g, '%27')
    return "curl -fLO '" + url + "'"
  }

  function fallbackCopy(text) {
    const area = document.createElement('textarea')
    area.value = text
    area.setAttribute('readonly', '')
    area.style.position = 'fixed'
    area.style.opacity = '0'
    document.body.appendChild(area)
    area.select()
    let ok = false
    try {
      ok = document.execCommand('copy')
    } catch {
      ok = false
    }
    area.remove()
    return ok
  }

  async function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text)
        return true
      } catch {
        // fall through to the old way (e.g. permission denied)
      }
    }
    return fallbackCopy(text)
  }

  // A "view" link (the file as a page with line numbers) on text files; made here, so that mirroring
  // tools, which run no script, never fetch `name?view` as a file of its own.
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i]
    if (!row.hasAttribute('data-view')) continue
    const view = document.createElement('a')
    view.className = 'view'
    view.rel = 'nofollow'
    view.textContent = 'view'
    view.href = row.cells[1].querySelector('a').getAttribute('href') + '?view'
    view.setAttribute('aria-label', 'View ' + row.cells[1].querySelector('a').textContent + ' with line numbers')
    row.cells[4].appendChild(view)
  }

  body.addEventListener('click', async (event) => {
    const button = event.target.closest('button.copy')
    if (button === null) return
    const link = button.closest('tr').cells[1].querySelector('a')
    const command = curlCommand(link)
    button.setAttribute('data-command', command)
    if (await copy(command)) {
      // The label stays (no width change); the icon turns into a check mark and the toast says it.
      button.classList.add('done')
      announce('Copied: ' + command)
      setTimeout(() => button.classList.remove('done'), 1500)
    } else {
      // Last resort: show the command so it can be copied by hand.
      window.prompt('Copy this command:', command)
    }
  })

  // ---- sorting ------------------------------------------------------------------------------
  let sortKey = 'name'
  let descending = false
  const headers = Array.from(table.tHead.rows[0].cells).filter((th) => th.hasAttribute('data-sort'))
  for (const th of headers) {
    const button = document.createElement('button')
    button.type = 'button'
    button.className = 'sort'
    button.textContent = th.textContent
    const mark = document.createElement('span')
    mark.className = 'dir'
    mark.setAttribute('aria-hidden', 'true')
    button.appendChild(mark)
    th.textContent = ''
    th.appendChild(button)
    button.addEventListener('click', () => {
      const key = th.getAttribute('data-sort')
      if (key === sortKey) descending = !descending
      else {
        sortKey = key
        // Sizes are most useful largest first.
        descending = key === 'size'
      }
      sort()
    })
  }

  function sort() {
    if (sortKey === 'size') {
      order.sort((a, b) => (descending ? sizes[b] - sizes[a] : sizes[a] - sizes[b]) || a - b)
    } else {
      order.sort((a, b) => (descending ? b - a : a - b))
    }
    // Reordered while out of the document: one insertion instead of 5000 moves with style invalidation.
    const parent = body.parentNode
    const next = body.nextSibling
    body.remove()
    for (const index of order) body.appendChild(rows[index])
    parent.insertBefore(body, next)
    markHeaders()
  }

  function markHeaders() {
    for (const th of headers) {
      const active = th.getAttribute('data-sort') === sortKey
      if (active) th.setAttribute('aria-sort', descending ? 'descending' : 'ascending')
      else th.removeAttribute('aria-sort')
      th.querySelector('.dir').textContent = active ? (descending ? '▼' : '▲') : ''
    }
  }
  markHeaders()

  // ---- filter -------------------------------------------------------------------------------
  const toolbar = document.querySelector('.toolbar')
  const input = document.getElementById('filter')
  const count = document.getElementById('count')
  const noMatch = document.getElementById('nomatch')
  if (toolbar === null || input === null) return
  toolbar.hidden = false
  if (rows.length === 0) input.disabled = true

  // The filter sees this directory only; ?find searches every path of the store path. Made here,
  // so that mirroring tools, which run no script, never follow it.
  const crumb = document.querySelector('h1.crumbs a')
  const storeRoot = crumb === null ? './' : crumb.getAttribute('href')
  const findAll = document.createElement('a')
  findAll.id = 'find-all'
  findAll.rel = 'nofollow'
  findAll.hidden = true
  toolbar.appendChild(findAll)
  function offerFind(query) {
    findAll.hidden = query === ''
    if (query === '') return
    findAll.textContent = 'Search the whole store path for “' + query + '”'
    findAll.href = storeRoot + '?find=' + encodeURIComponent(query)
  }

  function applyFilter() {
    const query = input.value.trim().toLowerCase()
    let shown = 0
    for (let i = 0; i < rows.length; i++) {
      const hide = query !== '' && !names[i].includes(query)
      if (rows[i].hidden !== hide) rows[i].hidden = hide
      if (!hide) shown++
    }
    if (count !== null) count.textContent = query === '' ? '' : shown + ' of ' + rows.length
    if (noMatch !== null) noMatch.hidden = shown !== 0 || rows.length === 0
    offerFind(input.value.trim())
  }
  input.addEventListener('input', applyFilter)
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && input.value !== '') {
      input.value = ''
      applyFilter()
    }
  })
  // "/" focuses the filter, as on many code and file browsers.
  document.addEventListener('keydown', (event) => {
    if (event.key !== '/' || event.ctrlKey || event.metaKey || event.altKey) return
    const active = document.activeElement
    if (active !== null && (active.tagName === 'INPUT' || active.tagName === 'TEXTAREA' || active.isContentEditable))
      return
    event.preventDefault()
    input.focus()
    input.select()
  })
  // A value restored by the browser (back button) applies at once.
  if (input.value !== '') applyFilter()
})()
