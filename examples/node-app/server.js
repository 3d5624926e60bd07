#!/usr/bin/env node
// shop-bot: the backend of a Telegram shop bot.
//
// Each customer (one shop owner) has a product catalog that the bot sells
// from, and places orders through it. The service has its own conventions
// (camelCase JSON, /api/v1 routes, unix timestamps, upper-case statuses)
// and knows nothing about Zimmer: the sidecar maps it.
//
// Node.js 20. State is kept in memory, or in a JSON file when --data-file
// or SHOP_DATA_FILE is set. One npm package, the official openai client, is
// used by the assistant route alone (npm ci here installs it); without it
// the assistant answers 503 and everything else works.
//
//   node server.js [--host 127.0.0.1] [--port 8001] [--data-file FILE]
//
// The assistant calls OpenAI with the package's defaults: OPENAI_BASE_URL
// (default the public API) and OPENAI_API_KEY from the environment, the
// model from SHOP_OPENAI_MODEL (default gpt-4o-mini).
//
// Prints "listening on HOST:PORT" on stdout once bound (--port 0 picks a
// free port). Request logs go to stderr. SIGTERM/SIGINT: stop accepting,
// end event streams and WebSockets, give running requests --grace seconds,
// exit 0.
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');
const fs = require('node:fs');
const { isUtf8 } = require('node:buffer');
const { once } = require('node:events');

const MAX_BODY = 1 << 20;
const MAX_SLOW_MS = 600_000;
const SKU = /^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/;

const nowSec = () => Math.floor(Date.now() / 1000);
const isId = (v) => Number.isSafeInteger(v) && v > 0;

class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const notFound = (id) =>
  new HttpError(404, 'NOT_FOUND', `customer ${id} not found`);
const badRequest = (message) => new HttpError(400, 'BAD_REQUEST', message);

// ---------------------------------------------------------------------------
// Storage

// Customers and their catalogs. A catalog's status is EMPTY with no items,
// READY once synced, SYNCING while a deferred sync is pending and FAILED
// after a failed sync. updatedAt is unix seconds of the last change.
class Store {
  constructor(file) {
    this.file = file;
    this.customers = new Map();
    this.nextOrderId = 1;
    if (file && fs.existsSync(file)) {
      const doc = JSON.parse(fs.readFileSync(file, 'utf8'));
      for (const c of doc.customers) this.customers.set(c.id, c);
      this.nextOrderId = doc.nextOrderId;
    }
  }

