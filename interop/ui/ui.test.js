// Warren's management web UI in headless Chromium (Debian's /usr/bin/chromium, driven by
// puppeteer-core; no browser download). Against the broker named by $MGMT_URL (the HTTP
// listener, e.g. http://127.0.0.1:15672) and $AMQP_URL.
//
// A user's path through the console, each step checked on the page and, where it changes the
// broker, through the API: a wrong password shows the API's reason; log in through the form;
// declare a queue; publish to it and watch its depth change; get a message and see its payload;
// purge and see 0; create a user (then it exists and can log in); close an AMQP connection
// from its page (the client receives 320 with the reason typed); download the definitions.
// Screenshots of the main pages go to $SCREENSHOT_DIR (default target/ui-screenshots).
//
// Every wait is for an event or a value shown on the page (waitForSelector / waitForFunction),
// bounded by WAIT_MS, never a fixed sleep: a loaded 2-core machine only makes it slower.

'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const amqp = require('amqplib');
const puppeteer = require('puppeteer-core');

const MGMT_URL = process.env.MGMT_URL;
const AMQP_URL = process.env.AMQP_URL;
if (!MGMT_URL || !AMQP_URL) {
  console.error('MGMT_URL and AMQP_URL must be set (interop/with-warren.sh sets both)');
  process.exit(2);
}
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOT_DIR || path.resolve(__dirname, '../../target/ui-screenshots');
const WAIT_MS = 30_000; // for any one thing to show up on the page
const STEP = { timeout: 90_000 };
const ADMIN = { user: 'guest', password: 'guest' };

const id = `${process.pid}-${crypto.randomBytes(3).toString('hex')}`;
const QUEUE = `ui-test-${id}`;
const USER = `ui-user-${id}`;
const VHOST = `ui-vhost-${id}`;
const POLICY = `ui-policy-${id}`;
const DEMO_QUEUE = `ui-demo-orders-${id}`;

let browser;
let page;
let demo; // an AMQP connection that keeps some traffic going, so the charts have data
const pageErrors = []; // uncaught exceptions in the page

