// The web inbox page (GET /) in headless Chromium, against real running services.
// Started by tests/browser.rs, which starts the binary twice on fresh SQLite files, fills them
// with the `send` subcommand and passes everything here through the environment:
//   INBOX_URL      a service without API_TOKEN, holding the messages of seedMessages() in browser.rs
//   TOKEN_URL      a service with API_TOKEN=API_TOKEN, holding one message
//   FORWARDING_URL a service with API_TOKEN=API_TOKEN, empty, forwarding every message to
//                  RECEIVER_PORT's /app and /flaky, signed with FORWARD_SECRET, failing a delivery
//                  after FORWARD_MAX_AGE=2s (this script runs the receiver)
//   WEBHOOK_INBOX  the binary (to send one more message while the page is open)
//   WEBHOOK_SECRET the services' secret
//   WHATSAPP_APP_SECRET the open service's WhatsApp app secret (to send it a WhatsApp message)
//   ARTIFACTS      where the screenshots go
//   CHROMIUM       the browser executable
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import http from 'node:http';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} is not set (run this through \`cargo test --test browser\`)`);
  return value;
};

const INBOX_URL = env('INBOX_URL');
const TOKEN_URL = env('TOKEN_URL');
const FORWARDING_URL = env('FORWARDING_URL');
const RECEIVER_PORT = Number(env('RECEIVER_PORT'));
const FORWARD_SECRET = env('FORWARD_SECRET');
const API_TOKEN = env('API_TOKEN');
const BIN = env('WEBHOOK_INBOX');
const SECRET = env('WEBHOOK_SECRET');
const WHATSAPP_APP_SECRET = env('WHATSAPP_APP_SECRET');
const ARTIFACTS = env('ARTIFACTS');
const CHROMIUM = env('CHROMIUM');

const A = '+919876543210';
const B = '+14155550111';
const C = '+447700900123';
const XSS_TEXT = '<script>window.__xss = 1</script><img src="x" onerror="window.__xss = 2">';
// What the failing destination answers: the service shows the start of it as the last error.
const FLAKY_ANSWER = 'down <img src="x" onerror="window.__xss = 3">';
const WAIT_MS = 15_000;

let checks = 0;
function check(description, actual, expected) {
  assert.deepEqual(actual, expected, description);
  checks += 1;
}

// Runs `action` and waits until the page finished the load it started.
async function andWaitForLoad(page, action) {
  const before = Number(await page.evaluate(() => document.body.dataset.loads || '0'));
  await action();
  await page.waitForFunction((n) => Number(document.body.dataset.loads || '0') > n, before, { timeout: WAIT_MS });
}

// Loads `url` (or reloads) and waits until the page finished its first load.
async function navigate(page, url) {
  await (url ? page.goto(url) : page.reload());
  await page.waitForFunction(() => Number(document.body.dataset.loads || '0') >= 1, null, { timeout: WAIT_MS });
}

async function openPage(browser, url, viewport) {
  const page = await browser.newPage({ viewport });
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && !message.text().includes('401') && !message.text().includes('422')
        && !message.text().includes('503')) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  await navigate(page, url);
  return { page, problems };
}

const text = (page, selector) => page.locator(selector).innerText();
const ids = (page) => page.locator('#rows td.id').allInnerTexts();
const column = (page, kind) => page.locator(`#rows td.${kind}`).allInnerTexts();
const range = (page) => text(page, '#range');

function counting(from, to, prefix = 'm') {
  const out = [];
  const step = from <= to ? 1 : -1;
  for (let i = from; step > 0 ? i <= to : i >= to; i += step) {
    out.push(`${prefix}${String(i).padStart(2, '0')}`);
  }
  return out;
}

async function submitFilters(page, values) {
  for (const [name, value] of Object.entries(values)) {
    await page.fill(`#filter-${name}`, value);
  }
  // Enter in the last text field submits the form, as a person would do.
  const last = Object.keys(values).at(-1);
  await andWaitForLoad(page, () => page.press(`#filter-${last}`, 'Enter'));
}