  save() {
    if (!this.file) return;
    const doc = {
      customers: [...this.customers.values()],
      nextOrderId: this.nextOrderId,
    };
    const tmp = `${this.file}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(doc));
    fs.renameSync(tmp, this.file);
  }

  get(id) {
    const c = this.customers.get(id);
    if (!c) throw notFound(id);
    return c;
  }

  // upsert creates or updates a customer and reports which it did.
  upsert(id, ownerId, botToken) {
    const now = nowSec();
    let c = this.customers.get(id);
    const created = !c;
    if (created) {
      c = { id, ownerId, botToken, createdAt: now, items: [], orders: 0 };
      c.catalog = { status: 'EMPTY', updatedAt: now };
      this.customers.set(id, c);
    } else {
      c.ownerId = ownerId;
      c.botToken = botToken;
    }
    this.save();
    return { customer: c, created };
  }

  putItem(id, item, deferSync) {
    const c = this.get(id);
    const at = c.items.findIndex((i) => i.sku === item.sku);
    if (at >= 0) c.items[at] = item;
    else c.items.push(item);
    c.catalog = {
      status: deferSync ? 'SYNCING' : 'READY',
      updatedAt: nowSec(),
    };
    this.save();
    return at < 0;
  }

  sync(id, fail) {
    const c = this.get(id);
    let status = c.items.length ? 'READY' : 'EMPTY';
    if (fail) status = 'FAILED';
    c.catalog = { status, updatedAt: nowSec() };
    this.save();
  }

  reset(id) {
    const c = this.get(id);
    const removed = c.items.length;
    c.items = [];
    c.catalog = { status: 'EMPTY', updatedAt: nowSec() };
    this.save();
    return removed;
  }

  order(id, lines) {
    const c = this.get(id);
    let total = 0;
    const priced = lines.map(({ sku, qty }) => {
      const item = c.items.find((i) => i.sku === sku);
      if (!item) {
        throw new HttpError(422, 'UNKNOWN_SKU', `no item ${sku} in catalog`);
      }
      total += item.price * qty;
      return { sku, qty, price: item.price };
    });
    c.orders += 1;
    const order = {
      orderId: this.nextOrderId++,
      customerId: id,
      lines: priced,
      total: Math.round(total * 100) / 100,
      createdAt: nowSec(),
    };
    this.save();
    return order;
  }
}

// The public view of a customer: the bot token stays inside.
function customerView(c) {
  return {
    customerId: c.id,
    ownerId: c.ownerId,
    hasBotToken: Boolean(c.botToken),
    createdAt: c.createdAt,
    orders: c.orders,
  };
}

function catalogView(c) {
  return {
    items: c.items.length,
    updatedAt: c.catalog.updatedAt,
    status: c.catalog.status,
  };
}

// ---------------------------------------------------------------------------
// HTTP helpers

function sendJson(ctx, status, payload, headers = {}) {
  const body = Buffer.from(JSON.stringify(payload));
  ctx.status = status;
  const h = {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': body.length,
    ...headers,
  };
  if (ctx.app.stopping) h.Connection = 'close';
  ctx.res.writeHead(status, h);
  ctx.res.end(ctx.req.method === 'HEAD' ? undefined : body);
}

// readJson resolves to the body as a JSON object ({} when empty).
function readJson(ctx) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    ctx.req.on('data', (chunk) => {
      size += chunk.length;
      if (size <= MAX_BODY) chunks.push(chunk);
    });
    ctx.req.on('error', reject);
    ctx.req.on('end', () => {
      if (size > MAX_BODY) {
        return reject(new HttpError(413, 'TOO_LARGE', 'body over 1 MiB'));
      }
      const raw = Buffer.concat(chunks).toString('utf8').trim();
      if (!raw) return resolve({});
      let doc;
      try {
        doc = JSON.parse(raw);
      } catch {
        return reject(badRequest('body is not valid JSON'));
      }
      if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
        return reject(badRequest('body must be a JSON object'));
      }
      resolve(doc);
    });
  });
}

function queryInt(ctx, name, fallback, max) {
  const raw = ctx.url.searchParams.get(name);
  if (raw === null || raw === '') return fallback;
  if (!/^\d{1,9}$/.test(raw) || Number(raw) > max) {
    throw badRequest(`${name} must be an integer in [0, ${max}]`);
  }
  return Number(raw);
}

const truthy = (v) => ['1', 'true', 'yes'].includes((v || '').toLowerCase());

// ---------------------------------------------------------------------------
// Routes: [method, pattern, handler]. Patterns match the whole path; their
// groups are passed to the handler as numbers.

const CUSTOMER = '/api/v1/customers/(\\d{1,15})';
const routes = [];
const route = (method, pattern, fn) =>
  routes.push({ method, re: new RegExp(`^${pattern}$`), fn });

route('GET', '/status', async (ctx) => {
  const { knobs } = ctx.app;
  if (knobs.delayMs) await sleep(knobs.delayMs);
  const green = !knobs.down && !ctx.app.stopping;
  sendJson(ctx, green ? 200 : 503, { state: green ? 'green' : 'red' });
});

// Makes /status fail or slow down, for probe tests.
route('POST', '/debug/status', async (ctx) => {
  const { down = false, delayMs = 0 } = await readJson(ctx);
  if (typeof down !== 'boolean') throw badRequest('down must be a boolean');
  if (!Number.isSafeInteger(delayMs) || delayMs < 0 || delayMs > 60_000) {
    throw badRequest('delayMs must be an integer in [0, 60000]');
  }
  ctx.app.knobs = { down, delayMs };
  sendJson(ctx, 200, { knobs: ctx.app.knobs });
});

// What this service received, so a proxy in front of it can be checked.
route('ANY', '/debug/echo', async (ctx) => {
  let bodyBytes = 0;
  for await (const chunk of ctx.req) bodyBytes += chunk.length;
  sendJson(ctx, 200, {
    method: ctx.req.method,
    path: ctx.url.pathname,
    query: Object.fromEntries(ctx.url.searchParams),
    headers: ctx.req.rawHeaders,
    bodyBytes,
  });
});

route('PUT', CUSTOMER, async (ctx, id) => {
  if (!isId(id)) throw badRequest('customer ids start at 1');
  const { ownerId, botToken = null } = await readJson(ctx);
  if (!isId(ownerId)) throw badRequest('ownerId must be a positive integer');
  if (botToken !== null && typeof botToken !== 'string') {
    throw badRequest('botToken must be a string or null');
  }
  const { customer, created } = ctx.app.store.upsert(
    id,
    ownerId,
    botToken || null,
  );
  ctx.note = ` customer=${id} created=${created}`;
  sendJson(ctx, created ? 201 : 200, { customer: customerView(customer) });
});

route('GET', CUSTOMER, async (ctx, id) => {
  sendJson(ctx, 200, { customer: customerView(ctx.app.store.get(id)) });
});

route('GET', `${CUSTOMER}/catalog`, async (ctx, id) => {
  sendJson(ctx, 200, { catalog: catalogView(ctx.app.store.get(id)) });
});

route('DELETE', `${CUSTOMER}/catalog`, async (ctx, id) => {
  const removed = ctx.app.store.reset(id);
  const catalog = catalogView(ctx.app.store.get(id));
  sendJson(ctx, 200, { removed, catalog });
});

// Adds or replaces an item; ?sync=later leaves the catalog SYNCING until
// POST .../catalog/sync.
route('POST', `${CUSTOMER}/catalog/items`, async (ctx, id) => {
  const { sku, name, price } = await readJson(ctx);
  if (typeof sku !== 'string' || !SKU.test(sku)) {
    throw badRequest('sku must be 1-32 letters, digits, - or _');
  }
  if (typeof name !== 'string' || !name.trim()) {
    throw badRequest('name must be a non-empty string');
  }
  if (typeof price !== 'number' || !(price >= 0) || price > 1e9) {
    throw badRequest('price must be a number >= 0');
  }
  const later = ctx.url.searchParams.get('sync') === 'later';
  const item = { sku, name: name.trim(), price, addedAt: nowSec() };
  const added = ctx.app.store.putItem(id, item, later);
  const catalog = catalogView(ctx.app.store.get(id));
  sendJson(ctx, added ? 201 : 200, { item, catalog });
});

// Finishes a pending sync; {"fail": true} simulates a failed one.
route('POST', `${CUSTOMER}/catalog/sync`, async (ctx, id) => {
  const { fail = false } = await readJson(ctx);
  if (typeof fail !== 'boolean') throw badRequest('fail must be a boolean');
  ctx.app.store.sync(id, fail);
  sendJson(ctx, 200, { catalog: catalogView(ctx.app.store.get(id)) });
});

route('POST', '/api/v1/orders', async (ctx) => {
  const raw = ctx.url.searchParams.get('customer') || '';
  if (!/^\d{1,15}$/.test(raw) || Number(raw) === 0) {
    throw badRequest('query parameter customer must be a customer id');
  }
  const { items } = await readJson(ctx);
  const ok =
    Array.isArray(items) &&
    items.length > 0 &&
    items.length <= 100 &&
    items.every(
      (l) =>
        l &&
        typeof l.sku === 'string' &&
        Number.isSafeInteger(l.qty) &&
        l.qty > 0 &&
        l.qty <= 1000,
    );
  if (!ok) throw badRequest('items must be 1-100 {sku, qty} lines');
  const order = ctx.app.store.order(Number(raw), items);
  ctx.note = ` customer=${raw} order=${order.orderId}`;
  sendJson(ctx, 201, { order });
});

// Server-sent events: n "tick" events intervalMs apart, then "end".
route('GET', '/api/v1/events', async (ctx) => {
  const n = queryInt(ctx, 'n', 5, 100_000);
  const interval = queryInt(ctx, 'intervalMs', 50, 60_000);
  const { res } = ctx;
  ctx.status = 200;
  res.writeHead(200, {
    'Content-Type': 'text/event-stream',
    'Cache-Control': 'no-cache',
  });
  if (ctx.req.method === 'HEAD') return void res.end();
  res.flushHeaders();
  let sent = 0;
  const stop = new AbortController();
  const onClose = () => stop.abort();
  res.on('close', onClose);
  ctx.app.streams.add(stop);
  try {
    for (let i = 0; i < n && !stop.signal.aborted; i++) {
      if (i > 0) await sleep(interval, stop.signal);
      if (stop.signal.aborted) break;
      const data = JSON.stringify({ seq: i, at: Date.now() });
      res.write(`id: ${i}\nevent: tick\ndata: ${data}\n\n`);
      sent++;
    }
    if (!res.destroyed) {
      const data = JSON.stringify({ sent, complete: sent === n });
      res.end(`event: end\ndata: ${data}\n\n`);
    }
  } finally {
    ctx.app.streams.delete(stop);
    res.off('close', onClose);
    ctx.note = ` events=${sent}`;
  }
});

route('GET', '/slow', async (ctx) => {
  const ms = queryInt(ctx, 'ms', 1000, MAX_SLOW_MS);
  const started = Date.now();
  await sleep(ms, ctx.app.graceOver.signal);
  sendJson(ctx, 200, { sleptMs: Date.now() - started, askedMs: ms });
});

route('GET', '/ws', async (ctx) => {
  sendJson(
    ctx,
    426,
    { code: 'UPGRADE_REQUIRED', message: 'connect with a WebSocket client' },
    { Upgrade: 'websocket', Connection: 'Upgrade' },
  );
});

// ---------------------------------------------------------------------------
// Assistant: answers a shopper's question about one customer's catalog with
// OpenAI chat completions, through the official openai package.

const MAX_QUESTION = 2000; // characters
const PROMPT_ITEMS = 200; // catalog items given to the model, at most
const ANSWER_MAX_TOKENS = 512;
// Names the customer a call is charged to, for the Zimmer sidecar's egress
// (which removes it before the call leaves the machine).
const USER_HEADER = 'X-Zimmer-User-Automation-Id';
// An upstream error code shown to clients: lower-case words only, so that
// nothing that looks like a key or an echo of one is passed on.
const ERROR_CODE = /^[a-z_]{1,64}$/;

const unavailable = (message) =>
  new HttpError(503, 'ASSISTANT_UNAVAILABLE', message);

// openaiClient returns the app's OpenAI client, loading the package and
// creating the client on first use with the package's defaults. 503 when
// the package is not installed or OPENAI_API_KEY is not set.
function openaiClient(app) {
  if (app.openai) return app.openai;
  let sdk;
  try {
    sdk = require('openai');
  } catch (err) {
    if (err.code !== 'MODULE_NOT_FOUND') throw err;
    throw unavailable('the openai package is not installed (run npm ci)');
  }
  let client;
  try {
    client = new sdk.OpenAI();
  } catch (err) {
    if (!(err instanceof sdk.OpenAIError)) throw err;
    throw unavailable('OPENAI_API_KEY is not set');
  }
  app.openai = { sdk, client };
  return app.openai;
}

// upstreamError turns an error of the openai package into the HttpError
// the client gets: the upstream status and a fixed message, never the
// upstream's text or headers. Anything else is returned as it is.
function upstreamError(sdk, err) {
  if (err instanceof sdk.APIConnectionTimeoutError) {
    return new HttpError(504, 'OPENAI_TIMEOUT', 'OpenAI did not answer in time');
  }
  if (err instanceof sdk.APIConnectionError) {
    return new HttpError(502, 'OPENAI_UNREACHABLE', 'OpenAI could not be reached');
  }
  if (!(err instanceof sdk.APIError)) return err;
  const { status } = err;
  const code = typeof err.code === 'string' && ERROR_CODE.test(err.code)
    ? ` (${err.code})` : '';
  if (Number.isInteger(status) && status >= 400 && status <= 599) {
    return new HttpError(status, 'OPENAI_ERROR', `OpenAI answered ${status}${code}`);
  }
  return new HttpError(502, 'OPENAI_ERROR', `OpenAI failed${code}`);
}

// The chat messages for a question about customer c's catalog.
function assistantMessages(c, question) {
  const lines = c.items
    .slice(0, PROMPT_ITEMS)
    .map((i) => `- ${i.sku}: ${i.name}, ${i.price}`);
  const catalog = lines.length ? lines.join('\n') : '(no items yet)';
  return [
    {
      role: 'system',
      content:
        'You are the shopping assistant of a Telegram shop. Answer in a ' +
        'few sentences, from this catalog only (SKU: name, price):\n' +
        catalog,
    },
    { role: 'user', content: question },
  ];
}

function usageView(u) {
  if (!u) return null;
  return {
    promptTokens: u.prompt_tokens,
    completionTokens: u.completion_tokens,
    totalTokens: u.total_tokens,
  };
}

// {"question": str, "stream": bool} → {"answer", "model", "finishReason",
// "usage"}; with stream true, server-sent events: "delta" {"text"} as the
// model writes, then "end" {"complete", "finishReason", "usage"} ("error"
// {"code", "message"} instead when the upstream fails mid-stream). The call
// is charged to customer :id. Shutdown gives the call the grace period;
// then the stream ends with "end" {"complete": false, "reason": "SHUTDOWN"}.
route('POST', `${CUSTOMER}/assistant`, async (ctx, id) => {
  const { question, stream = false } = await readJson(ctx);
  if (
    typeof question !== 'string' ||
    !question.trim() ||
    question.length > MAX_QUESTION
  ) {
    throw badRequest(`question must be 1-${MAX_QUESTION} characters`);
  }
  if (typeof stream !== 'boolean') throw badRequest('stream must be a boolean');
  const customer = ctx.app.store.get(id);
  const { sdk, client } = openaiClient(ctx.app);
  ctx.note = ` customer=${id} stream=${stream}`;

  // The call ends when the client goes away or the grace period is over.
  const call = new AbortController();
  const cancel = () => call.abort();
  const { graceOver } = ctx.app;
  ctx.res.on('close', cancel);
  graceOver.signal.addEventListener('abort', cancel);

  const params = {
    model: ctx.app.model,
    messages: assistantMessages(customer, question.trim()),
    max_completion_tokens: ANSWER_MAX_TOKENS,
  };
  const options = {
    headers: { [USER_HEADER]: String(id) },
    signal: call.signal,
  };
  try {
    if (stream) await relayAnswer(ctx, sdk, client, params, options);
    else await answerOnce(ctx, client, params, options);
  } catch (err) {
    // The client left: the call was aborted with it, nobody to answer.
    if (ctx.res.destroyed) return void (ctx.note += ' left=client');
    if (graceOver.signal.aborted) {
      throw new HttpError(503, 'SHUTTING_DOWN', 'the service is shutting down');
    }
    throw upstreamError(sdk, err);
  } finally {
    ctx.res.off('close', cancel);
    graceOver.signal.removeEventListener('abort', cancel);
  }
});

async function answerOnce(ctx, client, params, options) {
  const completion = await client.chat.completions.create(params, options);
  const choice = completion.choices?.[0];
  const usage = usageView(completion.usage);
  if (usage) ctx.note += ` tokens=${usage.totalTokens}`;
  sendJson(ctx, 200, {
    answer: choice?.message?.content ?? '',
    model: completion.model,
    finishReason: choice?.finish_reason ?? null,
    usage,
  });
}

// relayAnswer asks for a streamed completion and writes each piece of text
// to the client as its own event, at once. The upstream's status is known
// before the first byte goes out, so a refusal is still a JSON error.
async function relayAnswer(ctx, sdk, client, params, options) {
  const stream = await client.chat.completions.create(
    { ...params, stream: true, stream_options: { include_usage: true } },
    options,
  );
  const { res } = ctx;
  ctx.status = 200;
  const headers = { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' };
  if (ctx.app.stopping) headers.Connection = 'close';
  res.writeHead(200, headers);
  res.flushHeaders();

  let usage = null;
  let finishReason = null;
  let deltas = 0;
  let failure = null;
  try {
    for await (const chunk of stream) {
      if (chunk.usage) usage = usageView(chunk.usage);
      const choice = chunk.choices?.[0];
      if (choice?.finish_reason) finishReason = choice.finish_reason;
      const text = choice?.delta?.content;
      if (!text) continue;
      deltas++;
      await writeEvent(res, 'delta', { text }, options.signal);
    }
  } catch (err) {
    failure = err;
  }
  ctx.note += ` deltas=${deltas}${usage ? ` tokens=${usage.totalTokens}` : ''}`;

  // The client left: nothing to tell it (the call was aborted with it).
  if (res.destroyed) return void (ctx.note += ' left=client');
  if (ctx.app.graceOver.signal.aborted) {
    ctx.note += ' cut=shutdown';
    return endStream(ctx, sse('end', { complete: false, reason: 'SHUTDOWN', usage }));
  }
  if (failure) {
    const { code, message } = streamFailure(sdk, failure);
    ctx.note += ` failed=${code}`;
    return endStream(ctx, sse('error', { code, message }));
  }
  endStream(ctx, sse('end', { complete: finishReason !== null, finishReason, usage }));
}

// endStream writes the last event. When the app is stopping, the connection
// is closed after it: the stream's headers went out before the stop without
// "Connection: close", and an idle keep-alive connection would hold the
// shutdown until the grace is over.
function endStream(ctx, last) {
  ctx.res.end(last, () => {
    if (ctx.app.stopping) ctx.req.socket.end();
  });
}

// streamFailure describes an error met after the stream began: an error
// event from the upstream, or its connection breaking off.
function streamFailure(sdk, err) {
  const e = upstreamError(sdk, err);
  if (e instanceof HttpError) return e;
  // Not from the upstream's answer (its text could echo secrets): safe to log.
  log(`error: assistant stream: ${err.name}: ${err.message}`);
  return { code: 'OPENAI_STREAM_BROKEN', message: 'the answer from OpenAI broke off' };
}

const sse = (event, data) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;

// writeEvent writes one event and waits while the client's buffer is full
// (until signal aborts).
async function writeEvent(res, event, data, signal) {
  if (res.write(sse(event, data))) return;
  await once(res, 'drain', { signal });
}

// sleep resolves after ms, or early when signal aborts.
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

async function dispatch(app, req, res) {
  const started = process.hrtime.bigint();
  const ctx = { app, req, res, status: 0, note: '' };
  try {
    ctx.url = new URL(req.url, 'http://localhost');
    const allowed = new Set();
    for (const r of routes) {
      const m = r.re.exec(ctx.url.pathname);
      if (!m) continue;
      const method = req.method === 'HEAD' ? 'GET' : req.method;
      if (r.method === method || r.method === 'ANY') {
        await r.fn(ctx, ...m.slice(1).map(Number));
        return;
      }
      allowed.add(r.method);
    }
    if (allowed.size) {
      throw Object.assign(
        new HttpError(405, 'METHOD_NOT_ALLOWED', 'method not allowed'),
        { allow: [...allowed].join(', ') },
      );
    }
    throw new HttpError(404, 'NOT_FOUND', `no route for ${ctx.url.pathname}`);
  } catch (err) {
    if (!(err instanceof HttpError)) {
      log(`error: ${err.stack || err}`);
      err = new HttpError(500, 'INTERNAL', 'something went wrong');
    }
    if (!res.headersSent && !res.destroyed) {
      const headers = err.allow ? { Allow: err.allow } : {};
      if (err.status === 413) headers.Connection = 'close';
      sendJson(ctx, err.status, { code: err.code, message: err.message }, headers);
    } else {
      res.destroy();
    }
  } finally {
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    // The query string is left out: it may carry credentials.
    const path = ctx.url ? ctx.url.pathname : '?';
    log(
      `${req.socket.remoteAddress} ${req.method} ${path} ` +
        `${ctx.status || res.statusCode} ${ms.toFixed(1)}ms${ctx.note}`,
    );
  }
}

function log(line) {
  process.stderr.write(`[shop] ${new Date().toISOString()} ${line}\n`);
}

// ---------------------------------------------------------------------------
// WebSocket echo at /ws (RFC 6455), written against node:net sockets.

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const WS_MAX_MESSAGE = 1 << 20;

class WsClose extends Error {
  constructor(code, reason) {
    super(reason);
    this.code = code;
  }
}

function rejectUpgrade(socket, status, text, extra = '') {
  const body = JSON.stringify({ code: 'BAD_UPGRADE', message: text });
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\n` +
      'Content-Type: application/json\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n${extra}` +
      `Connection: close\r\n\r\n${body}`,
  );
}

