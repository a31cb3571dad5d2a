// SPDX-License-Identifier: Apache-2.0
// The real things the browser tests run against (no stand-ins):
//  - a token store made by the built `cptoken`, owned by the manager's user
//    (default `cptoken`, made if missing, as `make demo` does), group www-data;
//  - the manager: a private httpd with build/mod_cptoken.so whose children run
//    as that user (CPTokenTrustOwnStore On), the page under /cptoken/ (Alias to
//    a copy of manager/page/, as installed) behind Basic auth (mod_authn_file,
//    an htpasswd made by `htpasswd`), `SetHandler cptoken-manager` for
//    /cptoken/execute/ and, for scripts, /execute/Tokens/ and /execute/CPTokens/
//    with AuthType cpanel;
//  - the protected location: another private httpd, children www-data (a
//    reader of the store), /protected/ with AuthType cpanel;
//  - another origin: a tiny Node server on a third port serving a page that
//    tries to make the manager write.
// Everything lives in one temporary directory, removed at the end unless
// CPTOKEN_BROWSER_KEEP is set. Run as root (httpd starts as root).
'use strict';

const { execFileSync, spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const MOD = process.env.MOD_CPTOKEN || path.join(ROOT, 'build', 'mod_cptoken.so');
const CPTOKEN = process.env.CPTOKEN || path.join(ROOT, 'build', 'cptoken');
const APACHE = '/usr/sbin/apache2';
const MODDIR = '/usr/lib/apache2/modules';
const HTPASSWD = '/usr/bin/htpasswd';
const FAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';
const OWNER = process.env.CPTOKEN_BROWSER_OWNER || 'cptoken';
const HTTPD_USER = 'www-data';
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
  + "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30000, ...opts });
  if (r.error) throw r.error;
  if (r.status !== 0 && !opts.allowFail) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
  }
  return r;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function portOpen(port) {
  return new Promise((resolve) => {
    const c = net.connect({ host: '127.0.0.1', port });
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
    c.setTimeout(300, () => { c.destroy(); resolve(false); });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// httpd runs in its own process group: should this process end before
// stop(), the servers it started are stopped anyway (by their own pids).
const running = new Set();
function stopAllNow() {
  for (const p of running) {
    try { process.kill(p.pid, 'SIGTERM'); } catch (e) { /* gone */ }
  }
  running.clear();
}
process.on('exit', stopAllNow);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGPIPE']) {
  process.once(sig, () => { stopAllNow(); process.kill(process.pid, sig); });
}

// The user the manager's children run as: made (a system user with its own
// group, no home, no shell) when missing.
function ensureOwner() {
  if (sh('id', ['-u', OWNER], { allowFail: true }).status !== 0) {
    sh('useradd', ['--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent',
      '--shell', '/usr/sbin/nologin', OWNER]);
  }
  const uid = Number(sh('id', ['-u', OWNER]).stdout.trim());
  const gid = Number(sh('id', ['-g', OWNER]).stdout.trim());
  return { uid, gid };
}

class Store {
  constructor(dir) { this.dir = dir; }

  run(args, env = {}) {
    const e = { ...process.env, LC_ALL: 'C', ...env };
    delete e.CPTOKEN_DB;
    return sh(CPTOKEN, ['--db', this.dir, ...args], { env: e, stdio: ['ignore', 'pipe', 'pipe'] }).stdout;
  }

  create(user, name, ...extra) {
    const out = this.run(['create', user, name, ...extra]).trim();
    if (!/^[A-Z0-9]{32}$/.test(out)) throw new Error(`cptoken create printed ${out}`);
    return out;
  }

  // A token made `daysAgo` days ago (libfaketime, as t/tool/test_unused.py does).
  createInThePast(user, name, daysAgo, ...extra) {
    const out = this.run(['create', user, name, ...extra], { LD_PRELOAD: FAKETIME, FAKETIME: `-${daysAgo}d` }).trim();
    if (!/^[A-Z0-9]{32}$/.test(out)) throw new Error(`cptoken create printed ${out}`);
    return out;
  }

  // `cptoken list USER --json`: the user's tokens by name.
  list(user) {
    const out = JSON.parse(this.run(['list', user, '--json']));
    return Object.fromEntries(out.map((t) => [t.name, t]));
  }
}

const COMMON = `
ServerRoot "@DIR@"
PidFile "@DIR@/httpd.pid"
DefaultRuntimeDir "@DIR@/run"
ServerName 127.0.0.1
Listen 127.0.0.1:@PORT@
User @USER@
Group @GROUP@
Timeout 20
ErrorLog "@DIR@/error.log"
LogLevel warn cptoken:info
LoadModule mpm_event_module ${MODDIR}/mod_mpm_event.so
StartServers 1
ServerLimit 2
ThreadsPerChild 8
ThreadLimit 8
MinSpareThreads 2
MaxSpareThreads 16
MaxRequestWorkers 16
LoadModule authn_core_module ${MODDIR}/mod_authn_core.so
LoadModule authz_core_module ${MODDIR}/mod_authz_core.so
LoadModule authz_user_module ${MODDIR}/mod_authz_user.so
LoadModule auth_basic_module ${MODDIR}/mod_auth_basic.so
LoadModule authn_file_module ${MODDIR}/mod_authn_file.so
LoadModule headers_module ${MODDIR}/mod_headers.so
LoadModule alias_module ${MODDIR}/mod_alias.so
LoadModule mime_module ${MODDIR}/mod_mime.so
LoadModule dir_module ${MODDIR}/mod_dir.so
TypesConfig /etc/mime.types
LoadModule cptoken_module "${MOD}"
LogFormat "%a %u \\"%r\\" %>s" short
CustomLog "@DIR@/access.log" short
CPTokenDB "@STORE@"
DocumentRoot "@DIR@/htdocs"
<Directory "@DIR@/htdocs">
    Require all granted
</Directory>
`;

// The manager instance as docs/manager.md sets it up (its children own the
// store and never open usage.slots), with the demo's Basic auth in front of the
// page. The page's own static files get the manager's headers from this
// config; the API's answers from the handler.
const MANAGER = `
CPTokenTrustOwnStore On
CPTokenLastUsed Off
@USAGE@
Alias /cptoken/ "@PAGE@/"
<Directory "@PAGE@">
    Options None
    AllowOverride None
    Require all granted
</Directory>
<Location "/cptoken/">
    AuthType Basic
    AuthName "Manage API Tokens"
    AuthBasicProvider file
    AuthUserFile "@HTPASSWD@"
    Require valid-user
</Location>
<LocationMatch "^/cptoken/(?!execute/)">
    Header always set Content-Security-Policy "${CSP}"
    Header always set Cache-Control "no-store"
    Header always set Referrer-Policy "no-referrer"
    Header always set X-Content-Type-Options "nosniff"
</LocationMatch>
<Location "/cptoken/execute/">
    SetHandler cptoken-manager
</Location>
<LocationMatch "^/execute/(Tokens|CPTokens)/">
    SetHandler cptoken-manager
    AuthType cpanel
    AuthName "cPanel"
    CPTokenSchemes cpanel
    Require valid-user
</LocationMatch>
`;

const PROTECTED = `
<Location "/protected/">
    AuthType cpanel
    AuthName "protected"
    Require valid-user
</Location>
`;

class Httpd {
  constructor(base, name, { user, group, body, store }) {
    this.dir = path.join(base, name);
    this.name = name;
    fs.mkdirSync(path.join(this.dir, 'run'), { recursive: true, mode: 0o755 });
    fs.mkdirSync(path.join(this.dir, 'htdocs', 'protected'), { recursive: true, mode: 0o755 });
    fs.chmodSync(this.dir, 0o755);
    fs.writeFileSync(path.join(this.dir, 'htdocs', 'protected', 'index.html'), 'protected: ok\n');
    this.user = user;
    this.group = group;
    this.body = body;
    this.store = store;
    this.proc = null;
  }

  config(port) {
    const subst = {
      '@DIR@': this.dir, '@PORT@': String(port), '@USER@': this.user, '@GROUP@': this.group, '@STORE@': this.store,
    };
    let text = COMMON + this.body;
    for (const [k, v] of Object.entries(subst)) text = text.split(k).join(v);
    return text;
  }

  // Starts httpd; returns '' when it answers, else what it said when it exited.
  async tryStart(body) {
    if (body !== undefined) this.body = body;
    this.port = await freePort();
    this.conf = path.join(this.dir, 'httpd.conf');
    fs.writeFileSync(this.conf, this.config(this.port));
    const out = fs.openSync(path.join(this.dir, 'stdout.txt'), 'w');
    this.proc = spawn(APACHE, ['-f', this.conf, '-D', 'FOREGROUND'], { stdio: ['ignore', out, out], detached: true });
    running.add(this.proc);
    const proc = this.proc;
    proc.once('exit', () => running.delete(proc));
    fs.closeSync(out);
    const end = Date.now() + 10000;
    while (Date.now() < end) {
      if (this.proc.exitCode !== null) {
        this.proc = null;
        return this.output();
      }
      if (await portOpen(this.port)) return '';
      await sleep(50);
    }
    await this.stop();
    throw new Error(`${this.name}: httpd did not answer on port ${this.port}:\n${this.output()}`);
  }

  async start(body) {
    const failed = await this.tryStart(body);
    if (failed) throw new Error(`${this.name}: httpd exited at start:\n${failed}`);
    return this;
  }

  output() {
    const read = (f) => { try { return fs.readFileSync(path.join(this.dir, f), 'utf8'); } catch (e) { return ''; } };
    return `--- stdout ---\n${read('stdout.txt')}--- error.log ---\n${read('error.log')}`;
  }

  get url() { return `http://127.0.0.1:${this.port}`; }

  // Error-log lines at warn level or above whose tag is not in `allowed`.
  unexpectedLines(allowed) {
    let log = '';
    try { log = fs.readFileSync(path.join(this.dir, 'error.log'), 'utf8'); } catch (e) { return []; }
    return log.split('\n').filter((l) => /^\[[^\]]*\] \[(?:[^\]:]*:)?(warn|error|crit|alert|emerg)\]/.test(l)
      && !allowed.some((tag) => l.includes(`${tag}:`)));
  }

  accessLog() {
    try { return fs.readFileSync(path.join(this.dir, 'access.log'), 'utf8'); } catch (e) { return ''; }
  }

  async stop() {
    const p = this.proc;
    if (!p) return;
    this.proc = null;
    if (p.exitCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    const timer = setTimeout(() => { try { process.kill(-p.pid, 'SIGKILL'); } catch (e) { /* gone */ } }, 20000);
    await exited;
    clearTimeout(timer);
  }
}

// The other origin: /attack.html, a page that tries to make the manager at
// ?target= write, and reports what happened in its DOM (#result, JSON).
const ATTACK_PAGE = fs.readFileSync(path.join(__dirname, 'attack.html'), 'utf8');

function startOtherOrigin() {
  const server = http.createServer((req, res) => {
    if (req.url.startsWith('/attack.html')) {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end(ATTACK_PAGE);
    } else {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not here\n');
    }
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({
      server, url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)),
    }));
  });
}