async function stats(page) {
  return {
    total: await text(page, '#stat-total'),
    senders: await text(page, '#stat-senders'),
    first: await text(page, '#stat-first'),
    last: await text(page, '#stat-last'),
    top: await page.locator('#top-senders li').allInnerTexts(),
  };
}

async function theOpenInbox(browser) {
  const { page, problems } = await openPage(browser, `${INBOX_URL}/`, { width: 1280, height: 900 });

  check('the figures of /stats', await stats(page), {
    total: '26',
    senders: '5',
    first: '2025-01-15T08:00:00Z',
    last: '2025-01-15T09:24:00Z',
    top: [`${A} 12 messages`, `${B} 6 messages`, `${C} 6 messages`, '+15550001 1 message', '+15550002 1 message'],
  });
  check('the page opens newest first, 50 a page', await range(page), '1–26 of 26, newest first');
  check('the newest message is on top', (await ids(page)).slice(0, 3), ['m24', 'm23', 'm22']);
  check('the nearest row shows what was sent', await page.locator('#rows tr').first().innerText(),
    ['2025-01-15T09:24:00Z', 'Webhook', A, '+14155550100', 'Hello number 24', 'm24'].join('\t'));
  check('a message without text says so', await page.locator('#rows tr', { hasText: 'm09' }).locator('td.text').innerText(), 'no text');

  // Text that looks like markup is shown as text, and nothing in it runs.
  const xssCell = page.locator('#rows tr', { hasText: 'x-xss' }).locator('td.text');
  check('markup in a message is literal text', await xssCell.innerText(), XSS_TEXT);
  check('no element was made from it', await xssCell.evaluate((cell) => cell.children.length), 0);
  check('no image element in the list', await page.locator('#rows img').count(), 0);
  check('no script ran', await page.evaluate(() => window.__xss), undefined);

  // Pages of 10, forward and back.
  await andWaitForLoad(page, () => page.selectOption('#filter-limit', '10'));
  check('page 1', [await range(page), await ids(page)],
    ['1–10 of 26, newest first', counting(24, 15)]);
  check('no way back from page 1', await page.locator('#page-previous').isDisabled(), true);
  await andWaitForLoad(page, () => page.click('#page-next'));
  check('page 2', [await range(page), await ids(page)], ['11–20 of 26, newest first', [...counting(14, 6), 'x-xss']]);
  await andWaitForLoad(page, () => page.click('#page-next'));
  check('page 3, the oldest', [await range(page), await ids(page)],
    ['21–26 of 26, newest first', [...counting(5, 1), `long-${'y'.repeat(200)}`]]);
  check('no way forward from the last page', await page.locator('#page-next').isDisabled(), true);
  check('the focus moves from the disabled button to the list', await page.evaluate(() => document.activeElement.id), 'messages-heading');
  check('the page number', await text(page, '#page-number'), 'Page 3 of 3');
  await andWaitForLoad(page, () => page.click('#page-previous'));
  check('back to page 2', [await range(page), await ids(page)], ['11–20 of 26, newest first', [...counting(14, 6), 'x-xss']]);
  await andWaitForLoad(page, () => page.click('#page-first'));
  check('back to page 1', await range(page), '1–10 of 26, newest first');

  // The API's own order, oldest first, and its last page.
  await andWaitForLoad(page, () => page.selectOption('#filter-order', 'oldest'));
  check('oldest first', [await range(page), (await ids(page)).slice(1)],
    ['1–10 of 26, oldest first', [...counting(1, 5), 'x-xss', ...counting(6, 8)]]);
  await andWaitForLoad(page, () => page.click('#page-last'));
  check('the last page oldest first', [await range(page), await ids(page)],
    ['21–26 of 26, oldest first', ['m19', 'm20', 'm21', 'm22', 'm23', 'm24']]);

  // Filters, each submitted with Enter.
  await submitFilters(page, { from: A });
  check('from: the first page of one sender', [await range(page), await ids(page)],
    ['1–10 of 12, oldest first', ['m02', 'm04', 'm06', 'm08', 'm10', 'm12', 'm14', 'm16', 'm18', 'm20']]);
  check('from: every row is that sender', new Set(await column(page, 'from')), new Set([A]));
  check('from: kept in the address', new URL(page.url()).searchParams.get('from'), A);
  await andWaitForLoad(page, () => page.click('#page-next'));
  check('from: the second page', [await range(page), await ids(page)], ['11–12 of 12, oldest first', ['m22', 'm24']]);
  await andWaitForLoad(page, () => page.click('#clear-filters'));
  check('clear: everything again', await range(page), '1–10 of 26, oldest first');

  await submitFilters(page, { q: 'invoice' });
  check('q: any case, a substring of the text', [await range(page), await ids(page)],
    ['1–5 of 5, oldest first', ['m05', 'm07', 'm10', 'm15', 'm20']]);
  await submitFilters(page, { q: 'nothing like this' });
  check('q: no match', [await range(page), await page.locator('#rows tr').count(), await page.locator('#no-rows').isVisible()],
    ['No messages match these filters.', 0, true]);

  await submitFilters(page, { q: '', since: '2025-01-15T09:20:00Z' });
  check('since: from that instant on', [await range(page), await ids(page)],
    ['1–5 of 5, oldest first', ['m20', 'm21', 'm22', 'm23', 'm24']]);

  // A bad filter: the service's 422 detail, shown plainly, next to the field it names.
  await submitFilters(page, { since: '2025-02-30T10:00:00Z' });
  check('since: the 422 detail is shown', await text(page, '#problem'),
    'Messages: The service refused the filters (422).\n'
      + 'Since: Value error, expected a UTC timestamp YYYY-MM-DDTHH:MM:SS[.fraction]Z for a real calendar instant');
  check('since: the field is marked', await page.getAttribute('#filter-since', 'aria-invalid'), 'true');
  check('since: no stale rows stay', await page.locator('#rows tr').count(), 0);
  await submitFilters(page, { since: '2025-01-15' });
  check('since: a bare date means midnight UTC', [await page.inputValue('#filter-since'), await range(page)],
    ['2025-01-15T00:00:00Z', '1–10 of 26, oldest first']);
  check('since: the problem is gone', [await page.locator('#problem').isVisible(), await page.getAttribute('#filter-since', 'aria-invalid')],
    [false, null]);

  // A top sender is a button that filters by it.
  await andWaitForLoad(page, () => page.getByRole('button', { name: `${B}: show only this sender's messages` }).click());
  check('a top sender filters the list', [await page.inputValue('#filter-from'), await range(page)], [B, '1–6 of 6, oldest first']);
  await andWaitForLoad(page, () => page.click('#clear-filters'));

  // Refresh shows what arrived since the page was loaded.
  await andWaitForLoad(page, () => page.selectOption('#filter-order', 'newest'));
  const body = JSON.stringify({ message_id: 'm25', from: C, to: '+14155550100', ts: '2025-01-15T10:00:00Z', text: 'Arrived later' });
  const sent = execFileSync(BIN, ['send', '--url', `${INBOX_URL}/webhook`], {
    input: body,
    env: { WEBHOOK_SECRET: SECRET, PATH: process.env.PATH },
  }).toString().trim();
  check('the binary sent one more message', sent, '{"status":"ok"}');
  // Live: it slides in on top without Refresh, and the figures and the chart follow.
  await page.waitForFunction(() => document.querySelector('#rows td.id')?.innerText === 'm25', null, { timeout: WAIT_MS });
  check('live: the new message on top without Refresh', [(await ids(page)).length, await range(page),
    await page.locator('#rows tr').first().getAttribute('class'), await text(page, '#live')],
  [10, '1–10 of 27, newest first', 'arrived', 'Live']);
  await page.waitForFunction(() => document.getElementById('stat-total').innerText === '27', null, { timeout: WAIT_MS });
  check('live: the figures follow', await text(page, '#stat-last'), '2025-01-15T10:00:00Z');
  const chartSum = () => page.evaluate(() => [...document.querySelectorAll('#timeline-chart rect.bar')]
    .reduce((sum, bar) => sum + Number(bar.dataset.count), 0));
  await page.waitForFunction(() => [...document.querySelectorAll('#timeline-chart rect.bar')]
    .reduce((sum, bar) => sum + Number(bar.dataset.count), 0) === 27, null, { timeout: WAIT_MS });
  check('the chart: 24 hourly bars holding every message', [await page.locator('#timeline-chart rect.bar').count(), await chartSum()], [24, 27]);
  check('the chart: says what it shows', await page.locator('#timeline-chart svg').getAttribute('aria-label'),
    '27 messages in the last 24 hours; at most 27 in one hour');
  await page.selectOption('#timeline-window', 'day');
  await page.waitForFunction(() => document.querySelectorAll('#timeline-chart rect.bar').length === 30, null, { timeout: WAIT_MS });
  check('the chart: 30 daily bars', await chartSum(), 27);
  check('the chart: no library from elsewhere', await page.evaluate(() => [...document.scripts].map((script) => new URL(script.src).pathname)),
    ['/assets/app.js']);
  await page.selectOption('#timeline-window', 'hour');
  await andWaitForLoad(page, () => page.click('#refresh'));
  check('refresh: the same list', [(await ids(page))[0], await range(page), await text(page, '#stat-total'), await text(page, '#stat-last')],
    ['m25', '1–10 of 27, newest first', '27', '2025-01-15T10:00:00Z']);
  check('refresh: the status line says when', /^Updated at \d\d:\d\d:\d\d UTC: 1–10 of 27, newest first$/.test(await text(page, '#status')), true);

  await page.screenshot({ path: path.join(ARTIFACTS, 'inbox.png'), fullPage: true });

  // Each row shows its source as a badge, and its id opens the message's detail.
  check('a badge per row', (await column(page, 'source')).slice(0, 2), ['Webhook', 'Webhook']);
  const notification = JSON.stringify({ object: 'whatsapp_business_account', entry: [{ id: '1', changes: [{ field: 'messages', value: {
    messaging_product: 'whatsapp',
    metadata: { display_phone_number: '15550783881', phone_number_id: '1' },
    messages: [{ from: '447700900123', id: 'wamid.page-1', timestamp: '1767225600', type: 'image',
      image: { caption: 'A photo <b>caption</b>', mime_type: 'image/jpeg', id: '2754859441498128' } }],
  } }] }] });
  const sentWhatsapp = execFileSync(BIN, ['send', '--provider', 'whatsapp', '--url', `${INBOX_URL}/webhook`], {
    input: notification,
    env: { WHATSAPP_APP_SECRET, PATH: process.env.PATH },
  }).toString().trim();
  check('the binary sent a WhatsApp notification', sentWhatsapp, '{"status":"ok"}');
  await andWaitForLoad(page, () => page.click('#refresh'));
  check('the WhatsApp message on top, with its badge', [(await ids(page))[0], (await column(page, 'source'))[0], (await column(page, 'text'))[0]],
    ['wamid.page-1', 'WhatsApp', 'A photo <b>caption</b>']);
  await page.getByRole('button', { name: "wamid.page-1: show this message's detail" }).click();
  await page.locator('#detail').waitFor({ state: 'visible', timeout: WAIT_MS });
  check('the detail: its fields', [await text(page, '#detail-id'), await text(page, '#detail-source'), await text(page, '#detail-from'),
    await text(page, '#detail-to'), await text(page, '#detail-ts')],
  ['wamid.page-1', 'WhatsApp', '+447700900123', '+15550783881', '2026-01-01T00:00:00Z']);
  check('the detail: when it arrived', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/.test(await text(page, '#detail-received')), true);
  const raw = JSON.parse(await text(page, '#detail-raw'));
  check('the detail: what WhatsApp sent', [raw.id, raw.type, raw.image.caption], ['wamid.page-1', 'image', 'A photo <b>caption</b>']);
  check('the detail: the caption stays text', await page.locator('#detail b').count(), 0);
  await page.screenshot({ path: path.join(ARTIFACTS, 'inbox-detail.png') });
  await page.keyboard.press('Escape');
  await page.locator('#detail').waitFor({ state: 'hidden', timeout: WAIT_MS });
  check('Escape closes the detail and the focus goes back to the id', await page.evaluate(() => document.activeElement.textContent), 'wamid.page-1');
  const seedId = (await ids(page))[1];
  await page.getByRole('button', { name: `${seedId}: show this message's detail` }).click();
  await page.locator('#detail').waitFor({ state: 'visible', timeout: WAIT_MS });
  check('a webhook message: no provider payload', [await text(page, '#detail-source'), await text(page, '#detail-raw')],
    ['Webhook', "null (sent to POST /webhook in this service's own format)"]);
  check('without forwarding: a quiet line, no table', [await text(page, '#deliveries-note'), await page.locator('#deliveries-table').isVisible()],
    ['Not forwarded: no deliveries for this message.', false]);
  await page.click('#detail-close');
  await page.locator('#detail').waitFor({ state: 'hidden', timeout: WAIT_MS });

  // The keyboard alone: Tab reaches Refresh (after the skip link), Enter presses it, the focus ring shows.
  await navigate(page);
  await page.keyboard.press('Tab');
  check('Tab 1: the skip link', await page.evaluate(() => document.activeElement.textContent), 'Skip to the messages');
  await page.keyboard.press('Tab');
  check('Tab 2: Refresh', await page.evaluate(() => document.activeElement.id), 'refresh');
  check('a visible focus ring', await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle), 'solid');
  await andWaitForLoad(page, () => page.keyboard.press('Enter'));
  check('every input has a label', await page.evaluate(() => [...document.querySelectorAll('input, select')]
    .filter((input) => input.labels.length === 0).map((input) => input.id)), []);
  check('every visible button has a name', await page.evaluate(() => [...document.querySelectorAll('button')]
    .filter((button) => !button.hidden && !(button.getAttribute('aria-label') || button.textContent.trim()))
    .length), 0);

  // A 503 from the service, shown as it is. The answer is the service's own 503 body, replayed.
  await page.route('**/stats', (route) => route.fulfill({
    status: 503, contentType: 'application/json', body: '{"detail":"storage unavailable"}',
  }));
  await andWaitForLoad(page, () => page.click('#refresh'));
  check('a 503 is shown plainly', await text(page, '#problem'),
    'Stats: The service is unavailable (503: storage unavailable). Try Refresh in a moment.');
  await page.unroute('**/stats');
  await andWaitForLoad(page, () => page.click('#refresh'));
  check('and goes away when the service is back', await page.locator('#problem').isVisible(), false);

  // On another page, an arrival waits behind a bar that jumps to the newest.
  await andWaitForLoad(page, () => page.click('#page-next'));
  const later = JSON.stringify({ message_id: 'm26', from: C, to: '+14155550100', ts: '2026-06-01T00:00:00Z', text: 'While you read page 2' });
  execFileSync(BIN, ['send', '--url', `${INBOX_URL}/webhook`], { input: later, env: { WEBHOOK_SECRET: SECRET, PATH: process.env.PATH } });
  await page.locator('#new-messages').waitFor({ state: 'visible', timeout: WAIT_MS });
  check('live: on page 2 a bar counts the arrival, the page stays', [await text(page, '#new-messages-text'), (await ids(page)).includes('m26')],
    ['1 new message', false]);
  await page.waitForFunction(() => document.getElementById('stat-total').innerText === '29', null, { timeout: WAIT_MS });
  await page.screenshot({ path: path.join(ARTIFACTS, 'inbox-live.png'), fullPage: true });
  await andWaitForLoad(page, () => page.click('#show-new'));
  check('the bar jumps to the newest', [(await ids(page))[0], await page.locator('#new-messages').isVisible()], ['m26', false]);

  check('no script errors', problems, []);
  await page.close();
}

