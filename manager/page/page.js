// SPDX-License-Identifier: Apache-2.0
// mod_cptoken: the Manage API Tokens page. No framework, no build step.
// It talks to the manager's API relative to itself (./execute/MODULE/FN):
// GET CPTokens/session once for the user and the page's CSRF token, then
// every call is a POST of JSON with that token in X-CPToken-CSRF. Data is
// only ever put into the page with textContent, never as HTML.
'use strict';

(() => {
  const NAME_RE = /^[A-Za-z0-9_-]{1,50}$/;
  const DAY = 86400;
  const SOON = 7 * DAY; // "expiring": within 7 days

  const $ = (id) => document.getElementById(id);
  const state = {
    user: '',
    csrf: '',
    tokens: [],
    usage: true, // false when the API says last-used data is unavailable
    selected: new Set(),
    sort: { key: 'created', dir: -1 },
    secret: null, // the new token while it is shown
  };

  // ------------------------------------------------------------ helpers

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k in e) e[k] = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  const now = () => Math.floor(Date.now() / 1000);
  const fmtTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

  function timeEl(sec) {
    const d = new Date(sec * 1000);
    return el('time', { dateTime: d.toISOString(), title: d.toISOString(), text: fmtTime.format(d) });
  }

  function inDays(sec) {
    const days = Math.round((sec - now()) / DAY);
    if (days <= 0) return 'today';
    return days === 1 ? 'in 1 day' : `in ${days} days`;
  }

  function showErrors(box, errors) {
    box.replaceChildren();
    if (!errors || !errors.length) return;
    const ul = el('ul');
    for (const e of errors) ul.append(el('li', { text: String(e) }));
    box.append(ul);
  }

  function announce(text) {
    $('status').textContent = '';
    // a fresh text node makes screen readers repeat an identical message
    window.setTimeout(() => { $('status').textContent = text; }, 50);
  }

  // ------------------------------------------------------------ the API

  class ApiError extends Error {
    constructor(errors) { super(errors.join(' ')); this.errors = errors; }
  }

  async function call(module, fn, params, method = 'POST') {
    const init = { method, credentials: 'same-origin', cache: 'no-store', redirect: 'error', headers: {} };
    if (method === 'POST') {
      init.headers['Content-Type'] = 'application/json';
      init.headers['X-CPToken-CSRF'] = state.csrf;
      init.body = JSON.stringify(params || {});
    }
    let res;
    try {
      res = await fetch(`execute/${module}/${fn}`, init);
    } catch (e) {
      throw new ApiError([`The server could not be reached (${e.message}).`]);
    }
    if (res.status === 401 || res.status === 403) {
      throw new ApiError([`The server refused the request (HTTP ${res.status}). Reload the page and sign in again.`]);
    }
    let body;
    try {
      body = await res.json();
    } catch (e) {
      throw new ApiError([`The server answered HTTP ${res.status} without the API's JSON.`]);
    }
    if (!body || body.status !== 1) {
      const errs = body && Array.isArray(body.errors) && body.errors.length ? body.errors
        : [`The call ${module}::${fn} failed (HTTP ${res.status}).`];
      throw new ApiError(errs.map(String));
    }
    return body;
  }

  // ------------------------------------------------------------ names and expiry

  // What the name rule says about `value`: [ok, text].
  function nameVerdict(value, except) {
    if (value === '') return [false, 'Required: 1 to 50 characters, letters A-Z a-z, digits 0-9, _ and -.'];
    const bad = [...new Set(value.replace(/[A-Za-z0-9_-]/g, ''))];
    if (bad.length) {
      const shown = bad.map((c) => (c === ' ' ? 'space' : `“${c}”`)).join(', ');
      return [false, `Not allowed: ${shown}. Use letters A-Z a-z, digits 0-9, _ and - only.`];
    }
    if (value.length > 50) return [false, `Too long: ${value.length} characters, at most 50.`];
    if (value !== except && state.tokens.some((t) => t.name === value)) {
      return [false, `You already have a token named “${value}”.`];
    }
    return [true, `“${value}” is a valid name (${value.length} of 50 characters).`];
  }

  function checkName(input, hint, except) {
    const [ok, text] = nameVerdict(input.value, except);
    hint.textContent = text;
    hint.classList.toggle('bad', !ok && input.value !== '');
    input.setAttribute('aria-invalid', String(!ok && input.value !== ''));
    return ok;
  }

  function todayIso() {
    const d = new Date();
    const p = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
  }

  // The unix time an expiry fieldset asks for (0 = never); throws ApiError.
  function expiryFrom(fieldset) {
    const choice = fieldset.querySelector('input[type=radio]:checked');
    if (!choice || choice.value === '0') return 0;
    if (choice.value !== 'date') return now() + Number(choice.value) * DAY;
    const v = fieldset.querySelector('input[type=date]').value;
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(v);
    if (!m) throw new ApiError(['Choose the expiry date.']);
    const t = Math.floor(new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]), 23, 59, 59).getTime() / 1000);
    if (!(t > now())) throw new ApiError(['The expiry date must be in the future.']);
    return t;
  }

  // Typing or picking a date chooses "On a date".
  function setupExpiry(fieldset) {
    const date = fieldset.querySelector('input[type=date]');
    date.min = todayIso();
    date.addEventListener('input', () => { fieldset.querySelector('input[value=date]').checked = true; });
  }

  // ------------------------------------------------------------ the list

  function expiryClass(t) {
    if (t.expires_at === null || t.expires_at === undefined) return '';
    if (t.expired || t.expires_at <= now()) return 'expired';
    if (t.expires_at - now() <= SOON) return 'soon';
    return '';
  }

  const isExpired = (t) => expiryClass(t) === 'expired';
  const neverUsed = (t) => state.usage && (t.last_used === null || t.last_used === undefined);

  function scopeText(t) {
    const parts = [];
    if (t.has_full_access === 0 && t.features && t.features.length) parts.push(`features: ${t.features.join(', ')}`);
    if (t.scopes && t.scopes.length) parts.push(t.scopes.join(' '));
    if (t.readonly) parts.push('safe methods only');
    return parts.length ? parts.join('; ') : 'full access';
  }

  const ipsText = (t) => (t.allowed_ips && t.allowed_ips.length ? t.allowed_ips.join(' ') : 'any');

  function sortValue(t, key) {
    switch (key) {
      case 'name': return t.name.toLowerCase();
      case 'created': return t.create_time || 0;
      case 'expires': return t.expires_at === null || t.expires_at === undefined ? Infinity : t.expires_at;
      case 'used': return t.last_used === null || t.last_used === undefined ? -1 : t.last_used;
      case 'uses': return t.uses === null || t.uses === undefined ? -1 : t.uses;
      case 'ips': return ipsText(t);
      case 'scope': return scopeText(t);
      default: return 0;
    }
  }

  function shown() {
    const filter = $('filter').value;
    const q = $('search').value.trim().toLowerCase();
    const rows = state.tokens.filter((t) => {
      if (q && !t.name.toLowerCase().includes(q)) return false;
      switch (filter) {
        case 'active': return !isExpired(t);
        case 'expiring': return expiryClass(t) === 'soon';
        case 'expired': return isExpired(t);
        case 'unused': return neverUsed(t);
        default: return true;
      }
    });
    const { key, dir } = state.sort;
    rows.sort((a, b) => {
      const x = sortValue(a, key);
      const y = sortValue(b, key);
      if (x < y) return -dir;
      if (x > y) return dir;
      return a.name < b.name ? -1 : 1;
    });
    return rows;
  }

  function expiresCell(t) {
    const td = el('td');
    if (t.expires_at === null || t.expires_at === undefined) {
      td.textContent = 'never';
      return td;
    }
    const cls = expiryClass(t);
    if (cls === 'expired') td.append(el('span', { class: 'badge expired', text: 'Expired' }), ' ');
    if (cls === 'soon') td.append(el('span', { class: 'badge soon', text: `Expires ${inDays(t.expires_at)}` }), ' ');
    td.append(timeEl(t.expires_at));
    if (t.rotated && t.grace_ends) td.append(el('br'), 'replaced; works until ', timeEl(t.grace_ends));
    return td;
  }

  function usedCell(t) {
    const td = el('td');
    if (!state.usage) td.textContent = 'unknown';
    else if (t.last_used === null || t.last_used === undefined) td.textContent = 'never';
    else {
      td.append(timeEl(t.last_used));
      if (t.last_used_ip) td.append(el('br'), el('span', { class: 'ip', text: `from ${t.last_used_ip}` }));
    }
    return td;
  }

  function actionButton(label, name, handler, cls) {
    const b = el('button', { type: 'button', class: cls || '' }, label, el('span', { class: 'vh', text: ` ${name}` }));
    b.addEventListener('click', () => handler(name, b));
    return b;
  }

  function render() {
    const rows = shown();
    const known = new Set(state.tokens.map((t) => t.name));
    for (const n of [...state.selected]) if (!known.has(n)) state.selected.delete(n);

    const tbody = $('token-rows');
    tbody.replaceChildren();
    rows.forEach((t, i) => {
      const id = `sel-${i}`;
      const box = el('input', { type: 'checkbox', id, checked: state.selected.has(t.name) });
      box.addEventListener('change', () => {
        if (box.checked) state.selected.add(t.name); else state.selected.delete(t.name);
        updateBulk(rows);
      });
      const nameTd = el('th', { scope: 'row', class: 'name' }, box, ' ', el('label', { htmlFor: id, text: t.name }));
      const tr = el('tr', { class: expiryClass(t) },
        nameTd,
        el('td', {}, timeEl(t.create_time)),
        expiresCell(t),
        usedCell(t),
        el('td', { class: 'num', text: state.usage && t.uses !== null && t.uses !== undefined ? String(t.uses) : 'unknown' }),
        el('td', { text: ipsText(t) }),
        el('td', { text: scopeText(t) }),
        el('td', { class: 'actions' },
          actionButton('Rename', t.name, openRename),
          actionButton('Change expiry', t.name, openExpiry),
          actionButton('Revoke', t.name, confirmRevoke, 'danger')));
      tr.dataset.name = t.name;
      tbody.append(tr);
    });
    if (!rows.length) {
      const text = state.tokens.length ? 'No token matches the filter.' : 'You have no API tokens yet. Generate one above.';
      tbody.append(el('tr', {}, el('td', { colSpan: 8, class: 'empty', text })));
    }
    $('count').textContent = `${rows.length} of ${state.tokens.length} token${state.tokens.length === 1 ? '' : 's'} shown.`;

    for (const th of document.querySelectorAll('#token-table th[data-key]')) {
      th.setAttribute('aria-sort', th.dataset.key === state.sort.key
        ? (state.sort.dir > 0 ? 'ascending' : 'descending') : 'none');
    }
    updateBulk(rows);
  }

  function updateBulk(rows) {
    const n = state.selected.size;
    const btn = $('revoke-selected');
    btn.disabled = n === 0;
    btn.textContent = n ? `Revoke selected (${n})` : 'Revoke selected';
    const all = $('select-all');
    const inView = rows.filter((t) => state.selected.has(t.name)).length;
    all.checked = rows.length > 0 && inView === rows.length;
    all.indeterminate = inView > 0 && inView < rows.length;
  }

  async function load() {
    const body = await call('Tokens', 'list', {});
    state.tokens = Array.isArray(body.data) ? body.data : [];
    state.usage = !(body.metadata && body.metadata.cptoken_usage === 'unavailable');
    const lost = document.activeElement && document.activeElement.closest('#token-rows');
    render();
    // the focused row's button went with the old rows: the list's heading takes over
    if (lost && !document.activeElement.closest('#token-rows')) $('tokens-h').focus();
  }

  // Runs a write; errors go to `box` (the page's or a dialog's).
  async function run(box, fn) {
    showErrors(box, []);
    try {
      return await fn();
    } catch (e) {
      showErrors(box, e instanceof ApiError ? e.errors : [String(e)]);
      return undefined;
    }
  }

  // ------------------------------------------------------------ generate

  function curlLine(token) {
    return `curl -H 'Authorization: cpanel ${state.user}:${token}' ${location.origin}/execute/Tokens/list`;
  }

  function showSecret(name, token, expires) {
    state.secret = token;
    $('created-name').textContent = name;
    $('token-value').value = token;
    $('curl-line').value = curlLine(token);
    $('copy-status').textContent = '';
    const exp = $('created-expiry');
    exp.replaceChildren();
    if (expires) exp.append('It expires on ', timeEl(expires), '. An expired token stays listed until you revoke it.');
    else exp.textContent = 'It does not expire: revoke it when it is no longer needed.';
    $('created').hidden = false;
    $('created-h').focus();
  }

  function wipeSecret() {
    state.secret = null;
    $('token-value').value = '';
    $('token-value').defaultValue = '';
    $('curl-line').value = '';
    $('curl-line').defaultValue = '';
    $('copy-status').textContent = '';
    $('created-name').textContent = '';
    $('created').hidden = true;
  }

  async function copyField(field, what) {
    const status = $('copy-status');
    status.textContent = '';
    try {
      if (!navigator.clipboard || !navigator.clipboard.writeText) throw new Error('no clipboard');
      await navigator.clipboard.writeText(field.value);
      status.textContent = `Copied the ${what} to the clipboard.`;
    } catch (e) {
      field.focus();
      field.select();
      status.textContent = `Could not copy automatically: the ${what} is selected, press Ctrl+C (⌘C on a Mac) to copy it.`;
    }
  }

  async function generate(ev) {
    ev.preventDefault();
    const name = $('name');
    if (!checkName(name, $('name-rule'))) {
      name.focus();
      return;
    }
    await run($('errors'), async () => {
      const expires = expiryFrom($('create-expiry'));
      const params = { name: name.value };
      if (expires) params.expires_at = String(expires);
      if ($('readonly').checked) params.readonly = '1';
      const body = await call('Tokens', 'create_full_access', params);
      const made = name.value;
      $('create-form').reset();
      checkName(name, $('name-rule'));
      showSecret(made, body.data.token, expires);
      announce(`Token “${made}” created. Copy it now: it is shown only once.`);
      await load();
    });
  }

  // ------------------------------------------------------------ dialogs

  function openDialog(dialog, opener) {
    dialog.returnTo = opener;
    showErrors(dialog.querySelector('.errors'), []);
    dialog.showModal();
  }

  // Focus goes back to the button that opened the dialog, or, when a new
  // list replaced that button, to the list's heading: at once when the page
  // closes the dialog, on the close event when Escape did.
  function restoreFocus(dialog) {
    const back = dialog.returnTo;
    if (back === null || back === undefined) return;
    dialog.returnTo = null;
    if (back.isConnected) back.focus();
    else $('tokens-h').focus();
  }

  function closeDialog(dialog) {
    dialog.close();
    restoreFocus(dialog);
  }

  for (const d of document.querySelectorAll('dialog')) {
    d.querySelector('.cancel').addEventListener('click', () => closeDialog(d));
    d.addEventListener('close', () => restoreFocus(d));
  }

  // confirm: title, text, names listed, the OK button's text, then the action
  let confirmAction = null;
  function confirmDialog(opener, title, text, names, ok, action) {
    $('confirm-h').textContent = title;
    $('confirm-text').textContent = text;
    const list = $('confirm-list');
    list.replaceChildren(...names.map((n) => el('li', { text: n })));
    list.hidden = names.length === 0;
    $('confirm-ok').textContent = ok;
    confirmAction = action;
    openDialog($('confirm-dialog'), opener);
    $('confirm-dialog').querySelector('.cancel').focus();
  }

  $('confirm-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const dialog = $('confirm-dialog');
    const done = await run($('confirm-errors'), confirmAction);
    if (done !== undefined) {
      closeDialog(dialog);
      announce(done);
      await run($('errors'), load);
    }
  });

  function confirmRevoke(name, opener) {
    confirmDialog(opener, `Revoke “${name}”?`,
      `Requests with the token “${name}” are refused from the next one on. This cannot be undone.`,
      [], `Revoke “${name}”`, async () => {
        const body = await call('Tokens', 'revoke', { name });
        state.selected.delete(name);
        return body.data ? `Token “${name}” revoked.` : `There was no token “${name}” any more.`;
      });
  }

  function confirmBulk() {
    const names = [...state.selected].sort();
    if (!names.length) return;
    confirmDialog($('revoke-selected'), `Revoke ${names.length} token${names.length === 1 ? '' : 's'}?`,
      'Requests with these tokens are refused from the next one on. This cannot be undone.',
      names, `Revoke ${names.length} token${names.length === 1 ? '' : 's'}`, async () => {
        const params = {};
        names.forEach((n, i) => { params[`name-${i}`] = n; });
        const body = await call('CPTokens', 'revoke', params);
        const revoked = [...((body.data && body.data.revoked) || [])].map(String).sort();
        for (const n of names) state.selected.delete(n);
        return revoked.length ? `Revoked: ${revoked.join(', ')}.` : 'No token was revoked.';
      });
  }

  function confirmUnused(ev) {
    ev.preventDefault();
    const input = $('unused-days');
    const days = Number(input.value);
    if (!Number.isInteger(days) || days < 1) {
      showErrors($('errors'), ['Enter a whole number of days, 1 or more.']);
      input.focus();
      return;
    }
    showErrors($('errors'), []);
    const limit = now() - days * DAY;
    const likely = state.usage ? state.tokens.filter((t) => (t.last_used !== null && t.last_used !== undefined
      ? t.last_used < limit : t.create_time < limit)).map((t) => t.name).sort() : [];
    const text = `Every token not used for ${days} day${days === 1 ? '' : 's'} is revoked, and so is every token never used that was created before then.`
      + (state.usage ? (likely.length ? ' In the list now, that is:' : ' In the list now, no token matches.') : '');
    confirmDialog($('unused-form').querySelector('button'), `Revoke tokens unused for ${days} days?`, text, likely,
      'Revoke unused tokens', async () => {
        const body = await call('CPTokens', 'revoke_unused', { days: String(days) });
        const revoked = [...((body.data && body.data.revoked) || [])].map(String).sort();
        return revoked.length ? `Revoked: ${revoked.join(', ')}.` : `No token was unused for ${days} days.`;
      });
  }

  function openRename(name, opener) {
    $('rename-old').textContent = name;
    const input = $('new-name');
    input.value = name;
    $('rename-dialog').dataset.name = name;
    checkName(input, $('new-name-rule'), name);
    openDialog($('rename-dialog'), opener);
    input.select();
  }

  $('new-name').addEventListener('input', () => checkName($('new-name'), $('new-name-rule'), $('rename-dialog').dataset.name));

  $('rename-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const dialog = $('rename-dialog');
    const name = dialog.dataset.name;
    const input = $('new-name');
    if (!checkName(input, $('new-name-rule'), name)) { input.focus(); return; }
    const newName = input.value;
    const ok = await run($('rename-errors'), async () => {
      await call('Tokens', 'rename', { name, new_name: newName });
      return true;
    });
    if (ok) {
      if (state.selected.delete(name)) state.selected.add(newName);
      closeDialog(dialog);
      announce(`Token “${name}” renamed to “${newName}”.`);
      await run($('errors'), load);
    }
  });

  function openExpiry(name, opener) {
    const t = state.tokens.find((x) => x.name === name);
    const dialog = $('expiry-dialog');
    dialog.dataset.name = name;
    $('expiry-name').textContent = name;
    const nowP = $('expiry-now');
    nowP.replaceChildren();
    const fs = $('edit-expiry');
    const date = fs.querySelector('input[type=date]');
    if (t && t.expires_at) {
      nowP.append(isExpired(t) ? 'It expired on ' : 'It expires on ', timeEl(t.expires_at), '.');
      const d = new Date(t.expires_at * 1000);
      const p = (n) => String(n).padStart(2, '0');
      date.value = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
      fs.querySelector('input[value=date]').checked = true;
    } else {
      nowP.textContent = 'It does not expire now.';
      date.value = '';
      fs.querySelector('input[value="0"]').checked = true;
    }
    date.min = todayIso();
    openDialog(dialog, opener);
    fs.querySelector('input[type=radio]:checked').focus();
  }

  $('expiry-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const dialog = $('expiry-dialog');
    const name = dialog.dataset.name;
    const ok = await run($('expiry-errors'), async () => {
      const expires = expiryFrom($('edit-expiry'));
      await call('CPTokens', 'set_expiration', { name, expires_at: String(expires) });
      return expires;
    });
    if (ok !== undefined) {
      closeDialog(dialog);
      announce(ok ? `Token “${name}” now expires ${inDays(ok)}.` : `Token “${name}” no longer expires.`);
      await run($('errors'), load);
    }
  });

  // ------------------------------------------------------------ wiring

  setupExpiry($('create-expiry'));
  setupExpiry($('edit-expiry'));

  $('name').addEventListener('input', () => checkName($('name'), $('name-rule')));
  $('create-form').addEventListener('submit', generate);
  $('copy-token').addEventListener('click', () => copyField($('token-value'), 'token'));
  $('copy-curl').addEventListener('click', () => copyField($('curl-line'), 'curl line'));
  $('saved').addEventListener('click', () => {
    wipeSecret();
    announce('The token was removed from the page.');
    $('name').focus();
  });
  // Leaving the page (or its going into the back/forward cache) wipes the token too.
  window.addEventListener('pagehide', wipeSecret);

  $('filter').addEventListener('change', render);
  $('search').addEventListener('input', render);
  $('refresh').addEventListener('click', () => run($('errors'), async () => {
    await load();
    announce('List refreshed.');
  }));
  for (const th of document.querySelectorAll('#token-table th[data-key]')) {
    th.querySelector('button').addEventListener('click', () => {
      const key = th.dataset.key;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
      render();
    });
  }
  $('select-all').addEventListener('change', () => {
    const rows = shown();
    for (const t of rows) {
      if ($('select-all').checked) state.selected.add(t.name); else state.selected.delete(t.name);
    }
    render();
  });
  $('revoke-selected').addEventListener('click', confirmBulk);
  $('unused-form').addEventListener('submit', confirmUnused);

  async function start() {
    const box = $('errors');
    await run(box, async () => {
      const body = await call('CPTokens', 'session', null, 'GET');
      state.user = String(body.data.user);
      state.csrf = String(body.data.csrf_token);
      $('user').textContent = state.user;
      $('who').hidden = false;
      await load();
      document.body.dataset.ready = '1';
    });
  }
  start();
})();
