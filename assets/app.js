// The webhook-inbox page: reads /stats and /messages with fetch and shows them, and one message's
// detail from /messages/{id} when its id is pressed, with its deliveries from /deliveries (and,
// with a token, a retry of a failed one by POST /deliveries/retry-failed?message_id=&destination=). No framework.
// Stored text is only ever inserted with textContent, never parsed as HTML.
'use strict';

const TOKEN_KEY = 'webhook-inbox.api-token';
const ORDERS = ['newest', 'oldest'];
const PAGE_SIZES = [10, 25, 50, 100];
const DEFAULT_PAGE_SIZE = 50;
const FIELD_NAMES = {
  from: 'From', since: 'Since', q: 'Text contains', limit: 'Per page', offset: 'Page', order: 'Order',
};

const SOURCE_NAMES = { webhook: 'Webhook', whatsapp: 'WhatsApp', twilio: 'Twilio' };
const DELIVERY_STATUS_NAMES = { pending: 'Pending', delivered: 'Delivered', failed: 'Failed' };
// A message has one delivery per destination: one page holds them all.
const DELIVERIES_LIMIT = 200;
// While a delivery is pending, its list is read again once the next attempt is due, within these.
const DELIVERY_POLL_MIN_MS = 1000;
const DELIVERY_POLL_MAX_MS = 15000;

const byId = (id) => document.getElementById(id);
const numberFormat = new Intl.NumberFormat('en-US');

const state = {
  filters: { from: '', since: '', q: '' },
  order: 'newest',
  limit: DEFAULT_PAGE_SIZE,
  page: 0,
  // The total of the last answer for these filters: where the last page is.
  knownTotal: null,
  // Each load takes a new number; answers to an older load are dropped.
  generation: 0,
  loads: 0,
  // The rows on show, so that an arriving message can join them.
  rows: [],
  // Messages that arrived while another page or order was on show.
  unseen: 0,
  // The stream being followed: its filters, and how to stop it.
  live: null,
  timelineBucket: 'hour',
  // The message whose detail is open (null when none), for its deliveries: each opening and
  // closing takes a new number, and answers for an older one are dropped.
  detail: { messageId: null, generation: 0, timer: null },
};

// sessionStorage can be switched off; the token then lives only as long as the page.
const tokenStore = {
  memory: null,
  get() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return this.memory;
    }
  },
  set(token) {
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch {
      this.memory = token;
    }
  },
  clear() {
    this.memory = null;
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // Nothing was stored there.
    }
  },
};

class ApiProblem extends Error {
  constructor(status, message, fields = [], tokenSent = false) {
    super(message);
    this.status = status;
    this.fields = fields;
    this.tokenSent = tokenSent;
  }
}

// ---------------------------------------------------------------------------------------------
// Talking to the API
// ---------------------------------------------------------------------------------------------

async function getJson(path, params) {
  return callApi('GET', params ? `${path}?${params}` : path);
}

async function postJson(path) {
  return callApi('POST', path);
}

async function callApi(method, url) {
  const headers = { Accept: 'application/json' };
  const token = tokenStore.get();
  if (token) {
    headers.Authorization = `Bearer ${token}`;
  }
  let response;
  try {
    response = await fetch(url, { method, headers, cache: 'no-store' });
  } catch {
    throw new ApiProblem(0, 'Could not reach the service. Is it running? Try Refresh.');
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw problemFrom(response, body, Boolean(token));
  }
  return body;
}

// A promise's outcome as Promise.allSettled gives it: { status, value } or { status, reason }.
function settled(promise) {
  return promise.then((value) => ({ status: 'fulfilled', value }), (reason) => ({ status: 'rejected', reason }));
}

function problemFrom(response, body, tokenSent) {
  const { status } = response;
  const detail = body ? body.detail : undefined;
  if (status === 401) {
    return new ApiProblem(401, 'not authenticated', [], tokenSent);
  }
  if (status === 422 && Array.isArray(detail)) {
    const fields = detail.map((entry) => lastOf(entry.loc));
    const lines = detail.map((entry) => `${FIELD_NAMES[lastOf(entry.loc)] || lastOf(entry.loc)}: ${entry.msg}`);
    return new ApiProblem(422, `The service refused the filters (422).\n${lines.join('\n')}`, fields);
  }
  const said = typeof detail === 'string' ? detail : response.statusText;
  if (status === 503) {
    return new ApiProblem(503, `The service is unavailable (503: ${said}). Try Refresh in a moment.`);
  }
  return new ApiProblem(status, `The service answered ${status}: ${said}.`);
}