async function onAPhone(browser) {
  const { page, problems } = await openPage(browser, `${INBOX_URL}/?order=oldest&limit=10`, { width: 375, height: 812 });
  check('phone: the longest message is on this page', (await ids(page))[0], `long-${'y'.repeat(200)}`);
  const overflow = await page.evaluate(() => ({
    page: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    cells: [...document.querySelectorAll('#rows td, #stats-heading, .figure, .pager button')]
      .filter((element) => element.getBoundingClientRect().right > document.documentElement.clientWidth).length,
  }));
  check('phone: nothing wider than the screen', overflow, { page: 0, cells: 0 });
  check('phone: rows are cards, not table rows', await page.locator('#rows tr').first().evaluate((row) => getComputedStyle(row).display), 'block');
  check('phone: each field is labelled', await page.locator('#rows tr').first().locator('td.from').evaluate(
    (cell) => getComputedStyle(cell, '::before').content), '"From"');
  await page.screenshot({ path: path.join(ARTIFACTS, 'inbox-phone.png'), fullPage: true });
  check('phone: no script errors', problems, []);
  await page.close();
}

async function withAToken(browser) {
  const context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
  const page = await context.newPage();
  await navigate(page, `${TOKEN_URL}/`);
  const storedToken = () => page.evaluate(() => sessionStorage.getItem('webhook-inbox.api-token'));
  check('token: asked for', [await page.locator('#token-section').isVisible(), await page.locator('#inbox').isVisible()], [true, false]);
  check('token: the reason', await text(page, '#token-reason'),
    'This inbox is protected by API_TOKEN: enter the token to read the messages.');
  check('token: the field has the focus', await page.evaluate(() => document.activeElement.id), 'token-input');
  check('token: labelled', await page.getByLabel('API token', { exact: true }).count(), 1);

  await page.fill('#token-input', 'not-the-token');
  await andWaitForLoad(page, () => page.press('#token-input', 'Enter'));
  check('token: a wrong one is refused and asked again', [await page.locator('#token-section').isVisible(), await text(page, '#token-reason')],
    [true, 'That token was not accepted (401). Enter the API token again.']);
  check('token: a refused one is not kept', await storedToken(), null);
  check('token: nothing shown', await page.locator('#inbox').isVisible(), false);
  await page.screenshot({ path: path.join(ARTIFACTS, 'inbox-token.png') });

  await page.fill('#token-input', API_TOKEN);
  await andWaitForLoad(page, () => page.click('#token-form button[type=submit]'));
  check('token: the right one shows the data', [await page.locator('#inbox').isVisible(), await text(page, '#stat-total'), await ids(page)],
    [true, '1', ['secret-1']]);
  check('token: kept for this tab', await storedToken(), API_TOKEN);
  check('token: can be forgotten', await page.locator('#forget-token').isVisible(), true);

  await navigate(page);
  check('token: a reload still reads', await ids(page), ['secret-1']);

  await andWaitForLoad(page, () => page.click('#forget-token'));
  check('token: forgotten', [await storedToken(), await page.locator('#token-section').isVisible(), await page.locator('#forget-token').isVisible()],
    [null, true, false]);
  check('token: the data is gone from the page', [await page.locator('#rows tr').count(), await text(page, '#stat-total').catch(() => '')],
    [0, '–']);
  await context.close();
}