function onUpgrade(app, req, socket, head) {
  const path = new URL(req.url, 'http://localhost').pathname;
  const key = req.headers['sec-websocket-key'] || '';
  if (path !== '/ws') return rejectUpgrade(socket, 404, 'no such route');
  if (app.stopping) return rejectUpgrade(socket, 503, 'shutting down');
  if (
    req.method !== 'GET' ||
    (req.headers.upgrade || '').toLowerCase() !== 'websocket' ||
    Buffer.from(key, 'base64').length !== 16
  ) {
    return rejectUpgrade(socket, 400, 'not a WebSocket handshake');
  }
  if (req.headers['sec-websocket-version'] !== '13') {
    return rejectUpgrade(socket, 426, 'version 13 only',
      'Sec-WebSocket-Version: 13\r\n');
  }
  const accept = crypto
    .createHash('sha1')
    .update(key + WS_GUID)
    .digest('base64');
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\n' +
      'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
  );
  log(`${req.socket.remoteAddress} GET /ws 101`);
  app.sockets.add(new WsEcho(app, socket, head));
}

// encodeFrame builds one unmasked, final server frame.
function encodeFrame(opcode, payload) {
  const len = payload.length;
  let header;
  if (len < 126) {
    header = Buffer.from([0x80 | opcode, len]);
  } else if (len < 65536) {
    header = Buffer.from([0x80 | opcode, 126, len >> 8, len & 0xff]);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x80 | opcode;
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(len), 2);
  }
  return Buffer.concat([header, payload]);
}