function lastOf(list) {
  return Array.isArray(list) && list.length > 0 ? String(list[list.length - 1]) : '';
}

function listParams(filters, order, page, limit) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(filters)) {
    if (value) {
      params.set(name, value);
    }
  }
  params.set('order', order === 'newest' ? 'desc' : 'asc');
  params.set('include', 'source');
  params.set('limit', String(limit));
  params.set('offset', String(page * limit));
  return params;
}

function lastPage(total, limit) {
  return Math.max(0, Math.ceil(total / limit) - 1);
}

// One page of messages as the reader asked for it: { rows, total, page }. The API lists newest
// first itself (order=desc), so a page is one request; a page past the end (messages were
// deleted meanwhile) is asked for again as the last one.
async function fetchPage(request) {
  const { filters, order, limit } = request;
  let { page } = request;
  let answer = await getJson('/messages', listParams(filters, order, page, limit));
  const last = lastPage(answer.total, limit);
  if (page > last && answer.total > 0) {
    page = last;
    answer = await getJson('/messages', listParams(filters, order, page, limit));
  }
  return { rows: answer.data, total: answer.total, page: Math.min(page, last) };
}

// ---------------------------------------------------------------------------------------------
// Showing things
// ---------------------------------------------------------------------------------------------

function say(text) {
  byId('status').textContent = text;
}

function showProblem(text) {
  const box = byId('problem');
  box.textContent = text;
  box.hidden = false;
}

function hideProblem() {
  const box = byId('problem');
  box.hidden = true;
  box.textContent = '';
}

function count(n) {
  return numberFormat.format(n);
}

function showStats(stats) {
  byId('stat-total').textContent = count(stats.total_messages);
  byId('stat-senders').textContent = count(stats.senders_count);
  byId('stat-first').textContent = stats.first_message_ts ?? '—';
  byId('stat-last').textContent = stats.last_message_ts ?? '—';
  const senders = stats.messages_per_sender || [];
  byId('top-senders').replaceChildren(...senders.map(senderItem));
  byId('no-senders').hidden = senders.length > 0;
}

function senderItem(sender) {
  const item = document.createElement('li');
  const button = document.createElement('button');
  button.type = 'button';
  button.textContent = sender.from;
  button.setAttribute('aria-label', `${sender.from}: show only this sender's messages`);
  button.addEventListener('click', () => {
    byId('filter-from').value = sender.from;
    applyForm();
  });
  const tally = document.createElement('span');
  tally.className = 'sender-count';
  tally.textContent = ` ${count(sender.count)} ${sender.count === 1 ? 'message' : 'messages'}`;
  item.append(button, tally);
  return item;
}

function messageRow(message) {
  const row = document.createElement('tr');
  const time = document.createElement('time');
  time.dateTime = message.ts;
  time.textContent = message.ts;
  row.append(
    cell('Time (UTC)', 'ts', time),
    cell('Source', 'source', sourceBadge(message.source)),
    cell('From', 'from', message.from),
    cell('To', 'to', message.to),
    cell('Text', 'text', message.text === null ? noText() : String(message.text)),
    cell('Message ID', 'id', detailButton(message.message_id)),
  );
  return row;
}

function sourceBadge(source) {
  const badge = document.createElement('span');
  badge.className = `badge badge-${SOURCE_NAMES[source] ? source : 'other'}`;
  badge.textContent = SOURCE_NAMES[source] ?? String(source);
  return badge;
}

// The message's id, as the button that opens its detail.
function detailButton(messageId) {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'link';
  button.textContent = messageId;
  button.setAttribute('aria-label', `${messageId}: show this message's detail`);
  button.addEventListener('click', () => showDetail(messageId, button));
  return button;
}