// One plain request (no browser): { status, body, headers }.
function request(url, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.setTimeout(15000, () => req.destroy(new Error(`timeout: ${url}`)));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

// Everything up: returns the world the tests use; world.stop() ends it.
async function startWorld() {
  for (const f of [MOD, CPTOKEN]) {
    if (!fs.existsSync(f)) throw new Error(`${f} is missing: build it first (make)`);
  }
  if (process.getuid() !== 0) throw new Error('the browser tests start httpd and so need root');
  const owner = ensureOwner();
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'cptoken-browser-'));
  fs.chmodSync(base, 0o755);

  // The store: made by root for group www-data, fixtures added, then given to
  // the manager's user (who alone may write it, as `cptoken init --owner` does).
  const store = new Store(path.join(base, 'store'));
  store.run(['init', '--group', HTTPD_USER]);
  const fixtures = {
    deploy: store.create('alice', 'deploy', '--allow-ip', '127.0.0.1', '--allow-ip', '192.0.2.0/24'),
    backup: store.create('alice', 'backup', '--expires', '+3d', '--scope', '/protected/', '--safe-methods'),
    'old-ci': store.createInThePast('alice', 'old-ci', 40),
    'expired-one': store.createInThePast('alice', 'expired-one', 100, '--expires', '+30d'),
    'bob-token': store.create('bob', 'bob-token'),
  };
  for (const entry of [store.dir, ...fs.readdirSync(store.dir).map((f) => path.join(store.dir, f))]) {
    fs.lchownSync(entry, owner.uid, fs.lstatSync(entry).gid);
  }

  // The page as installed (a copy, readable by the manager's user), and the
  // password file of the page's Basic auth.
  const page = path.join(base, 'page');
  fs.mkdirSync(page, { mode: 0o755 });
  for (const f of fs.readdirSync(path.join(ROOT, 'manager', 'page'))) {
    fs.copyFileSync(path.join(ROOT, 'manager', 'page', f), path.join(page, f));
    fs.chmodSync(path.join(page, f), 0o644);
  }
  const htpasswd = path.join(base, 'htpasswd');
  const password = 'page-password-1';
  sh(HTPASSWD, ['-cbB', htpasswd, 'alice', password]);
  sh(HTPASSWD, ['-bB', htpasswd, 'bob', 'bob-password-1']);
  fs.chownSync(htpasswd, 0, owner.gid);
  fs.chmodSync(htpasswd, 0o640);

  const managerBody = (usage) => MANAGER
    .replace('@USAGE@', usage ? `CPTokenUsageSocket "${path.join(base, 'usage.sock')}"` : '')
    .split('@PAGE@').join(page)
    .split('@HTPASSWD@').join(htpasswd);
  const manager = new Httpd(base, 'manager', { user: OWNER, group: OWNER, body: managerBody(true), store: store.dir });
  const protectedSrv = new Httpd(base, 'protected', { user: HTTPD_USER, group: HTTPD_USER, body: PROTECTED, store: store.dir });

  const world = {
    base, store, fixtures, manager, protected: protectedSrv, user: 'alice', password, other: null, usage: true,
    async stop() {
      await Promise.all([manager.stop(), protectedSrv.stop(), world.other ? world.other.close() : null]);
    },
    // The logs of both servers, copied next to the screenshots.
    keepLogs(dir) {
      fs.mkdirSync(dir, { recursive: true });
      for (const s of [manager, protectedSrv]) {
        for (const f of ['error.log', 'access.log', 'httpd.conf', 'stdout.txt']) {
          const from = path.join(s.dir, f);
          if (fs.existsSync(from)) fs.copyFileSync(from, path.join(dir, `${s.name}-${f}`));
        }
      }
    },
    remove() {
      if (!process.env.CPTOKEN_BROWSER_KEEP) fs.rmSync(base, { recursive: true, force: true });
    },
  };
  try {
    // Last used in the manager comes from its usage reader (CPTokenUsageSocket);
    // a module without that directive answers "unavailable", which the page shows.
    const failed = await manager.tryStart();
    if (failed) {
      if (!/Invalid command 'CPTokenUsageSocket'/.test(failed)) throw new Error(`manager: httpd exited at start:\n${failed}`);
      world.usage = false;
      await manager.start(managerBody(false));
    }
    await protectedSrv.start();
    world.other = await startOtherOrigin();
  } catch (e) {
    await world.stop();
    world.remove();
    throw e;
  }
  return world;
}

module.exports = { startWorld, request, sleep, CSP, ROOT };