// decodeFrame reads one client frame from buf: null when incomplete, else
// { fin, opcode, payload, size }. Throws WsClose on protocol errors.
function decodeFrame(buf) {
  if (buf.length < 2) return null;
  const fin = (buf[0] & 0x80) !== 0;
  const opcode = buf[0] & 0x0f;
  if (buf[0] & 0x70) throw new WsClose(1002, 'reserved bits set');
  if (![0, 1, 2, 8, 9, 10].includes(opcode)) {
    throw new WsClose(1002, 'unknown opcode');
  }
  if (!(buf[1] & 0x80)) throw new WsClose(1002, 'client frames must be masked');
  let len = buf[1] & 0x7f;
  let off = 2;
  if (len === 126) {
    if (buf.length < 4) return null;
    len = buf.readUInt16BE(2);
    off = 4;
  } else if (len === 127) {
    if (buf.length < 10) return null;
    const big = buf.readBigUInt64BE(2);
    if (big > BigInt(WS_MAX_MESSAGE)) throw new WsClose(1009, 'too big');
    len = Number(big);
    off = 10;
  }
  if (opcode >= 8 && (len > 125 || !fin)) {
    throw new WsClose(1002, 'bad control frame');
  }
  if (len > WS_MAX_MESSAGE) throw new WsClose(1009, 'too big');
  if (buf.length < off + 4 + len) return null;
  const mask = buf.subarray(off, off + 4);
  const payload = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) payload[i] = buf[off + 4 + i] ^ mask[i & 3];
  return { fin, opcode, payload, size: off + 4 + len };
}