function within(promise, what, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// The management API, called from the test (not through the page).
async function api(method, url, { auth = ADMIN, body } = {}) {
  const headers = { Authorization: 'Basic ' + Buffer.from(`${auth.user}:${auth.password}`).toString('base64') };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(MGMT_URL + url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

const enc = encodeURIComponent;

// Show a page (a hash route) and wait until the console has mounted it.
async function go(hash) {
  await page.evaluate((h) => {
    location.hash = h;
  }, hash);
  await page.waitForFunction((h) => document.body.dataset.route === h.replace(/^#\/?/, ''), {}, hash);
}

// Click an element once it is on the page (pages render from API answers, a moment later).
// The click is dispatched in the page, found again at that moment: a table that a 5 s refresh
// has just redrawn holds a new element under the same selector.
async function click(selector) {
  await page.waitForSelector(selector, { visible: true });
  await page.$eval(selector, (el) => el.click());
}

// Wait until the text of `selector` is `expected` (trimmed).
async function textIs(selector, expected) {
  await page.waitForFunction(
    (s, want) => {
      const el = document.querySelector(s);
      return el && el.textContent.trim() === want;
    },
    { timeout: WAIT_MS },
    selector,
    expected,
  );
}

async function typeInto(selector, text) {
  await page.waitForSelector(selector, { visible: true });
  await page.$eval(selector, (el) => {
    el.value = '';
  });
  await page.type(selector, text);
}

async function submit(formSelector) {
  await click(`${formSelector} button[type=submit]`);
}

async function shot(name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.$$eval('.notice', (all) => all.forEach((n) => n.remove())); // transient toasts
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

// A row of a UI table by its data-key (an object's name).
const row = (table, key) => `#${table} tr[data-key="${key.replace(/["\\]/g, '\\$&')}"]`;

before(async () => {
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // root in CI has no user namespaces for the sandbox; /dev/shm may be small in containers
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--no-first-run'],
    protocolTimeout: 120_000,
  });
  page = await browser.newPage();
  page.setDefaultTimeout(WAIT_MS);
  await page.setViewport({ width: 1280, height: 900 });
  page.on('dialog', (d) => d.accept()); // confirm() before purge, delete, close
  page.on('pageerror', (e) => pageErrors.push(e.message));

  // Some traffic for the charts: a queue that is published to and consumed from all along.
  demo = await amqp.connect(AMQP_URL, { clientProperties: { connection_name: 'ui-test demo traffic' } });
  const ch = await demo.createChannel();
  const q = DEMO_QUEUE;
  await ch.assertQueue(q, { durable: false, autoDelete: true });
  // Consumed more slowly than published, so that the queue grows and the chart shows it.
  await ch.prefetch(2);
  await ch.consume(q, (m) => {
    if (!m) return;
    setTimeout(() => {
      try {
        ch.ack(m);
      } catch {
        // the channel closed at the end of the run
      }
    }, 100);
  });
  let n = 0;
  demo.timer = setInterval(() => {
    for (let i = 0; i < 20; i++) ch.sendToQueue(q, Buffer.from(JSON.stringify({ order: n++ })));
  }, 500);
});

after(async () => {
  if (demo) {
    clearInterval(demo.timer);
    await demo.close().catch(() => {});
  }
  if (browser) await browser.close();
  await api('DELETE', `/api/queues/%2F/${enc(QUEUE)}`).catch(() => {});
  await api('DELETE', `/api/users/${enc(USER)}`).catch(() => {});
  await api('DELETE', `/api/vhosts/${enc(VHOST)}`).catch(() => {});
});

test('the page and its assets are served without login, with their content types', STEP, async () => {
  const res = await fetch(MGMT_URL + '/');
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/html/);
  assert.match(res.headers.get('content-security-policy'), /script-src 'self'/);
  const js = await fetch(MGMT_URL + '/ui/app.js');
  assert.equal(js.status, 200);
  assert.match(js.headers.get('content-type'), /^text\/javascript/);
  const again = await fetch(MGMT_URL + '/ui/app.js', { headers: { 'If-None-Match': js.headers.get('etag') } });
  assert.equal(again.status, 304);
  assert.equal((await fetch(MGMT_URL + '/api/overview')).status, 401, 'the API itself still needs a login');
});

test('a wrong password shows the API reason on the login form', STEP, async () => {
  await page.goto(MGMT_URL + '/', { waitUntil: 'domcontentloaded' });
  await typeInto('#login-user', ADMIN.user);
  await typeInto('#login-pass', 'not-the-password');
  await submit('#login-form');
  await page.waitForSelector('#login-error', { visible: true });
  assert.equal(await page.$eval('#login-error', (e) => e.textContent), 'Login failed');
  assert.equal(await page.$eval('#app', (e) => e.hidden), true, 'the console stays hidden');
  await shot('login-refused');
});

test('logs in through the form', STEP, async () => {
  await typeInto('#login-user', ADMIN.user);
  await typeInto('#login-pass', ADMIN.password);
  await submit('#login-form');
  await page.waitForSelector('#app', { visible: true });
  await textIs('#whoami', 'guest (administrator)');
  assert.equal(await page.$eval('#login', (e) => e.hidden), true);
  // The overview fills in from /api/overview: the demo connection is counted.
  await page.waitForFunction(() => Number(document.querySelector('#total-connections')?.textContent) >= 1);
  await page.waitForSelector('#chart-levels svg polyline');
});

test('declares a queue through the UI', STEP, async () => {
  await go('#/queues');
  await typeInto('#q-name', QUEUE);
  await submit('#add-queue');
  await page.waitForSelector(row('queues-table', QUEUE));
  const r = await api('GET', `/api/queues/%2F/${enc(QUEUE)}`);
  assert.equal(r.status, 200);
  assert.equal(r.body.durable, true);
  // The filter narrows the list through the API's `name` parameter.
  await typeInto('#queues-filter', QUEUE);
  await page.waitForFunction((n) => {
    const rows = [...document.querySelectorAll('#queues-table tbody tr')];
    return rows.length === 1 && rows[0].dataset.key === n;
  }, {}, QUEUE);
  await textIs('#queues-counts', `1 of ${(await api('GET', '/api/queues')).body.length} queues match`);
});

test('publishes through the UI and the queue depth changes', STEP, async () => {
  await click(`${row('queues-table', QUEUE)} a`);
  await page.waitForSelector('#publish-form');
  await textIs('#queue-ready', '0');
  await typeInto('#pub-payload', 'first message from the browser');
  await submit('#publish-form');
  await textIs('#queue-ready', '1');
  await typeInto('#pub-payload', 'second');
  await submit('#publish-form');
  await textIs('#queue-ready', '2');
  assert.equal((await api('GET', `/api/queues/%2F/${enc(QUEUE)}`)).body.messages_ready, 2);
  // The list shows the same depth.
  await go('#/queues');
  await textIs(`${row('queues-table', QUEUE)} td[data-col=ready]`, '2');
  await shot('queues');
});

test('gets a message and sees its payload', STEP, async () => {
  await click(`${row('queues-table', QUEUE)} a`);
  await page.waitForSelector('#get-form');
  await textIs('#queue-ready', '2');
  await page.select('#get-ackmode', 'ack_requeue_true');
  await submit('#get-form');
  await textIs('#get-results .message .payload', 'first message from the browser');
  // Requeued: still two.
  await textIs('#queue-ready', '2');
  await shot('queue');
});

test('purges the queue and sees 0', STEP, async () => {
  await click('#purge-queue');
  await textIs('#queue-ready', '0');
  await textIs('#queue-total', '0');
  assert.equal((await api('GET', `/api/queues/%2F/${enc(QUEUE)}`)).body.messages, 0);
});

test('creates a user through the UI', STEP, async () => {
  await go('#/admin/users');
  await typeInto('#user-name', USER);
  await typeInto('#user-password', 'secret-of-the-ui');
  await click('#user-form button[data-tag="monitoring"]'); // a quick-pick tag button
  assert.equal(await page.$eval('#user-tags', (e) => e.value), 'monitoring');
  await submit('#user-form');
  await page.waitForSelector(row('users-table', USER));
  const r = await api('GET', `/api/users/${enc(USER)}`);
  assert.equal(r.status, 200);
  assert.deepEqual([].concat(r.body.tags), ['monitoring']);
  const me = await api('GET', '/api/whoami', { auth: { user: USER, password: 'secret-of-the-ui' } });
  assert.equal(me.status, 200, 'the new user logs in with the password typed');
  assert.equal(me.body.name, USER);
  await shot('users');
});

test('closes an AMQP connection from its page', STEP, async () => {
  const conn = await amqp.connect(AMQP_URL, { clientProperties: { connection_name: 'ui-test victim' } });
  const closed = new Promise((resolve) => conn.on('close', resolve));
  conn.on('error', () => {}); // the forced close is also reported as an error
  const port = conn.connection.stream.localPort;
  await go('#/connections');
  // Its row: the API names a connection "peer -> local", the peer being this client.
  const name = await page.waitForFunction((p) => {
    const r = [...document.querySelectorAll('#connections-table tbody tr')].find((tr) => (tr.dataset.key || '').startsWith(`127.0.0.1:${p} `));
    return r && r.dataset.key;
  }, {}, port).then((h) => h.jsonValue());
  await shot('connections');
  await click(`${row('connections-table', name)} a`);
  await page.waitForSelector('#close-connection');
  await page.waitForSelector('#connection-channels');
  await typeInto('#close-reason', 'closed by the UI test');
  await submit('#close-connection');
  const err = await within(closed, 'the client to see its connection closed');
  assert.match(String(err && err.message), /320/);
  assert.match(String(err && err.message), /closed by the UI test/);
  await page.waitForFunction(() => location.hash === '#/connections');
  await page.waitForFunction((n) => {
    const t = document.querySelector('#connections-table');
    return t && ![...t.querySelectorAll('tbody tr')].some((tr) => tr.dataset.key === n);
  }, {}, name);
});

test('downloads the definitions', STEP, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-ui-defs-'));
  const cdp = await browser.target().createCDPSession();
  await cdp.send('Browser.setDownloadBehavior', { behavior: 'allowAndName', downloadPath: dir, eventsEnabled: true });
  const done = new Promise((resolve, reject) => {
    cdp.on('Browser.downloadProgress', (e) => {
      if (e.state === 'completed') resolve(e.guid);
      if (e.state === 'canceled') reject(new Error('download canceled'));
    });
  });
  await go('#/admin/definitions');
  await click('#download-definitions');
  const guid = await within(done, 'the definitions download');
  const defs = JSON.parse(fs.readFileSync(path.join(dir, guid), 'utf8'));
  assert.ok(defs.queues.some((q) => q.name === QUEUE), 'the durable queue declared through the UI is exported');
  assert.ok(defs.users.some((u) => u.name === USER), 'the user created through the UI is exported');
  await page.waitForFunction(() => /^Downloaded \d+ queues/.test(document.querySelector('#definitions-status').textContent));
  fs.rmSync(dir, { recursive: true, force: true });
});

test('creates a vhost, then creates, edits and deletes a policy in it', STEP, async () => {
  await go('#/admin/vhosts');
  await typeInto('#vhost-name', VHOST);
  await typeInto('#vhost-description', 'made by the UI test');
  await submit('#vhost-form');
  await page.waitForSelector(row('vhosts-table', VHOST));
  assert.equal((await api('GET', `/api/vhosts/${enc(VHOST)}`)).body.description, 'made by the UI test');
  // The header's selector offers the new vhost; choosing it narrows the pages to it.
  await page.waitForSelector(`#vhost-select option[value="${VHOST}"]`);
  await page.select('#vhost-select', VHOST);

  await go('#/admin/policies');
  await page.waitForFunction((v) => document.querySelector('#policy-vhost')?.value === v, {}, VHOST);
  await typeInto('#policy-name', POLICY);
  await typeInto('#policy-pattern', '^ui\\.');
  await page.select('#policy-apply-to', 'queues');
  await typeInto('#policy-definition', '{"max-length": 10}');
  await submit('#policy-form');
  await page.waitForSelector(row('policies-table', POLICY));
  let r = await api('GET', `/api/policies/${enc(VHOST)}/${enc(POLICY)}`);
  assert.equal(r.status, 200);
  assert.deepEqual([r.body.pattern, r.body['apply-to'], r.body.definition], ['^ui\\.', 'queues', { 'max-length': 10 }]);

  // Edit: the row's Edit fills the form; save a new definition.
  await click(`${row('policies-table', POLICY)} button`);
  await page.waitForFunction(() => document.querySelector('#policy-definition').value.includes('max-length'));
  await typeInto('#policy-definition', '{"max-length": 20}');
  await submit('#policy-form');
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent.includes('"max-length":20'), {}, row('policies-table', POLICY));
  r = await api('GET', `/api/policies/${enc(VHOST)}/${enc(POLICY)}`);
  assert.deepEqual(r.body.definition, { 'max-length': 20 });

  await click(`${row('policies-table', POLICY)} button.danger`);
  await page.waitForFunction((sel) => !document.querySelector(sel), {}, row('policies-table', POLICY));
  assert.equal((await api('GET', `/api/policies/${enc(VHOST)}/${enc(POLICY)}`)).status, 404);
});

test('uploads definitions', STEP, async () => {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'warren-ui-upload-')), 'defs.json');
  const imported = `ui-imported-${id}`;
  fs.writeFileSync(file, JSON.stringify({ queues: [{ name: imported, vhost: VHOST, durable: true, auto_delete: false, arguments: {} }] }));
  await go('#/admin/definitions');
  const input = await page.waitForSelector('#definitions-file');
  await input.uploadFile(file);
  await submit('#upload-definitions');
  await textIs('#definitions-status', 'Imported defs.json.');
  assert.equal((await api('GET', `/api/queues/${enc(VHOST)}/${enc(imported)}`)).status, 200);
  // With the vhost chosen in the header, the queues list shows only its queues.
  await go('#/queues');
  await page.waitForSelector('#queues-filter');
  await page.$eval('#queues-filter', (e) => {
    e.value = '';
    e.dispatchEvent(new Event('input'));
  });
  await page.waitForSelector(row('queues-table', imported));
  await page.waitForFunction(() => document.querySelectorAll('#queues-table tbody tr').length === 1);
  await page.select('#vhost-select', '');
  fs.rmSync(path.dirname(file), { recursive: true, force: true });
});