// Reads one message and shows it in the detail dialog; the focus goes back to `opener` on close.
// Its deliveries are read at the same time and shown below its fields.
async function showDetail(messageId, opener) {
  const deliveries = settled(fetchDeliveries(messageId));
  let message;
  try {
    message = await getJson(`/messages/${encodeURIComponent(messageId)}`);
  } catch (problem) {
    showProblem(`Message ${messageId}: ${problem.message}`);
    return;
  }
  hideProblem();
  byId('detail-id').textContent = message.message_id;
  byId('detail-source').replaceChildren(sourceBadge(message.source));
  byId('detail-from').textContent = message.from;
  byId('detail-to').textContent = message.to;
  byId('detail-ts').textContent = message.ts;
  byId('detail-received').textContent = message.received_at;
  byId('detail-text').replaceChildren(message.text === null ? noText() : String(message.text));
  const raw = message.raw === null ? 'null (sent to POST /webhook in this service\'s own format)'
    : JSON.stringify(message.raw, null, 2);
  byId('detail-raw').textContent = raw;
  stopDeliveries();
  state.detail.messageId = message.message_id;
  byId('deliveries-table').hidden = true;
  byId('deliveries-rows').replaceChildren();
  byId('deliveries-note').textContent = 'Reading the deliveries…';
  showRetryOutcome('');
  const dialog = byId('detail');
  dialog.onclose = () => {
    stopDeliveries();
    opener.focus();
  };
  dialog.showModal();
  const { generation } = state.detail;
  const outcome = await deliveries;
  if (generation === state.detail.generation) {
    showDeliveries(outcome);
  }
}

function cell(label, kind, content) {
  const td = document.createElement('td');
  td.className = kind;
  td.dataset.label = label;
  if (typeof content === 'string') {
    td.textContent = content;
  } else {
    td.append(content);
  }
  return td;
}

function noText() {
  const marker = document.createElement('span');
  marker.className = 'no-text';
  marker.textContent = 'no text';
  return marker;
}

function rangeText(page, rows, total) {
  if (total === 0) {
    return hasFilters() ? 'No messages match these filters.' : 'No messages yet.';
  }
  const first = page * state.limit + 1;
  const last = page * state.limit + rows.length;
  const order = state.order === 'newest' ? 'newest first' : 'oldest first';
  return `${count(first)}–${count(last)} of ${count(total)}, ${order}`;
}

function showPage({ rows, total, page }) {
  const focused = document.activeElement;
  byId('rows').replaceChildren(...rows.map(messageRow));
  byId('no-rows').hidden = rows.length > 0;
  byId('no-rows').textContent = hasFilters() ? 'No messages match these filters.' : 'No messages yet.';
  const range = rangeText(page, rows, total);
  byId('range').textContent = range;
  byId('messages-caption').textContent = `Messages ${range}`;
  const last = lastPage(total, state.limit);
  byId('page-number').textContent = `Page ${count(page + 1)} of ${count(last + 1)}`;
  byId('page-first').disabled = page === 0;
  byId('page-previous').disabled = page === 0;
  byId('page-next').disabled = page >= last;
  byId('page-last').disabled = page >= last;
  // A pager button that just turned disabled drops the focus; keep the reader near the list.
  if (focused instanceof HTMLButtonElement && focused.disabled) {
    byId('messages-heading').focus();
  }
  return range;
}

function clearData() {
  for (const id of ['stat-total', 'stat-senders', 'stat-first', 'stat-last']) {
    byId(id).textContent = '–';
  }
  byId('top-senders').replaceChildren();
  byId('rows').replaceChildren();
  byId('range').textContent = '';
  byId('page-number').textContent = '';
  byId('timeline-chart').replaceChildren();
  byId('timeline-caption').textContent = '';
  state.rows = [];
  showUnseen(0);
}

function markInvalidFields(fields) {
  for (const name of ['from', 'since', 'q']) {
    const input = byId(`filter-${name}`);
    if (fields.includes(name)) {
      input.setAttribute('aria-invalid', 'true');
    } else {
      input.removeAttribute('aria-invalid');
    }
  }
}

function showTokenButton() {
  byId('forget-token').hidden = !tokenStore.get();
}

