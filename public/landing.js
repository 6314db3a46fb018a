// The landing page: jump to a store path, and show the upstreams with their health (/api/upstreams).

/**
 * Where an input leads, or an error. Accepts `/nix/store/<hash>-<name>[/sub/path]`, `<hash>-<name>…`,
 * a bare hash, a `<hash>.narinfo`, and any URL whose path is one of those (taken already encoded).
 * Store paths and directories (a trailing slash) open the listing; a sub path is opened as given.
 */
function jumpTarget(raw) {
  let text = raw.trim()
  if (text === '') return { error: 'Enter a store path, a hash, or a path inside a store path.' }
  let encoded = false
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    try {
      text = new URL(text).pathname
      encoded = true
    } catch {
      return { error: 'That is not a valid URL.' }
    }
  }
  text = text.replace(/^\/+/, '')
  if (text.startsWith('nix/store/')) text = text.slice('nix/store/'.length)
  const match = /^([0-9a-df-np-sv-z]{32})(\.narinfo$|-[^/]*)?(?:\/(.*))?$/i.exec(text)
  if (match === null) {
    return {
      error:
        'That does not look like a store path: expected /nix/store/ and a 32-character hash (digits and a–z without e, o, u, t).',
    }
  }
  const hash = match[1].toLowerCase()
  const name = match[2] === undefined || match[2] === '.narinfo' ? '' : match[2]
  const rest = match[3]
  const enc = (segment) => (encoded ? segment : encodeURIComponent(segment))
  const base = '/nix/store/' + hash + enc(name)
  if (rest === undefined || rest === '') return { href: base + '/' }
  return { href: base + '/' + rest.split('/').map(enc).join('/') }
}

function renderUpstreams(list, upstreams) {
  list.textContent = ''
  if (upstreams.length === 0) {
    const item = document.createElement('li')
    item.className = 'state-unknown'
    item.textContent = 'No upstream is configured.'
    list.appendChild(item)
    return
  }
  for (const upstream of upstreams) {
    const state = upstream.state === 'ok' || upstream.state === 'failing' ? upstream.state : 'unknown'
    const item = document.createElement('li')
    item.className = 'state-' + state
    const dot = document.createElement('span')
    dot.className = 'dot'
    dot.setAttribute('aria-hidden', 'true')
    const name = document.createElement('span')
    name.className = 'name'
    name.textContent = String(upstream.name)
    const label = document.createElement('span')
    label.className = 'state'
    label.textContent = state
    if (state === 'unknown') label.title = 'not asked since unnar started'
    item.append(dot, name, label)
    if (state === 'failing' && typeof upstream.lastError === 'string' && upstream.lastError !== '') {
      const error = document.createElement('span')
      error.className = 'error'
      error.textContent = upstream.lastError
      item.appendChild(error)
    }
    list.appendChild(item)
  }
}

async function loadUpstreams() {
  const list = document.getElementById('upstreams')
  if (list === null) return
  try {
    const res = await fetch('/api/upstreams', { headers: { accept: 'application/json' }, cache: 'no-store' })
    if (!res.ok) throw new Error('HTTP ' + res.status)
    const data = await res.json()
    if (!Array.isArray(data)) throw new Error('not a list')
    renderUpstreams(
      list,
      data.filter((u) => u !== null && typeof u === 'object' && typeof u.name === 'string'),
    )
  } catch {
    list.textContent = ''
    const item = document.createElement('li')
    item.className = 'state-unknown'
    const dot = document.createElement('span')
    dot.className = 'dot'
    dot.setAttribute('aria-hidden', 'true')
    const name = document.createElement('span')
    name.className = 'name'
    name.textContent = 'The upstreams could not be loaded'
    const label = document.createElement('span')
    label.className = 'state'
    label.textContent = 'unknown'
    item.append(dot, name, label)
    list.appendChild(item)
  }
}

document.addEventListener('DOMContentLoaded', () => {
  for (const origin of document.querySelectorAll('.origin')) origin.textContent = location.origin

  const form = document.getElementById('jump')
  const input = document.getElementById('path')
  const error = document.getElementById('path-error')
  form.addEventListener('submit', (event) => {
    event.preventDefault()
    const target = jumpTarget(input.value)
    if (target.error !== undefined) {
      error.textContent = target.error
      error.hidden = false
      input.setAttribute('aria-invalid', 'true')
      input.focus()
      return
    }
    error.hidden = true
    input.removeAttribute('aria-invalid')
    location.href = target.href
  })
  input.addEventListener('input', () => {
    if (!error.hidden) {
      error.hidden = true
      input.removeAttribute('aria-invalid')
    }
  })
  // The browser sends ?path=… when this page is used without JavaScript; with it, finish the job.
  const asked = new URLSearchParams(location.search).get('path')
  if (asked !== null && asked !== '') {
    input.value = asked
    const target = jumpTarget(asked)
    if (target.href !== undefined) location.replace(target.href)
  }

  loadUpstreams()
})
