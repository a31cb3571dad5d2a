// SPDX-License-Identifier: Apache-2.0
// The Manage API Tokens page in a real browser: Debian's chromium driven by
// playwright-core, against the real manager (httpd with build/mod_cptoken.so,
// harness.js). One page walks through what a user does, in order; screenshots
// and both servers' logs go to $BROWSER_LOGS (make browser-test:
// build/test-logs/browser/). $CPTOKEN_PAGE_SHOT names a file that gets the
// README's screenshot (make page-screenshot: docs/manager-page.png).
//   node --test t/browser/manager.test.js       (as root; make browser-test)
'use strict';

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { describe, it, before, after } = require('node:test');
const { chromium } = require('playwright-core');
const { startWorld, request, sleep, CSP, ROOT } = require('./harness');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const LOGS = process.env.BROWSER_LOGS || path.join(ROOT, 'build', 'test-logs', 'browser');
const TOKEN_RE = /^[A-Z0-9]{32}$/;
const DAY = 86400;
const T = { timeout: 60000 };
const needsPage = () => assert.ok(loaded, 'the page did not load (see the first test)');

let world;
let loaded = false; // set by the first test: without the page, the others fail at once
let browser;
let context;
let page;
const problems = []; // script errors, console errors, CSP violations
const tokens = {}; // name -> secret, of tokens made in the browser

function watch(p) {
  p.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  p.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (/favicon\.ico/.test(m.location().url || '')) return; // the browser asks /favicon.ico by itself
    if (!p.url().startsWith(world.manager.url)) return; // the other origin's page fails on purpose
    problems.push(`console: ${m.text()}`);
  });
}

async function shot(name, p = page) {
  fs.mkdirSync(LOGS, { recursive: true });
  await p.screenshot({ path: path.join(LOGS, `${name}.png`), fullPage: true });
}

const rows = (p = page) => p.$$eval('#token-rows tr[data-name]', (trs) => trs.map((t) => t.dataset.name));
const row = (name, p = page) => p.locator(`#token-rows tr[data-name="${name}"]`);
const cell = (name, col, p = page) => row(name, p).locator('xpath=./*').nth(col); // 0 name ... 7 actions
const text = async (loc) => (await loc.textContent()).replace(/\s+/g, ' ').trim();

async function open(p = page) {
  const resp = await p.goto(`${world.manager.url}/cptoken/`);
  await p.waitForSelector('body[data-ready="1"]');
  return resp;
}

async function refresh() {
  await page.evaluate(() => { document.getElementById('status').textContent = ''; });
  await page.click('#refresh');
  await page.waitForFunction(() => document.getElementById('status').textContent === 'List refreshed.');
}

// The status line after an action, once it says something matching `re`.
async function statusMatching(re, p = page) {
  await p.waitForFunction((src) => new RegExp(src).test(document.getElementById('status').textContent), re.source);
  return p.textContent('#status');
}

async function protectedStatus(token) {
  const r = await request(`${world.protected.url}/protected/`, { headers: { Authorization: `cpanel alice:${token}` } });
  return r.status;
}

async function generate(name, p = page) {
  await p.fill('#name', name);
  await p.click('#create-form button[type=submit]');
  await p.waitForSelector('#created:not([hidden])');
  const token = await p.inputValue('#token-value');
  assert.match(token, TOKEN_RE);
  tokens[name] = token;
  await p.waitForSelector(`#token-rows tr[data-name="${name}"]`);
  return token;
}

function storeNames() {
  return Object.keys(world.store.list('alice')).sort();
}