test('deletes the vhost through the UI', STEP, async () => {
  await go('#/admin/vhosts');
  await click(`${row('vhosts-table', VHOST)} button.danger`);
  await page.waitForFunction((sel) => document.querySelector('#vhosts-table') && !document.querySelector(sel), {}, row('vhosts-table', VHOST));
  assert.equal((await api('GET', `/api/vhosts/${enc(VHOST)}`)).status, 404);
  // The header's selector no longer offers it.
  await page.waitForFunction((v) => ![...document.querySelectorAll('#vhost-select option')].some((o) => o.value === v), {}, VHOST);
});

test('the overview plots queued messages and rates over time', { timeout: 180_000 }, async () => {
  await go('#/overview');
  // Each 5 s poll adds a point (or the API's samples seed the lines): wait for eight.
  await page.waitForFunction(
    () => {
      const lines = [...document.querySelectorAll('#chart-levels polyline')];
      const rates = [...document.querySelectorAll('#chart-rates polyline')];
      return lines.length && rates.length && Number(lines[0].dataset.count) >= 8 && Number(rates[0].dataset.count) >= 8;
    },
    { timeout: 150_000 },
  );
  // The demo traffic shows: messages are queued and published at a rate above zero.
  assert.ok(Number((await page.$eval('#total-ready', (e) => e.textContent)).replace(/,/g, '')) > 0);
  const publish = await page.$eval('#chart-rates .legend [data-series="Publish"] .value', (e) => e.textContent);
  assert.ok(parseFloat(publish.replace(/,/g, '')) > 0, `the publish rate shown is ${publish}`);
  await shot('overview');
  await go('#/exchanges');
  await page.waitForSelector(row('exchanges-table', 'amq.topic'));
  await shot('exchanges');
  await go('#/channels');
  await page.waitForSelector('#channels-table tbody tr[data-key]');
  await shot('channels');
});

