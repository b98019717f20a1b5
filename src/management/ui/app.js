// The console: login, the vhost selector, hash routes to pages, and a 5 s refresh of the page
// shown. A page is mounted into <main> once and then refreshed (forms keep what was typed).

import { get, credentials, setCredentials, clearCredentials, onLoggedOut, selectedVhost, selectVhost, vhostNames } from './api.js';
import { h, fill, errorBox, clock } from './dom.js';
import * as overview from './overview.js';
import * as queues from './queues.js';
import * as exchanges from './exchanges.js';
import * as connections from './connections.js';
import * as admin from './admin.js';

const REFRESH_MS = 5000;

// route: [nav page, pattern, mount(main, params, ctx)]
const ROUTES = [
  ['overview', /^overview$/, overview.mount],
  ['queues', /^queues$/, queues.mountList],
  ['queues', /^queues\/([^/]+)\/([^/]+)$/, queues.mountOne],
  ['exchanges', /^exchanges$/, exchanges.mountList],
  ['exchanges', /^exchanges\/([^/]+)\/([^/]+)$/, exchanges.mountOne],
  ['connections', /^connections$/, connections.mountList],
  ['connections', /^connections\/([^/]+)$/, connections.mountOne],
  ['channels', /^channels$/, connections.mountChannels],
  ['admin', /^admin(?:\/([a-z]+))?$/, admin.mount],
];

const $ = (id) => document.getElementById(id);

let page = null; // the mounted page: {refresh?}
let timer = null;
let running = null; // the generation whose refresh is under way
let generation = 0; // bumped on every mount: a new page refreshes at once, an old one's result is ignored

const ctx = { vhostsChanged: () => loadVhosts() };

function route() {
  const hash = location.hash.replace(/^#\/?/, '') || 'overview';
  for (const [nav, re, mount] of ROUTES) {
    const m = hash.match(re);
    if (m) return { nav, mount, params: m.slice(1).filter((x) => x !== undefined).map(decodeURIComponent) };
  }
  return null;
}

function show() {
  const r = route();
  document.body.dataset.route = location.hash.replace(/^#\/?/, '');
  const main = $('main');
  generation++;
  page = null;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', r && a.dataset.page === r.nav);
  if (!r) {
    fill(main, h('h1', null, 'Not found'), h('p', null, h('a', { href: '#/overview' }, 'Back to the overview')));
    return;
  }
  try {
    page = r.mount(main, r.params, ctx) || {};
  } catch (e) {
    fill(main, errorBox(e));
    return;
  }
  refresh();
}

async function refresh() {
  if (running === generation || !page || !page.refresh || document.hidden) return;
  const mine = generation;
  running = mine;
  try {
    await page.refresh();
    if (mine === generation) $('refreshed').textContent = `last ${clock(Date.now())}`;
  } finally {
    if (running === mine) running = null;
  }
}

async function loadVhosts() {
  const sel = $('vhost-select');
  try {
    const names = await vhostNames();
    const current = selectedVhost();
    fill(sel, h('option', { value: '' }, 'All'), names.map((n) => h('option', { value: n }, n)));
    sel.value = names.includes(current) ? current : '';
    if (sel.value !== current) selectVhost(sel.value);
  } catch {
    // the pages show the API's error themselves
  }
}

function showLogin(reason) {
  clearInterval(timer);
  timer = null;
  page = null;
  $('app').hidden = true;
  $('login').hidden = false;
  const err = $('login-error');
  err.textContent = reason || '';
  err.hidden = !reason;
  $('login-pass').value = '';
  $($('login-user').value ? 'login-pass' : 'login-user').focus();
}

async function start() {
  const me = await get('/api/whoami');
  $('whoami').textContent = `${me.name} (${[].concat(me.tags || []).join(', ') || 'no tags'})`;
  $('login').hidden = true;
  $('app').hidden = false;
  await loadVhosts();
  show();
  clearInterval(timer);
  timer = setInterval(refresh, REFRESH_MS);
}

async function login(e) {
  e.preventDefault();
  const button = $('login-submit');
  button.disabled = true;
  $('login-error').hidden = true;
  setCredentials($('login-user').value, $('login-pass').value);
  try {
    await start();
  } catch (err) {
    clearCredentials();
    showLogin(err.message);
  } finally {
    button.disabled = false;
  }
}

onLoggedOut((reason) => showLogin(reason));
$('login-form').addEventListener('submit', login);
$('logout').addEventListener('click', () => {
  clearCredentials();
  showLogin('');
});
$('vhost-select').addEventListener('change', (e) => {
  selectVhost(e.target.value);
  show();
});
window.addEventListener('hashchange', () => {
  if (credentials()) show();
});
document.addEventListener('visibilitychange', refresh);

if (credentials()) {
  start().catch((err) => showLogin(err.message));
} else {
  showLogin('');
}
