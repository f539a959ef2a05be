# ruff: noqa: E501 - the page's script and style read best unwrapped
"""The inbox page: its HTML, script and style, as strings (no build step, nothing remote).

The script renders every message field with ``textContent`` (never as
markup); a message's HTML is shown only in a sandboxed frame without
scripts, loaded from ``/api/v1/messages/{id}/view``.  Keys: ``j``/``k`` or
the arrows move through the list, Enter opens, ``/`` searches, ``1``-``5``
pick a tab, Delete removes the open message.
"""

INDEX = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>smtpd_lite inbox</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header>
  <h1>smtpd_lite inbox</h1>
  <input id="search" type="search" placeholder="Search (/)" aria-label="Search messages">
  <span id="total" aria-live="polite"></span>
  <button id="delete-all" type="button">Delete all</button>
</header>
<main>
  <section id="list-pane" aria-label="Messages">
    <ul id="list" role="listbox" tabindex="0" aria-label="Messages"></ul>
    <nav id="pager">
      <button id="newer" type="button">&larr; Newer</button>
      <button id="older" type="button">Older &rarr;</button>
    </nav>
  </section>
  <section id="view" aria-label="Message" hidden>
    <div id="meta">
      <h2 id="subject"></h2>
      <dl>
        <dt>From</dt><dd id="from"></dd>
        <dt>To</dt><dd id="to"></dd>
        <dt>Received</dt><dd id="received"></dd>
      </dl>
      <button id="delete" type="button">Delete</button>
    </div>
    <div role="tablist" id="tabs">
      <button role="tab" type="button" data-tab="text">Text</button>
      <button role="tab" type="button" data-tab="html">HTML</button>
      <button role="tab" type="button" data-tab="headers">Headers</button>
      <button role="tab" type="button" data-tab="source">Source</button>
      <button role="tab" type="button" data-tab="attachments">Attachments</button>
    </div>
    <div class="panel" id="panel-text" role="tabpanel"><pre id="text"></pre></div>
    <div class="panel" id="panel-html" role="tabpanel">
      <p class="note">Remote images are not loaded.
        <button id="remote" type="button">Show remote images</button></p>
      <iframe id="html" sandbox="allow-popups allow-popups-to-escape-sandbox"
              referrerpolicy="no-referrer" title="HTML part"></iframe>
    </div>
    <div class="panel" id="panel-headers" role="tabpanel"><table id="headers"></table></div>
    <div class="panel" id="panel-source" role="tabpanel"><pre id="source"></pre></div>
    <div class="panel" id="panel-attachments" role="tabpanel"><ul id="attachments"></ul></div>
  </section>