test("a busy queue's page plots its depth and lists its consumer", { timeout: 120_000 }, async () => {
  await go(`#/queues/%2F/${enc(DEMO_QUEUE)}`);
  await page.waitForFunction(() => document.querySelector('#queue-consumers')?.textContent === '1');
  await page.waitForSelector('#consumers-table tbody tr[data-key^="amq.ctag-"]');
  await page.waitForFunction(() => Number(document.querySelector('#queue-chart polyline')?.dataset.count) >= 4, { timeout: 90_000 });
  const depth = Number((await page.$eval('#queue-total', (e) => e.textContent)).replace(/,/g, ''));
  assert.ok(depth > 0, 'published faster than consumed, the queue holds messages');
  await shot('queue-live');
});

test("the charts take RabbitMQ's sample series when the API sends them", STEP, async () => {
  // chart.js as the page loads it, fed an API object shaped as RabbitMQ's answer to
  // ?lengths_age=600&lengths_incr=5&msg_rates_age=600&msg_rates_incr=5 (samples newest first;
  // queue lengths as they are, message counters as running totals), then one without samples.
  const r = await page.evaluate(async () => {
    const { History, trackLevels, trackRates } = await import('/ui/chart.js');
    const hist = new History();
    const t = 1_700_000_000_000;
    const samples = (values) => values.map((v, i) => ({ sample: v, timestamp: t - i * 5000 }));
    const totals = { messages_ready: 7, messages_ready_details: { rate: 0, samples: samples([7, 5, 2]) } };
    const stats = { publish: 300, publish_details: { rate: 20, samples: samples([300, 200, 150]) } };
    trackLevels(hist, 'a:', totals, ['messages_ready'], t + 1);
    trackRates(hist, 'a:', stats, ['publish'], t + 1);
    trackLevels(hist, 'b:', { messages_ready: 3 }, ['messages_ready'], t);
    trackRates(hist, 'b:', { publish: 9, publish_details: { rate: 1.5 } }, ['publish'], t);
    return [hist.points('a:messages_ready'), hist.points('a:publish'), hist.points('b:messages_ready'), hist.points('b:publish')];
  });
  const t = 1_700_000_000_000;
  assert.deepEqual(r[0], [[t - 10000, 2], [t - 5000, 5], [t, 7]], 'lengths: the samples, oldest first');
  assert.deepEqual(r[1], [[t - 5000, 10], [t, 20]], 'rates: per-second differences of the counters');
  assert.deepEqual(r[2], [[t, 3]], 'without samples: the current value');
  assert.deepEqual(r[3], [[t, 1.5]], 'without samples: the current rate');
});

test('logging out returns to the login form', STEP, async () => {
  await click('#logout');
  await page.waitForSelector('#login-form', { visible: true });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('warren.credentials')), null);
  assert.deepEqual(pageErrors, [], 'no uncaught exception in the page during the whole run');
});