function localDate(secondsFromNow) {
  const d = new Date(Date.now() + secondsFromNow * 1000);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

describe('the Manage API Tokens page', () => {
  before(async () => {
    world = await startWorld();
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--disable-dev-shm-usage'] });
    console.log(`# chromium ${browser.version()}, manager ${world.manager.url}, protected ${world.protected.url}, `
      + `other origin ${world.other.url}, last used ${world.usage ? 'available' : 'unavailable (no CPTokenUsageSocket)'}`);
    context = await browser.newContext({
      viewport: { width: 1280, height: 900 },
      colorScheme: 'light',
      httpCredentials: { username: world.user, password: world.password },
    });
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: world.manager.url });
    page = await context.newPage();
    watch(page);
  });

  after(async () => {
    if (page) await shot('last').catch(() => {});
    if (browser) await browser.close();
    if (world) {
      await world.stop();
      world.keepLogs(LOGS);
      world.remove();
    }
  });

  it('loads under the strict CSP, shows the user and only their tokens, marks expiry', T, async () => {
    const resp = await open();
    assert.equal(resp.headers()['content-security-policy'], CSP);
    assert.match(resp.headers()['cache-control'], /no-store/);
    assert.equal(await page.textContent('#user'), 'alice');
    loaded = true;
    assert.deepEqual((await rows()).sort(), ['backup', 'deploy', 'expired-one', 'old-ci']); // not bob's

    assert.match(await row('expired-one').getAttribute('class'), /\bexpired\b/);
    assert.match(await text(cell('expired-one', 2)), /^Expired /);
    assert.match(await row('backup').getAttribute('class'), /\bsoon\b/);
    assert.match(await text(cell('backup', 2)), /^Expires in [23] days /);
    assert.equal(await text(cell('deploy', 2)), 'never');
    assert.equal(await text(cell('deploy', 5)), '127.0.0.1 192.0.2.0/24');
    assert.equal(await text(cell('old-ci', 5)), 'any');
    assert.match(await text(cell('backup', 6)), /\/protected\//);
    assert.match(await text(cell('backup', 6)), /safe methods only/);
    assert.equal(await text(cell('deploy', 6)), 'full access');
    assert.equal(await text(cell('old-ci', 3)), world.usage ? 'never' : 'unknown');

    // the API's own answers: no caching, the CSP, never a CORS header
    const api = await request(`${world.manager.url}/cptoken/execute/CPTokens/session`, {
      headers: { Authorization: `Basic ${Buffer.from(`alice:${world.password}`).toString('base64')}` },
    });
    assert.equal(api.status, 200);
    assert.equal(JSON.parse(api.body).data.user, 'alice');
    assert.match(api.headers['cache-control'], /no-store/);
    assert.equal(api.headers['content-security-policy'], CSP);
    assert.ok(!Object.keys(api.headers).some((h) => h.startsWith('access-control-')), JSON.stringify(api.headers));
    await shot('01-list');
  });

  it('generates: the name rule as you type, the token once, Copy, a curl line', T, async () => {
    needsPage();
    const rule = async (value) => { await page.fill('#name', value); return page.textContent('#name-rule'); };
    assert.match(await rule('my token'), /Not allowed: space/);
    assert.equal(await page.getAttribute('#name', 'aria-invalid'), 'true');
    assert.match(await rule('deploy'), /already have a token named “deploy”/);
    assert.match(await rule('x'.repeat(51)), /Too long: 51 characters/);
    assert.match(await rule('ci-page'), /“ci-page” is a valid name/);
    assert.equal(await page.getAttribute('#name', 'aria-invalid'), 'false');

    await page.locator('#create-expiry').getByLabel('In 30 days').check();
    const before = Math.floor(Date.now() / 1000);
    await page.click('#create-form button[type=submit]');
    await page.waitForSelector('#created:not([hidden])');
    const token = await page.inputValue('#token-value');
    assert.match(token, TOKEN_RE);
    tokens['ci-page'] = token;
    assert.equal(await page.evaluate(() => document.activeElement.id), 'created-h');
    assert.match(await text(page.locator('#created')), /This is the only time the token is shown\./);
    assert.equal(await page.getAttribute('#token-value', 'readonly'), '');
    assert.equal(await page.inputValue('#curl-line'),
      `curl -H 'Authorization: cpanel alice:${token}' ${world.manager.url}/execute/Tokens/list`);

    await page.click('#copy-token');
    await page.waitForFunction(() => document.getElementById('copy-status').textContent !== '');
    assert.equal(await page.textContent('#copy-status'), 'Copied the token to the clipboard.');
    assert.equal(await page.getAttribute('#copy-status', 'aria-live'), 'assertive');
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), token);

    await page.waitForSelector('#token-rows tr[data-name="ci-page"]');
    const made = world.store.list('alice')['ci-page'];
    const expires = Date.parse(made.expires) / 1000;
    assert.ok(Math.abs(expires - (before + 30 * DAY)) < 120, `expires ${made.expires}`);
    await shot('02-generated');
  });

  it('a token made on the page is admitted on the next request, and its curl line works', T, async () => {
    needsPage();
    const token = tokens['ci-page'];
    assert.equal(await protectedStatus(token), 200);
    assert.equal(await protectedStatus(token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A')), 401);
    assert.equal(await protectedStatus(world.fixtures.deploy), 200); // allowlisted to 127.0.0.1

    const curl = await page.inputValue('#curl-line');
    const r = spawnSync('sh', ['-c', `${curl} -s --max-time 10`], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const body = JSON.parse(r.stdout);
    assert.equal(body.status, 1, r.stdout);
    assert.ok(body.data.some((t) => t.name === 'ci-page'), r.stdout);

    // Last used: the time and the address, once the manager can read usage
    let used = '';
    let deployUsed = '';
    for (let i = 0; i < 20; i += 1) {
      await refresh();
      used = await text(cell('ci-page', 3));
      deployUsed = await text(cell('deploy', 3));
      if (!world.usage || (/from 127\.0\.0\.1/.test(used) && /from 127\.0\.0\.1/.test(deployUsed))) break;
      await sleep(250);
    }
    if (world.usage) {
      assert.match(used, /from 127\.0\.0\.1$/);
      assert.match(deployUsed, /from 127\.0\.0\.1$/);
      assert.ok(Number(await text(cell('ci-page', 4))) >= 1);
    } else {
      assert.equal(used, 'unknown');
      assert.equal(await text(cell('ci-page', 4)), 'unknown');
    }
    await shot('03-used');
    if (process.env.CPTOKEN_PAGE_SHOT) {
      await page.screenshot({ path: process.env.CPTOKEN_PAGE_SHOT, fullPage: true });
    }
  });

  it('"Yes, I saved it" wipes the token from the page, and so does leaving it', T, async () => {
    needsPage();
    const token = tokens['ci-page'];
    await page.click('#saved');
    assert.equal(await page.isHidden('#created'), true);
    const everything = () => page.evaluate(() => document.documentElement.outerHTML
      + [...document.querySelectorAll('input, textarea')].map((e) => e.value).join('\n'));
    assert.ok(!(await everything()).includes(token), 'the token is still in the page');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'name');

    // pagehide (leaving, or going into the back/forward cache) wipes it too
    const second = await generate('ci-leave');
    assert.ok((await everything()).includes(second));
    await page.evaluate(() => window.dispatchEvent(new PageTransitionEvent('pagehide', { persisted: true })));
    assert.ok(!(await everything()).includes(second), 'pagehide left the token in the page');
    assert.equal(await page.isHidden('#created'), true);
    await page.goto('about:blank');
    await page.goBack();
    await page.waitForSelector('body[data-ready="1"]');
    assert.ok(!(await everything()).includes(second), 'back to the page: the token is there again');
  });

  it('Copy falls back to selecting the token when the clipboard API fails', T, async () => {
    needsPage();
    const p = await context.newPage();
    watch(p);
    await p.addInitScript(() => {
      Object.defineProperty(navigator, 'clipboard', {
        configurable: true, value: { writeText: () => Promise.reject(new Error('denied')) },
      });
    });
    await open(p);
    const token = await generate('ci-fallback', p);
    await p.click('#copy-token');
    await p.waitForFunction(() => document.getElementById('copy-status').textContent !== '');
    assert.match(await p.textContent('#copy-status'), /the token is selected, press Ctrl\+C/);
    const sel = await p.evaluate(() => {
      const e = document.activeElement;
      return { id: e.id, text: e.value.slice(e.selectionStart, e.selectionEnd) };
    });
    assert.deepEqual(sel, { id: 'token-value', text: token });
    await shot('04-copy-fallback', p);
    await p.click('#saved');
    await p.close();
  });

  it('sorts by column and filters: active, expiring, expired, never used, search', T, async () => {
    needsPage();
    await refresh();
    const th = (key) => page.locator(`#token-table th[data-key="${key}"]`);
    const byName = (names, dir) => [...names].sort((a, b) => dir * (a.toLowerCase() < b.toLowerCase() ? -1 : 1));
    await th('name').locator('button').click();
    assert.equal(await th('name').getAttribute('aria-sort'), 'ascending');
    const asc = await rows();
    assert.deepEqual(asc, byName(asc, 1));
    await th('name').locator('button').click();
    assert.equal(await th('name').getAttribute('aria-sort'), 'descending');
    assert.deepEqual(await rows(), byName(asc, -1));
    await th('expires').locator('button').click();
    const byExpiry = await rows();
    assert.deepEqual(byExpiry.slice(0, 3), ['expired-one', 'backup', 'ci-page']);

    const filtered = async (value) => { await page.selectOption('#filter', value); return (await rows()).sort(); };
    assert.deepEqual(await filtered('expired'), ['expired-one']);
    assert.deepEqual(await filtered('expiring'), ['backup']);
    assert.deepEqual(await filtered('active'), asc.filter((n) => n !== 'expired-one').sort());
    const unused = await filtered('unused');
    if (world.usage) {
      assert.ok(unused.includes('old-ci') && unused.includes('backup'), unused.join(' '));
      assert.ok(!unused.includes('ci-page') && !unused.includes('deploy'), unused.join(' '));
    } else {
      assert.deepEqual(unused, []); // nobody can tell
    }
    await page.selectOption('#filter', 'all');
    await page.fill('#search', 'CI');
    assert.deepEqual((await rows()).sort(), ['ci-fallback', 'ci-leave', 'ci-page', 'old-ci']);
    assert.match(await page.textContent('#count'), /^4 of \d+ tokens shown\.$/);
    await page.fill('#search', '');
    await shot('05-sorted');
  });

  it('renames: the rule, the API\'s error in the dialog, then the new name; the token keeps working', T, async () => {
    needsPage();
    await page.getByRole('button', { name: 'Rename ci-page' }).click();
    const dialog = page.locator('#rename-dialog');
    await dialog.waitFor({ state: 'visible' });
    assert.equal(await page.inputValue('#new-name'), 'ci-page');
    await page.fill('#new-name', 'bad name');
    assert.match(await page.textContent('#new-name-rule'), /Not allowed: space/);
    await dialog.getByRole('button', { name: 'Rename' }).click();
    assert.equal(await dialog.isVisible(), true);
    assert.ok(storeNames().includes('ci-page'));

    world.store.create('alice', 'taken-elsewhere'); // behind the page's back: only the API knows
    await page.fill('#new-name', 'taken-elsewhere');
    await dialog.getByRole('button', { name: 'Rename' }).click();
    await page.waitForSelector('#rename-errors li');
    assert.match(await page.textContent('#rename-errors'), /taken-elsewhere/);
    assert.equal(await dialog.isVisible(), true);
    await shot('06-rename-error');

    await page.fill('#new-name', 'ci-renamed');
    await dialog.getByRole('button', { name: 'Rename' }).click();
    await dialog.waitFor({ state: 'hidden' });
    assert.match(await statusMatching(/renamed/), /“ci-page” renamed to “ci-renamed”/);
    await page.waitForSelector('#token-rows tr[data-name="ci-renamed"]');
    assert.ok(!(await rows()).includes('ci-page'));
    const names = storeNames();
    assert.ok(names.includes('ci-renamed') && !names.includes('ci-page'), names.join(' '));
    tokens['ci-renamed'] = tokens['ci-page'];
    assert.equal(await protectedStatus(tokens['ci-renamed']), 200);
  });

  it('changes the expiry: a date, refused in the past, then never', T, async () => {
    needsPage();
    const dialog = page.locator('#expiry-dialog');
    await page.getByRole('button', { name: 'Change expiry ci-renamed' }).click();
    await dialog.waitFor({ state: 'visible' });
    assert.equal(await dialog.getByLabel('On a date').isChecked(), true); // it expires in 30 days now

    await dialog.locator('input[type=date]').fill(localDate(-2 * DAY));
    await dialog.getByRole('button', { name: 'Save expiry' }).click();
    await page.waitForSelector('#expiry-errors li');
    assert.match(await page.textContent('#expiry-errors'), /must be in the future/);

    const chosen = localDate(3 * DAY); // once: a second call could fall after midnight
    await dialog.locator('input[type=date]').fill(chosen);
    await dialog.getByRole('button', { name: 'Save expiry' }).click();
    await dialog.waitFor({ state: 'hidden' });
    await statusMatching(/now expires/);
    await page.waitForFunction(() => /\bsoon\b/.test(document.querySelector('#token-rows tr[data-name="ci-renamed"]').className));
    assert.match(await text(cell('ci-renamed', 2)), /^Expires in [34] days /);
    const expires = new Date(world.store.list('alice')['ci-renamed'].expires);
    assert.equal(localDate((expires.getTime() - Date.now()) / 1000), chosen);

    await page.getByRole('button', { name: 'Change expiry ci-renamed' }).click();
    await dialog.getByLabel('Never').check();
    await dialog.getByRole('button', { name: 'Save expiry' }).click();
    await dialog.waitFor({ state: 'hidden' });
    await statusMatching(/no longer expires/);
    await page.waitForFunction(() => document.querySelector('#token-rows tr[data-name="ci-renamed"] > :nth-child(3)').textContent === 'never');
    assert.equal(world.store.list('alice')['ci-renamed'].expires, null);
  });

  it('revokes after a confirmation naming the token; the next request is refused', T, async () => {
    needsPage();
    const dialog = page.locator('#confirm-dialog');
    await page.getByRole('button', { name: 'Revoke ci-renamed' }).click();
    await dialog.waitFor({ state: 'visible' });
    assert.equal(await page.textContent('#confirm-h'), 'Revoke “ci-renamed”?');
    await shot('07-confirm-revoke');
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    await dialog.waitFor({ state: 'hidden' });
    assert.ok(storeNames().includes('ci-renamed'));
    assert.equal(await protectedStatus(tokens['ci-renamed']), 200);

    await page.getByRole('button', { name: 'Revoke ci-renamed' }).click();
    await page.click('#confirm-ok');
    await dialog.waitFor({ state: 'hidden' });
    assert.equal(await statusMatching(/revoked/), 'Token “ci-renamed” revoked.');
    assert.equal(await protectedStatus(tokens['ci-renamed']), 401);
    assert.ok(!(await rows()).includes('ci-renamed'));
    assert.ok(!storeNames().includes('ci-renamed'));
  });

  it('revokes several selected tokens at once', T, async () => {
    needsPage();
    await page.getByLabel('ci-leave', { exact: true }).check();
    await page.getByLabel('ci-fallback', { exact: true }).check();
    assert.equal(await text(page.locator('#revoke-selected')), 'Revoke selected (2)');
    await page.click('#revoke-selected');
    const dialog = page.locator('#confirm-dialog');
    await dialog.waitFor({ state: 'visible' });
    assert.deepEqual(await page.$$eval('#confirm-list li', (li) => li.map((e) => e.textContent)), ['ci-fallback', 'ci-leave']);
    await page.click('#confirm-ok');
    await dialog.waitFor({ state: 'hidden' });
    assert.equal(await statusMatching(/Revoked/), 'Revoked: ci-fallback, ci-leave.');
    for (const n of ['ci-leave', 'ci-fallback']) {
      assert.equal(await protectedStatus(tokens[n]), 401, n);
      assert.ok(!(await rows()).includes(n), n);
    }
    assert.equal(await page.isDisabled('#revoke-selected'), true);
  });

  it('revokes the tokens unused for N days, after a confirmation', T, async () => {
    needsPage();
    await refresh();
    const before = storeNames();
    await page.fill('#unused-days', '30');
    await page.click('#unused-form button[type=submit]');
    const dialog = page.locator('#confirm-dialog');
    await dialog.waitFor({ state: 'visible' });
    assert.equal(await page.textContent('#confirm-h'), 'Revoke tokens unused for 30 days?');
    if (world.usage) {
      assert.deepEqual(await page.$$eval('#confirm-list li', (li) => li.map((e) => e.textContent)), ['expired-one', 'old-ci']);
      await page.click('#confirm-ok');
      await dialog.waitFor({ state: 'hidden' });
      const said = await statusMatching(/Revoked|No token/);
      assert.equal(said, 'Revoked: expired-one, old-ci.');
      assert.deepEqual(storeNames(), before.filter((n) => n !== 'expired-one' && n !== 'old-ci'));
      assert.ok(!(await rows()).includes('old-ci'));
    } else {
      // the API refuses to call a token unused when it cannot know: its error shows, nothing is revoked
      await page.click('#confirm-ok');
      await page.waitForSelector('#confirm-errors li');
      assert.ok((await page.textContent('#confirm-errors')).length > 0);
      await dialog.getByRole('button', { name: 'Cancel' }).click();
      await dialog.waitFor({ state: 'hidden' });
      assert.deepEqual(storeNames(), before);
    }
  });

  it('works with the keyboard alone; every control has a visible label and every button its text', T, async () => {
    needsPage();
    await page.focus('#name');
    await page.keyboard.type('kbd-token');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#created:not([hidden])');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'created-h');
    for (let i = 0; i < 10 && await page.evaluate(() => document.activeElement.id) !== 'saved'; i += 1) {
      await page.keyboard.press('Tab');
    }
    assert.equal(await page.evaluate(() => document.activeElement.id), 'saved');
    await page.keyboard.press('Enter');
    assert.equal(await page.isHidden('#created'), true);
    assert.equal(await page.evaluate(() => document.activeElement.id), 'name');

    const revoke = page.getByRole('button', { name: 'Revoke kbd-token' });
    await revoke.focus();
    await page.keyboard.press('Enter');
    await page.locator('#confirm-dialog').waitFor({ state: 'visible' });
    assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Cancel');
    await page.keyboard.press('Escape');
    await page.locator('#confirm-dialog').waitFor({ state: 'hidden' });
    await page.waitForFunction(() => document.activeElement.textContent === 'Revoke kbd-token');
    await page.keyboard.press('Enter');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'confirm-ok');
    await page.keyboard.press('Enter');
    await statusMatching(/“kbd-token” revoked/);
    assert.ok(!storeNames().includes('kbd-token'));
    assert.equal(await page.evaluate(() => document.activeElement.id), 'tokens-h'); // its row is gone

    const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
      .filter((e) => !(e.labels && [...e.labels].some((l) => l.textContent.trim() !== '')))
      .map((e) => e.outerHTML));
    assert.deepEqual(unlabelled, []);
    const hiddenLabels = await page.evaluate(() => [...document.querySelectorAll('main input, main select, main textarea')]
      .filter((e) => e.getClientRects().length && ![...e.labels].some((l) => l.getClientRects().length && !l.closest('.vh')))
      .map((e) => e.outerHTML));
    assert.deepEqual(hiddenLabels, []);
    const mute = await page.evaluate(() => [...document.querySelectorAll('button')]
      .filter((b) => b.textContent.trim() === '').map((b) => b.outerHTML));
    assert.deepEqual(mute, []);
  });

  it('another origin\'s page cannot make a write, with the browser\'s credentials', T, async () => {
    needsPage();
    const mark = world.manager.accessLog().length;
    const before = storeNames();
    const p = await context.newPage(); // not watched: its tries fail on purpose
    await p.goto(`${world.other.url}/attack.html?target=${encodeURIComponent(`${world.manager.url}/cptoken/`)}`);
    await p.waitForFunction(() => document.getElementById('result').textContent !== '', null, { timeout: 30000 });
    const results = Object.fromEntries(JSON.parse(await p.textContent('#result')).map((r) => [r.what, r]));
    assert.equal(results['read session'].outcome, 'failed', JSON.stringify(results)); // no CORS: nothing to read
    assert.equal(results['json POST'].outcome, 'failed', JSON.stringify(results)); // the preflight fails
    // a top-level form POST, which browsers send with credentials
    const [resp] = await Promise.all([p.waitForNavigation(), p.click('#form button')]);
    assert.equal(resp.status(), 403);
    await shot('08-other-origin', p);
    await p.close();

    const after = storeNames();
    assert.deepEqual(after, before);
    assert.ok(after.includes('deploy'));
    const lines = world.manager.accessLog().slice(mark).split('\n').filter((l) => /\/cptoken\/execute\//.test(l));
    assert.ok(lines.some((l) => /"POST \/cptoken\/execute\/Tokens\/create_full_access [^"]*" 403$/.test(l)), lines.join('\n'));
    assert.deepEqual(lines.filter((l) => / 2\d\d$/.test(l) && !/CPTokens\/session/.test(l)), []);
  });

  it('follows the system\'s dark mode', T, async () => {
    needsPage();
    const light = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    await page.emulateMedia({ colorScheme: 'dark' });
    const dark = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.notEqual(dark, light);
    await shot('09-dark');
    await page.emulateMedia({ colorScheme: 'light' });
  });

  it('had no script error, console error or CSP violation', () => {
    assert.deepEqual(problems, []);
  });

  it('left no unexpected warning in the servers\' error logs', () => {
    // CPT0104: the other origin's tries, refused; CPT0100: wrong and revoked tokens, refused
    assert.deepEqual(world.manager.unexpectedLines(['CPT0104']), []);
    assert.deepEqual(world.protected.unexpectedLines(['CPT0100']), []);
  });
});