// The destinations of the forwarding service: /app answers 200; /flaky answers 500 (with markup
// in its body) while `failing`. Every request is recorded with whether its Standard Webhooks
// signature verifies, checked here with Node's own HMAC.
function startReceiver() {
  const receiver = { failing: true, received: [] };
  const key = Buffer.from(FORWARD_SECRET.slice('whsec_'.length), 'base64');
  const server = http.createServer((request, response) => {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const id = request.headers['webhook-id'] ?? '';
      const timestamp = request.headers['webhook-timestamp'] ?? '';
      const expected = crypto.createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64');
      const signed = (request.headers['webhook-signature'] ?? '').split(' ').includes(`v1,${expected}`);
      let messageId = null;
      try {
        messageId = JSON.parse(body).message_id;
      } catch {
        // Recorded without one; the checks below then fail.
      }
      const fail = request.url === '/flaky' && receiver.failing;
      receiver.received.push({ path: request.url, id, messageId, signed, status: fail ? 500 : 200 });
      response.writeHead(fail ? 500 : 200, { 'content-type': 'text/plain' });
      response.end(fail ? FLAKY_ANSWER : 'ok');
    });
  });
  receiver.close = () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(RECEIVER_PORT, '127.0.0.1', () => resolve(receiver));
  });
}