</main>
</body>
</html>
"""

SCRIPT = r"""'use strict';
(function () {
  const PAGE = 50;
  const state = {offset: 0, query: '', total: 0, items: [], selected: -1, open: null, tab: 'text'};
  const $ = (id) => document.getElementById(id);

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  async function api(path, options) {
    const response = await fetch(path, Object.assign({headers: {'Accept': 'application/json'}}, options));
    if (!response.ok) throw new Error(path + ': ' + response.status);
    return response.status === 204 ? null : response;
  }

  async function load() {
    const params = new URLSearchParams({limit: PAGE, offset: state.offset});
    if (state.query) params.set('q', state.query);
    const data = await (await api('/api/v1/messages?' + params)).json();
    state.total = data.total;
    state.items = data.messages;
    render();
  }

  function row(summary, index) {
    const item = element('li', null, summary.read ? 'read' : 'unread');
    item.setAttribute('role', 'option');
    item.dataset.id = summary.id;
    item.appendChild(element('span', summary.mailfrom || '<>', 'from'));
    item.appendChild(element('span', summary.subject === null ? '(no subject)' : summary.subject, 'subject'));
    item.appendChild(element('span', summary.attachments ? '\u{1F4CE}' + summary.attachments : '', 'clip'));
    item.appendChild(element('time', new Date(summary.received).toLocaleString(), 'when'));
    item.addEventListener('click', () => { select(index); openMessage(summary.id); });
    return item;
  }

  function render() {
    const list = $('list');
    list.replaceChildren(...state.items.map(row));
    $('total').textContent = state.total + (state.query ? ' found' : ' messages');
    $('newer').disabled = state.offset === 0;
    $('older').disabled = state.offset + PAGE >= state.total;
    if (state.selected >= state.items.length) state.selected = state.items.length - 1;
    highlight();
  }

  function select(index) {
    state.selected = Math.max(0, Math.min(index, state.items.length - 1));
    highlight();
  }

  function highlight() {
    Array.from($('list').children).forEach((item, index) => {
      const on = index === state.selected;
      item.setAttribute('aria-selected', on ? 'true' : 'false');
      if (on) item.scrollIntoView({block: 'nearest'});
    });
  }

  async function openMessage(id) {
    const message = await (await api('/api/v1/messages/' + encodeURIComponent(id))).json();
    state.open = message;
    $('view').hidden = false;
    $('subject').textContent = message.subject === null ? '(no subject)' : message.subject;
    $('from').textContent = message.mailfrom || '<>';
    $('to').textContent = message.rcpttos.join(', ');
    $('received').textContent = new Date(message.received).toLocaleString();
    $('text').textContent = message.text === null ? '(no text part)' : message.text;
    $('html').removeAttribute('src');
    $('headers').replaceChildren(...message.headers.map(([name, value]) => {
      const tr = element('tr');
      tr.appendChild(element('th', name));
      tr.appendChild(element('td', value));
      return tr;
    }));
    $('source').textContent = '';
    $('attachments').replaceChildren(...message.attachments.map((attachment) => {
      const li = element('li');
      const link = element('a', (attachment.filename || 'attachment') + ' (' + attachment.content_type + ', ' + attachment.size + ' octets)');
      link.href = attachment.url;
      link.setAttribute('download', attachment.filename || '');
      li.appendChild(link);
      return li;
    }));
    const item = $('list').querySelector('[data-id="' + CSS.escape(String(id)) + '"]');
    if (item) item.className = 'read';
    showTab(message.text === null && message.html !== null ? 'html' : state.tab);
  }

  async function showTab(tab) {
    state.tab = tab;
    document.querySelectorAll('#tabs [role=tab]').forEach((button) => {
      button.setAttribute('aria-selected', button.dataset.tab === tab ? 'true' : 'false');
    });
    document.querySelectorAll('.panel').forEach((panel) => { panel.hidden = panel.id !== 'panel-' + tab; });
    if (!state.open) return;
    const base = '/api/v1/messages/' + encodeURIComponent(state.open.id);
    if (tab === 'html' && !$('html').getAttribute('src')) $('html').src = base + '/view';
    if (tab === 'source' && !$('source').textContent) {
      $('source').textContent = await (await api(base + '/raw')).text();
    }
  }

  async function deleteOpen() {
    if (!state.open) return;
    await api('/api/v1/messages/' + encodeURIComponent(state.open.id), {method: 'DELETE'});
    state.open = null;
    $('view').hidden = true;
    await load();
  }

  function listen() {
    const events = new EventSource('/api/v1/events');
    events.addEventListener('message', (event) => {
      const summary = JSON.parse(event.data);
      if (state.offset !== 0 || state.query) { load(); return; }
      state.items.unshift(summary);
      if (state.selected >= 0) state.selected += 1;
      if (state.items.length > PAGE) state.items.pop();
      state.total += 1;
      render();
    });
  }

  function keys(event) {
    const typing = event.target.tagName === 'INPUT';
    if (typing) { if (event.key === 'Escape') event.target.blur(); return; }
    if (event.key === '/') { event.preventDefault(); $('search').focus(); }
    else if (event.key === 'j' || event.key === 'ArrowDown') { event.preventDefault(); select(state.selected + 1); }
    else if (event.key === 'k' || event.key === 'ArrowUp') { event.preventDefault(); select(state.selected - 1); }
    else if (event.key === 'Enter' && state.items[state.selected]) openMessage(state.items[state.selected].id);
    else if (event.key === 'Delete') deleteOpen();
    else if ('12345'.includes(event.key) && event.key.length === 1) {
      showTab(['text', 'html', 'headers', 'source', 'attachments'][Number(event.key) - 1]);
    }
  }

  let searchTimer = null;
  $('search').addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { state.query = $('search').value.trim(); state.offset = 0; load(); }, 200);
  });
  $('newer').addEventListener('click', () => { state.offset = Math.max(0, state.offset - PAGE); load(); });
  $('older').addEventListener('click', () => { state.offset += PAGE; load(); });
  $('delete').addEventListener('click', deleteOpen);
  $('delete-all').addEventListener('click', async () => {
    if (!window.confirm('Delete every message?')) return;
    await api('/api/v1/messages', {method: 'DELETE'});
    state.open = null; $('view').hidden = true; await load();
  });
  $('remote').addEventListener('click', () => {
    if (state.open) $('html').src = '/api/v1/messages/' + encodeURIComponent(state.open.id) + '/view?remote=1';
  });
  document.querySelectorAll('#tabs [role=tab]').forEach((button) => {
    button.addEventListener('click', () => showTab(button.dataset.tab));
  });
  document.addEventListener('keydown', keys);
  showTab('text');
  listen();
  load();
})();
"""

STYLE = """
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: #1d1d1f; background: #f6f6f8; }
header { display: flex; gap: 1em; align-items: center; padding: .5em 1em; background: #24313f; color: #fff; }
header h1 { font-size: 1.1em; margin: 0; }
#search { flex: 1; max-width: 30em; padding: .3em .5em; }
main { display: flex; height: calc(100vh - 3em); }
#list-pane { width: 40%; min-width: 18em; overflow: auto; border-right: 1px solid #ccc; background: #fff; }
#list { list-style: none; margin: 0; padding: 0; outline: none; }
#list li { display: grid; grid-template-columns: 1fr auto; padding: .4em .8em; border-bottom: 1px solid #eee; cursor: pointer; }
#list li .from { font-size: .9em; color: #555; }
#list li .when { font-size: .8em; color: #777; grid-column: 2; grid-row: 1; }
#list li .subject { grid-column: 1 / span 2; }
#list li .clip { grid-column: 2; grid-row: 2; }
#list li.unread .subject { font-weight: 600; }
#list li[aria-selected=true] { background: #dbe8f7; }
#list:focus li[aria-selected=true] { outline: 2px solid #3a78c2; outline-offset: -2px; }
#pager { display: flex; justify-content: space-between; padding: .5em; }
#view { flex: 1; overflow: auto; padding: 1em; }
#meta dl { display: grid; grid-template-columns: auto 1fr; gap: 0 1em; margin: .5em 0; }
#meta dt { color: #666; }
#meta dd { margin: 0; }
#meta h2 { margin: 0; font-size: 1.2em; }
#tabs { display: flex; gap: .2em; border-bottom: 1px solid #ccc; margin-top: 1em; }
#tabs button { border: 1px solid #ccc; border-bottom: none; background: #eee; padding: .3em .8em; }
#tabs button[aria-selected=true] { background: #fff; font-weight: 600; }
.panel { background: #fff; border: 1px solid #ccc; border-top: none; padding: .8em; }
pre { white-space: pre-wrap; word-break: break-word; margin: 0; }
#html { width: 100%; height: 60vh; border: 1px solid #ddd; background: #fff; }
#headers th { text-align: left; vertical-align: top; padding-right: 1em; white-space: nowrap; }
.note { color: #666; font-size: .9em; margin: 0 0 .5em; }
button:focus-visible, input:focus-visible { outline: 2px solid #3a78c2; }
"""