function askForToken(tokenWasRefused) {
  if (tokenWasRefused) {
    tokenStore.clear();
  }
  showTokenButton();
  clearData();
  byId('inbox').hidden = true;
  byId('token-section').hidden = false;
  const reason = tokenWasRefused
    ? 'That token was not accepted (401). Enter the API token again.'
    : 'This inbox is protected by API_TOKEN: enter the token to read the messages.';
  byId('token-reason').textContent = reason;
  say(tokenWasRefused ? 'Token refused.' : 'API token needed.');
  byId('token-input').focus();
}

function showInbox() {
  byId('token-section').hidden = true;
  byId('inbox').hidden = false;
}

// ---------------------------------------------------------------------------------------------
// A message's deliveries to the forwarding destinations (FORWARD_URL), in its detail
// ---------------------------------------------------------------------------------------------

async function fetchDeliveries(messageId) {
  const params = new URLSearchParams({ message_id: messageId, limit: String(DELIVERIES_LIMIT) });
  const answer = await getJson('/deliveries', params);
  return answer.data;
}

// Reads the open message's deliveries again and shows them, unless another message was opened
// (or the dialog closed) meanwhile.
async function refreshDeliveries() {
  const { messageId, generation } = state.detail;
  if (messageId === null) {
    return;
  }
  const outcome = await settled(fetchDeliveries(messageId));
  if (generation === state.detail.generation) {
    showDeliveries(outcome);
  }
}

function stopDeliveries() {
  clearTimeout(state.detail.timer);
  state.detail.timer = null;
  state.detail.messageId = null;
  state.detail.generation += 1;
}

function showDeliveries(outcome) {
  clearTimeout(state.detail.timer);
  const note = byId('deliveries-note');
  if (outcome.status === 'rejected') {
    byId('deliveries-table').hidden = true;
    byId('deliveries-rows').replaceChildren();
    note.textContent = `The deliveries could not be read: ${outcome.reason.message}`;
    return;
  }
  const deliveries = outcome.value;
  byId('deliveries-table').hidden = deliveries.length === 0;
  byId('deliveries-rows').replaceChildren(...deliveries.map(deliveryRow));
  note.textContent = deliveriesSummary(deliveries);
  // A pending delivery changes when its next attempt is made: read the list again then.
  const due = deliveries.filter((delivery) => delivery.status === 'pending')
    .map((delivery) => Date.parse(delivery.next_attempt_at) || Date.now());
  if (due.length > 0) {
    const wait = Math.min(...due) - Date.now() + 250;
    state.detail.timer = setTimeout(refreshDeliveries,
      Math.min(DELIVERY_POLL_MAX_MS, Math.max(DELIVERY_POLL_MIN_MS, wait)));
  }
}

// One line over the table, or in its place: none (forwarding is off, or has not reached this
// message yet), or how many stand where.
function deliveriesSummary(deliveries) {
  if (deliveries.length === 0) {
    return 'Not forwarded: no deliveries for this message.';
  }
  const parts = Object.keys(DELIVERY_STATUS_NAMES)
    .map((status) => [status, deliveries.filter((delivery) => delivery.status === status).length])
    .filter(([, n]) => n > 0)
    .map(([status, n]) => `${count(n)} ${status}`);
  const destinations = `${count(deliveries.length)} ${deliveries.length === 1 ? 'destination' : 'destinations'}`;
  const failed = deliveries.some((delivery) => delivery.status === 'failed');
  const retry = failed && !tokenStore.get() ? ' Retrying needs the API token (the service’s API_TOKEN).' : '';
  return `${destinations}: ${parts.join(', ')}.${retry}`;
}

function deliveryRow(delivery) {
  const row = document.createElement('tr');
  row.dataset.status = delivery.status;
  const destination = document.createElement('span');
  destination.className = 'mono';
  destination.textContent = delivery.destination;
  row.append(
    cell('Destination', 'destination', destination),
    cell('Status', 'status', deliveryBadge(delivery.status)),
    cell('Attempts', 'attempts', count(delivery.attempts)),
    cell('Last answer', 'answer', lastAnswer(delivery)),
    cell('Next attempt', 'next', delivery.next_attempt_at === null ? '—' : timeOf(delivery.next_attempt_at)),
    cell('Action', 'action', delivery.status === 'failed' && tokenStore.get() ? retryButton(delivery.message_id, delivery.destination) : ''),
  );
  return row;
}