async function waitUntil(description, condition) {
  const deadline = Date.now() + WAIT_MS;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `waited ${WAIT_MS} ms: ${description}`);
    await new Promise((resolve) => { setTimeout(resolve, 50); });
  }
}

// A row of the open detail's deliveries, by its destination's path, as the page shows it.
async function deliveryOf(page, destinationPath) {
  const row = page.locator('#deliveries-rows tr', { hasText: `:${RECEIVER_PORT}${destinationPath}` });
  const cellText = (kind) => row.locator(`td.${kind}`).innerText();
  return {
    status: await cellText('status'),
    attempts: await cellText('attempts'),
    answer: await row.locator('td.answer .answer-text').innerText(),
    next: await cellText('next'),
    retry: await row.locator('button.retry').count(),
  };
}

// How the open detail lays out its deliveries: rows or cards, and whether anything sticks out.
function deliveriesLayout(page) {
  return page.evaluate(() => {
    const dialog = document.getElementById('detail');
    const right = dialog.getBoundingClientRect().right;
    return {
      display: getComputedStyle(document.querySelector('#deliveries-rows tr')).display,
      wider: dialog.scrollWidth - dialog.clientWidth,
      outside: [...document.querySelectorAll('#deliveries-rows td')].filter((cell) => cell.getBoundingClientRect().right > right).length,
    };
  });
}