const validCloseCode = (c) =>
  (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1011) ||
  (c >= 3000 && c <= 4999);

// WsEcho answers each complete message with the same message, pings with
// pongs, and a close with a close.
class WsEcho {
  constructor(app, socket, head) {
    this.app = app;
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    this.parts = null; // fragments of the message being received
    this.closing = false;
    socket.setNoDelay(true);
    socket.setTimeout(300_000, () => this.close(1001, 'idle'));
    socket.on('data', (d) => this.onData(d));
    socket.on('error', () => socket.destroy());
    socket.on('close', () => app.sockets.delete(this));
    if (head && head.length) this.onData(head);
  }

  onData(chunk) {
    if (this.closing) return;
    this.buf = Buffer.concat([this.buf, chunk]);
    try {
      let frame;
      while (!this.closing && (frame = decodeFrame(this.buf))) {
        this.buf = this.buf.subarray(frame.size);
        this.onFrame(frame);
      }
    } catch (err) {
      if (!(err instanceof WsClose)) throw err;
      this.close(err.code, err.message);
    }
  }

  onFrame({ fin, opcode, payload }) {
    if (opcode === 9) return this.socket.write(encodeFrame(10, payload));
    if (opcode === 10) return undefined;
    if (opcode === 8) return this.onClose(payload);
    if (opcode === 0 && !this.parts) {
      throw new WsClose(1002, 'continuation without a message');
    }
    if (opcode !== 0 && this.parts) {
      throw new WsClose(1002, 'new message inside a fragmented one');
    }
    if (opcode !== 0) this.parts = { opcode, chunks: [], size: 0 };
    this.parts.chunks.push(payload);
    this.parts.size += payload.length;
    if (this.parts.size > WS_MAX_MESSAGE) throw new WsClose(1009, 'too big');
    if (!fin) return undefined;
    const msg = Buffer.concat(this.parts.chunks);
    const type = this.parts.opcode;
    this.parts = null;
    if (type === 1 && !isUtf8(msg)) throw new WsClose(1007, 'invalid UTF-8');
    return this.socket.write(encodeFrame(type, msg));
  }