function deliveryBadge(status) {
  const badge = document.createElement('span');
  badge.className = `badge delivery-${DELIVERY_STATUS_NAMES[status] ? status : 'other'}`;
  badge.textContent = DELIVERY_STATUS_NAMES[status] ?? String(status);
  return badge;
}

function timeOf(instant) {
  const time = document.createElement('time');
  time.dateTime = instant;
  time.textContent = instant;
  return time;
}

// The last answer's status code, or why there was none; and when that attempt was made.
function lastAnswer(delivery) {
  if (delivery.last_attempt_at === null) {
    return 'No attempt yet';
  }
  const answer = document.createElement('span');
  answer.className = 'answer-text';
  if (delivery.last_error !== null) {
    answer.textContent = String(delivery.last_error);
  } else {
    answer.textContent = delivery.last_status_code === null ? 'No answer' : String(delivery.last_status_code);
  }
  const when = document.createElement('small');
  when.className = 'answer-time';
  when.append('at ', timeOf(delivery.last_attempt_at));
  const box = document.createElement('span');
  box.append(answer, when);
  return box;
}

// A failed row is queued again on its own: its message, to its destination (the same webhook-id,
// so a receiver can drop what it already has). Healthy destinations are not sent it again.
function retryButton(messageId, destination) {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'retry';
  button.textContent = 'Retry';
  button.setAttribute('aria-label', `Retry: send ${messageId} again to ${destination}`);
  button.addEventListener('click', () => retry(messageId, destination));
  return button;
}

async function retry(messageId, destination) {
  const { generation } = state.detail;
  for (const button of document.querySelectorAll('#deliveries-rows button.retry')) {
    button.disabled = true;
  }
  let outcome;
  try {
    const query = new URLSearchParams({ message_id: messageId, destination });
    const answer = await postJson(`/deliveries/retry-failed?${query}`);
    const n = Number(answer.requeued) || 0;
    outcome = n === 0
      ? 'Nothing to retry: the delivery is no longer failed.'
      : `Queued again for ${destination} at ${new Date().toISOString().slice(11, 19)} UTC.`;
  } catch (problem) {
    const why = problem.status === 401 ? 'the token was not accepted (401).' : problem.message;
    outcome = `The retry did not happen: ${why}`;
  }
  if (generation !== state.detail.generation) {
    return;
  }
  showRetryOutcome(outcome);
  // The buttons may be gone after the refresh: the focus stays on what happened.
  byId('deliveries-outcome').focus();
  await refreshDeliveries();
}