async function withForwarding(browser) {
  const receiver = await startReceiver();
  try {
    const body = JSON.stringify({ message_id: 'fwd-1', from: A, to: '+14155550100', ts: '2025-01-15T11:00:00Z', text: 'Forward me' });
    execFileSync(BIN, ['send', '--url', `${FORWARDING_URL}/webhook`], { input: body, env: { WEBHOOK_SECRET: SECRET, PATH: process.env.PATH } });
    const at = (destinationPath) => receiver.received.filter((request) => request.path === destinationPath);
    await waitUntil('fwd-1 reaches /app and /flaky', () => at('/app').length > 0 && at('/flaky').length > 0);

    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const problems = [];
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    await navigate(page, `${FORWARDING_URL}/`);
    await page.fill('#token-input', API_TOKEN);
    await andWaitForLoad(page, () => page.press('#token-input', 'Enter'));
    check('forwarding: the message is listed', await ids(page), ['fwd-1']);

    await page.getByRole('button', { name: "fwd-1: show this message's detail" }).click();
    await page.locator('#detail').waitFor({ state: 'visible', timeout: WAIT_MS });
    // The page reads the deliveries again while one is pending: /flaky fails after 2 s.
    await page.locator('#deliveries-rows tr[data-status="failed"]').waitFor({ timeout: WAIT_MS });
    check('forwarding: one row per destination, named by its URL', (await page.locator('#deliveries-rows td.destination').allInnerTexts()).sort(),
      [`http://127.0.0.1:${RECEIVER_PORT}/app`, `http://127.0.0.1:${RECEIVER_PORT}/flaky`]);
    check('forwarding: the healthy destination got it', await deliveryOf(page, '/app'),
      { status: 'Delivered', attempts: '1', answer: '200', next: '—', retry: 0 });
    const flaky = await deliveryOf(page, '/flaky');
    check('forwarding: the failing destination, failed after retries, with a Retry',
      [flaky.status, Number(flaky.attempts) >= 2, flaky.next, flaky.retry], ['Failed', true, '—', 1]);
    check('forwarding: its last error, the receiver\'s answer as text',
      flaky.answer, `the destination answered 500 Internal Server Error: ${FLAKY_ANSWER}`);
    check('forwarding: no element made from the answer', [await page.locator('#detail img').count(), await page.evaluate(() => window.__xss)],
      [0, undefined]);
    check('forwarding: the summary', await text(page, '#deliveries-note'), '2 destinations: 1 delivered, 1 failed.');
    check('forwarding: every attempt was signed', receiver.received.every((request) => request.signed), true);
    check('forwarding: one webhook-id for every attempt at fwd-1',
      [...new Set(receiver.received.map((request) => `${request.messageId} ${request.id}`))].length, 1);
    check('forwarding: the table fits the dialog', await deliveriesLayout(page), { display: 'table-row', wider: 0, outside: 0 });
    await page.screenshot({ path: path.join(ARTIFACTS, 'inbox-deliveries.png') });
    await page.setViewportSize({ width: 375, height: 812 });
    check('phone: the deliveries are cards within the dialog, Retry too', await deliveriesLayout(page), { display: 'block', wider: 0, outside: 0 });
    await page.screenshot({ path: path.join(ARTIFACTS, 'inbox-deliveries-phone.png') });
    await page.setViewportSize({ width: 1280, height: 900 });

    // The destination recovers; Retry sends the message again and the row follows.
    receiver.failing = false;
    const flakyBefore = at('/flaky').length;
    const appBefore = at('/app').length;
    const flakyUrl = `http://127.0.0.1:${RECEIVER_PORT}/flaky`;
    await page.getByRole('button', { name: `Retry: send fwd-1 again to ${flakyUrl}` }).click();
    await page.locator('#deliveries-outcome').waitFor({ state: 'visible', timeout: WAIT_MS });
    check('retry: queued', /^Queued again for http:\/\/127\.0\.0\.1:\d+\/flaky at \d\d:\d\d:\d\d UTC\.$/.test(await text(page, '#deliveries-outcome')), true);
    check('retry: the focus on what happened', await page.evaluate(() => document.activeElement.id), 'deliveries-outcome');
    await page.waitForFunction(() => document.querySelectorAll('#deliveries-rows tr[data-status="delivered"]').length === 2,
      null, { timeout: WAIT_MS });
    const again = at('/flaky').slice(flakyBefore);
    check('retry: the receiver got fwd-1 again, signed, with the same webhook-id',
      [again.at(-1).messageId, again.at(-1).status, again.at(-1).signed, again.at(-1).id], ['fwd-1', 200, true, at('/flaky')[0].id]);
    const recovered = await deliveryOf(page, '/flaky');
    check('retry: the row shows the delivery', [recovered.status, recovered.answer, recovered.next, recovered.retry],
      ['Delivered', '200', '—', 0]);
    check('retry: the summary', await text(page, '#deliveries-note'), '2 destinations: 2 delivered.');
    check('retry: the healthy destination was not sent it again', at('/app').length, appBefore);
    await page.keyboard.press('Escape');
    await page.locator('#detail').waitFor({ state: 'hidden', timeout: WAIT_MS });
    check('forwarding: no script errors', problems, []);
    await context.close();
  } finally {
    await receiver.close();
  }
}

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const browser = await chromium.launch({ executablePath: CHROMIUM });
  try {
    await theOpenInbox(browser);
    await onAPhone(browser);
    await withAToken(browser);
    await withForwarding(browser);
  } finally {
    await browser.close();
  }
  console.log(`browser test: ${checks} checks passed; screenshots in ${ARTIFACTS}`);
}

await main();