  onClose(payload) {
    if (payload.length === 1) throw new WsClose(1002, 'bad close frame');
    if (payload.length >= 2) {
      const code = payload.readUInt16BE(0);
      if (!validCloseCode(code)) throw new WsClose(1002, 'bad close code');
      if (!isUtf8(payload.subarray(2))) {
        throw new WsClose(1007, 'invalid UTF-8');
      }
      return this.close(code, '');
    }
    return this.close(null, '');
  }

  // close sends a close frame (with code unless null) and ends the socket.
  close(code, reason) {
    if (this.closing) return;
    this.closing = true;
    let payload = Buffer.alloc(0);
    if (code !== null) {
      payload = Buffer.alloc(2 + Buffer.byteLength(reason));
      payload.writeUInt16BE(code, 0);
      payload.write(reason, 2);
    }
    this.socket.end(encodeFrame(8, payload));
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }
}

// ---------------------------------------------------------------------------
// Start-up and shutdown

function parseArgs(argv, env) {
  const opts = {
    host: env.HOST || '127.0.0.1',
    port: env.PORT || '8001',
    dataFile: env.SHOP_DATA_FILE || '',
    grace: '5',
    model: env.SHOP_OPENAI_MODEL || 'gpt-4o-mini',
  };
  const names = { '--host': 'host', '--port': 'port',
    '--data-file': 'dataFile', '--grace': 'grace' };
  for (let i = 0; i < argv.length; i++) {
    let [flag, value] = argv[i].split(/=(.*)/s);
    if (!(flag in names)) throw new Error(`unknown flag ${flag}`);
    if (value === undefined) value = argv[++i];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    opts[names[flag]] = value;
  }
  const port = Number(opts.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`bad port ${opts.port}`);
  }
  const grace = Number(opts.grace);
  if (!(grace >= 0)) throw new Error(`bad grace ${opts.grace}`);
  return { ...opts, port, grace };
}