function showRetryOutcome(text) {
  const box = byId('deliveries-outcome');
  box.textContent = text;
  box.hidden = text === '';
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

function hasFilters() {
  return Object.values(state.filters).some(Boolean);
}

async function load() {
  state.generation += 1;
  const generation = state.generation;
  const request = {
    filters: { ...state.filters },
    order: state.order,
    limit: state.limit,
    page: state.page,
  };
  byId('inbox').setAttribute('aria-busy', 'true');
  say('Loading…');
  const [stats, list] = await Promise.allSettled([getJson('/stats'), fetchPage(request)]);
  loadTimeline();
  if (generation !== state.generation) {
    return;
  }
  try {
    present(stats, list);
  } finally {
    byId('inbox').setAttribute('aria-busy', 'false');
    state.loads += 1;
    document.body.dataset.loads = String(state.loads);
  }
}

function present(stats, list) {
  const refused = [stats, list].find((outcome) => outcome.status === 'rejected' && outcome.reason.status === 401);
  if (refused) {
    stopFollowing();
    askForToken(refused.reason.tokenSent);
    return;
  }
  showInbox();
  const problems = [];
  if (stats.status === 'fulfilled') {
    showStats(stats.value);
  } else {
    problems.push(`Stats: ${stats.reason.message}`);
  }
  let range = '';
  if (list.status === 'fulfilled') {
    state.page = list.value.page;
    state.knownTotal = list.value.total;
    state.rows = list.value.rows;
    range = showPage(list.value);
    showUnseen(0);
    follow();
    markInvalidFields([]);
  } else {
    byId('rows').replaceChildren();
    byId('range').textContent = '';
    markInvalidFields(list.reason.fields || []);
    problems.push(`Messages: ${list.reason.message}`);
  }
  if (problems.length > 0) {
    showProblem(problems.join('\n'));
    say('Something went wrong; see the message above.');
  } else {
    hideProblem();
    say(`Updated at ${new Date().toISOString().slice(11, 19)} UTC: ${range}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Live: new messages from /messages/stream, as they arrive
// ---------------------------------------------------------------------------------------------

const RECONNECT_MS = [500, 1000, 2000, 5000];

function setLive(status, label) {
  const badge = byId('live');
  badge.dataset.state = status;
  badge.textContent = label;
}

// Follows the stream with the filters on show; a change of filters or token starts it afresh.
// fetch, not EventSource: only fetch can send the token.
function follow() {
  const key = JSON.stringify([state.filters, tokenStore.get()]);
  if (state.live && state.live.key === key) {
    return;
  }
  stopFollowing();
  const live = { key, filters: { ...state.filters }, controller: new AbortController(), lastId: null };
  state.live = live;
  readStream(live);
}

function stopFollowing() {
  if (state.live) {
    state.live.controller.abort();
    state.live = null;
  }
  setLive('off', 'Not live');
}

async function readStream(live) {
  for (let attempt = 0; !live.controller.signal.aborted; attempt += 1) {
    try {
      const status = await streamOnce(live, () => { attempt = 0; });
      if (status === 401 || status === 422) {
        // The next load asks for the token or shows the refused filters.
        stopFollowing();
        return;
      }
    } catch {
      // A lost connection: try again below, from the last id.
    }
    if (live.controller.signal.aborted) {
      return;
    }
    setLive('reconnecting', 'Reconnecting…');
    await new Promise((resolve) => { setTimeout(resolve, RECONNECT_MS[Math.min(attempt, RECONNECT_MS.length - 1)]); });
  }
}

// Reads one connection of the stream until it ends; returns its status when it was refused.
async function streamOnce(live, connected) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(live.filters)) {
    if (value) {
      params.set(name, value);
    }
  }
  const headers = { Accept: 'text/event-stream' };
  const token = tokenStore.get();
  if (token) {
    headers.Authorization = `Bearer ${token}`;
  }
  if (live.lastId !== null) {
    headers['Last-Event-ID'] = live.lastId;
  }
  const query = params.toString();
  const response = await fetch(`/messages/stream${query ? `?${query}` : ''}`, {
    headers, cache: 'no-store', signal: live.controller.signal,
  });
  if (!response.ok) {
    return response.status;
  }
  setLive('live', 'Live');
  connected();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      return 200;
    }
    buffer += value.replace(/\r\n?/g, '\n');
    let end = buffer.indexOf('\n\n');
    while (end >= 0) {
      takeFrame(live, buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      end = buffer.indexOf('\n\n');
    }
  }
}

function takeFrame(live, frame) {
  let id = null;
  let event = null;
  let data = '';
  for (const line of frame.split('\n')) {
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'id') {
      id = value;
    } else if (field === 'event') {
      event = value;
    } else if (field === 'data') {
      data += value;
    }
  }
  if (id !== null) {
    live.lastId = id;
  }
  if (event === 'message' && live === state.live) {
    arrived(JSON.parse(data));
  }
}

// A message matching the filters on show arrived. Newest first, on the first page, it slides in
// at the top when it is the newest by its timestamp; anywhere else the bar counts it.
function arrived(message) {
  state.knownTotal = (state.knownTotal ?? 0) + 1;
  const top = state.rows[0];
  const belongsOnTop = state.order === 'newest' && state.page === 0
    && (!top || Date.parse(message.ts) >= Date.parse(top.ts));
  if (belongsOnTop) {
    state.rows = [message, ...state.rows].slice(0, state.limit);
    const range = showPage({ rows: state.rows, total: state.knownTotal, page: 0 });
    byId('rows').firstElementChild.classList.add('arrived');
    say(`A message arrived at ${new Date().toISOString().slice(11, 19)} UTC: ${range}`);
  } else {
    showUnseen(state.unseen + 1);
    byId('range').textContent = rangeText(state.page, state.rows, state.knownTotal);
  }
  refreshFiguresSoon();
}

function showUnseen(n) {
  state.unseen = n;
  byId('new-messages').hidden = n === 0;
  byId('new-messages-text').textContent = `${count(n)} new ${n === 1 ? 'message' : 'messages'}`;
}

function showNewest() {
  byId('filter-order').value = 'newest';
  readForm();
  state.page = 0;
  writeAddress();
  load();
}

// The figures and the chart, read again once a burst of arrivals is over.
let figuresTimer = null;
function refreshFiguresSoon() {
  clearTimeout(figuresTimer);
  figuresTimer = setTimeout(async () => {
    try {
      showStats(await getJson('/stats'));
    } catch {
      // The next load shows what is wrong.
    }
    loadTimeline();
  }, 300);
}

// ---------------------------------------------------------------------------------------------
// The chart of messages over time (inline SVG, no library)
// ---------------------------------------------------------------------------------------------

const SVG = 'http://www.w3.org/2000/svg';

async function loadTimeline() {
  const bucket = state.timelineBucket;
  try {
    const timeline = await getJson('/stats/timeline', new URLSearchParams({ bucket }));
    if (bucket === state.timelineBucket) {
      drawTimeline(timeline);
    }
  } catch (problem) {
    byId('timeline-caption').textContent = `The chart could not be read: ${problem.message}`;
  }
}

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) {
    element.setAttribute(key, String(value));
  }
  return element;
}

function bucketLabel(start, bucket) {
  return bucket === 'hour' ? `${start.slice(11, 13)}:00` : start.slice(5, 10);
}

function drawTimeline({ bucket, buckets }) {
  // As wide as its box (in CSS pixels), so that the labels keep their size on a phone.
  const width = Math.min(960, Math.max(300, byId('timeline-chart').clientWidth || 720));
  const height = 180;
  const pad = { top: 16, right: 8, bottom: 24, left: 40 };
  const plotWidth = width - pad.left - pad.right;
  const plotHeight = height - pad.top - pad.bottom;
  const counts = buckets.map((b) => b.count);
  const most = Math.max(1, ...counts);
  const total = counts.reduce((sum, n) => sum + n, 0);
  const span = bucket === 'hour' ? 'the last 24 hours' : 'the last 30 days';
  const summary = `${count(total)} ${total === 1 ? 'message' : 'messages'} in ${span}; at most ${count(Math.max(0, ...counts))} in one ${bucket}`;
  const svg = svgElement('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': summary });
  svg.append(svgElement('line', { class: 'axis', x1: pad.left, x2: width - pad.right, y1: pad.top + plotHeight, y2: pad.top + plotHeight }));
  const top = svgElement('text', { x: pad.left - 6, y: pad.top + 4, 'text-anchor': 'end' });
  top.textContent = count(most);
  const zero = svgElement('text', { x: pad.left - 6, y: pad.top + plotHeight, 'text-anchor': 'end' });
  zero.textContent = '0';
  svg.append(top, zero);
  const slot = plotWidth / Math.max(1, buckets.length);
  buckets.forEach((b, index) => {
    const barHeight = (b.count / most) * plotHeight;
    const bar = svgElement('rect', {
      class: 'bar',
      x: (pad.left + index * slot + slot * 0.1).toFixed(1),
      y: (pad.top + plotHeight - barHeight).toFixed(1),
      width: (slot * 0.8).toFixed(1),
      height: barHeight.toFixed(1),
      'data-count': b.count,
      'data-start': b.start,
    });
    const tooltip = svgElement('title', {});
    tooltip.textContent = `${b.start}: ${count(b.count)} ${b.count === 1 ? 'message' : 'messages'}`;
    bar.append(tooltip);
    svg.append(bar);
    const labelled = index === 0 || index === buckets.length - 1 || index === Math.floor(buckets.length / 2);
    if (labelled) {
      const label = svgElement('text', { x: (pad.left + index * slot + slot / 2).toFixed(1), y: height - 6, 'text-anchor': 'middle' });
      label.textContent = bucketLabel(b.start, bucket);
      svg.append(label);
    }
  });
  byId('timeline-chart').replaceChildren(svg);
  byId('timeline-caption').textContent = `${summary[0].toUpperCase()}${summary.slice(1)} (UTC, by time of arrival).`;
}

// ---------------------------------------------------------------------------------------------
// The reader's actions
// ---------------------------------------------------------------------------------------------

// A bare date means midnight UTC of that day.
function normalisedSince(text) {
  return /^\d{4}-\d{2}-\d{2}$/.test(text) ? `${text}T00:00:00Z` : text;
}

function readForm() {
  const since = normalisedSince(byId('filter-since').value.trim());
  byId('filter-since').value = since;
  state.filters = {
    from: byId('filter-from').value.trim(),
    since,
    q: byId('filter-q').value,
  };
  state.order = ORDERS.includes(byId('filter-order').value) ? byId('filter-order').value : 'newest';
  state.limit = Number(byId('filter-limit').value) || DEFAULT_PAGE_SIZE;
}

function writeForm() {
  byId('filter-from').value = state.filters.from;
  byId('filter-since').value = state.filters.since;
  byId('filter-q').value = state.filters.q;
  byId('filter-order').value = state.order;
  byId('filter-limit').value = String(state.limit);
}

// The filters live in the address, so a reload or a shared link shows the same list.
function writeAddress() {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(state.filters)) {
    if (value) {
      params.set(name, value);
    }
  }
  if (state.order !== 'newest') {
    params.set('order', state.order);
  }
  if (state.limit !== DEFAULT_PAGE_SIZE) {
    params.set('limit', String(state.limit));
  }
  const query = params.toString();
  history.replaceState(null, '', query ? `?${query}` : location.pathname);
}

function readAddress() {
  const params = new URLSearchParams(location.search);
  state.filters = {
    from: params.get('from') || '',
    since: params.get('since') || '',
    q: params.get('q') || '',
  };
  const order = params.get('order');
  state.order = ORDERS.includes(order) ? order : 'newest';
  const limit = Number(params.get('limit'));
  state.limit = PAGE_SIZES.includes(limit) ? limit : DEFAULT_PAGE_SIZE;
}

function applyForm() {
  readForm();
  state.page = 0;
  state.knownTotal = null;
  writeAddress();
  load();
}

function goToPage(page) {
  state.page = Math.max(0, page);
  load();
}

function useToken(event) {
  event.preventDefault();
  const input = byId('token-input');
  const token = input.value.trim();
  if (!/^[\x20-\x7e]+$/.test(token)) {
    byId('token-reason').textContent = 'A token is printable ASCII text; enter it again.';
    input.focus();
    return;
  }
  tokenStore.set(token);
  input.value = '';
  showTokenButton();
  showInbox();
  state.knownTotal = null;
  load();
}

function forgetToken() {
  tokenStore.clear();
  showTokenButton();
  clearData();
  say('Token forgotten.');
  load();
}

function start() {
  readAddress();
  writeForm();
  showTokenButton();
  byId('filters').addEventListener('submit', (event) => {
    event.preventDefault();
    applyForm();
  });
  byId('filter-order').addEventListener('change', applyForm);
  byId('filter-limit').addEventListener('change', applyForm);
  byId('clear-filters').addEventListener('click', () => {
    byId('filter-from').value = '';
    byId('filter-since').value = '';
    byId('filter-q').value = '';
    applyForm();
  });
  byId('refresh').addEventListener('click', () => {
    state.knownTotal = null;
    load();
  });
  byId('page-first').addEventListener('click', () => goToPage(0));
  byId('page-previous').addEventListener('click', () => goToPage(state.page - 1));
  byId('page-next').addEventListener('click', () => goToPage(state.page + 1));
  byId('page-last').addEventListener('click', () => goToPage(lastPage(state.knownTotal ?? 0, state.limit)));
  byId('token-form').addEventListener('submit', useToken);
  byId('detail-close').addEventListener('click', () => byId('detail').close());
  byId('forget-token').addEventListener('click', forgetToken);
  byId('show-new').addEventListener('click', showNewest);
  byId('timeline-window').addEventListener('change', () => {
    state.timelineBucket = byId('timeline-window').value === 'day' ? 'day' : 'hour';
    loadTimeline();
  });
  load();
}

start();