function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2), process.env);
  } catch (err) {
    process.stderr.write(`shop-bot: ${err.message}\n`);
    process.exit(2);
  }
  const app = {
    store: new Store(opts.dataFile),
    knobs: { down: false, delayMs: 0 },
    stopping: false,
    graceOver: new AbortController(),
    streams: new Set(),
    sockets: new Set(),
    model: opts.model,
    openai: null, // { sdk, client } once the assistant first ran
  };
  const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) =>
    dispatch(app, req, res),
  );
  server.on('upgrade', (req, socket, head) =>
    onUpgrade(app, req, socket, head),
  );
  server.on('clientError', (err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\n\r\n');
  });
  server.listen(opts.port, opts.host, () => {
    const { address, port } = server.address();
    process.stdout.write(`listening on ${address}:${port}\n`);
  });

  const stop = (signal) => {
    if (app.stopping) return;
    app.stopping = true;
    log(`${signal}: shutting down`);
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    for (const s of app.streams) s.abort();
    for (const ws of app.sockets) ws.close(1001, 'server shutting down');
    setTimeout(() => {
      log('grace over, dropping connections');
      app.graceOver.abort();
      setTimeout(() => {
        server.closeAllConnections();
        for (const ws of app.sockets) ws.socket.destroy();
        process.exit(0);
      }, 500).unref();
    }, opts.grace * 1000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
