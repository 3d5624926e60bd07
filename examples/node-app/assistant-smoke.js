#!/usr/bin/env node
// assistant-smoke: checks the assistant route of server.js (the openai
// package, plain and streamed) against a fake OpenAI server of its own on
// 127.0.0.1, without the sidecar. No other host is ever contacted.
//
//   npm ci && node assistant-smoke.js
//
// Starts three copies of server.js: one with node_modules, one copied into
// an empty folder (no openai package) and one to stop mid-stream. Prints
// one line per check, then "N passed, N failed"; exits 1 if any failed.
//
// Each server.js it starts has this file preloaded (--require): there it
// only wraps fetch so that any host but 127.0.0.1 is refused, a second
// guard behind OPENAI_BASE_URL, which is always set to the fake (the
// package's default is the public API).
'use strict';

const http = require('node:http');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');

const PLACEHOLDER_KEY = 'placeholder-not-a-key';
const ANSWER = 'We sell green tea at 3.5.';
const DELTAS = ['Green', ' tea', ' is', ' in stock.'];
const USAGE = { prompt_tokens: 31, completion_tokens: 9, total_tokens: 40 };
// Text the fake puts in its 401: the app must pass none of it on.
const UPSTREAM_SECRET = 'sk-smoke-0123456789abcdef';
const STEP_TIMEOUT = 10_000; // ms, for any single wait
const GUARD_MARK = 'smoke guard: refused';

// ---------------------------------------------------------------------------
// The guard, when preloaded into server.js.

function installLoopbackGuard() {
  const realFetch = globalThis.fetch;
  globalThis.fetch = (input, init) => {
    const raw = typeof input === 'string' || input instanceof URL ? input : input.url;
    const { hostname } = new URL(raw);
    if (hostname !== '127.0.0.1') {
      process.stderr.write(`${GUARD_MARK} ${hostname}\n`);
      return Promise.reject(new Error(`${GUARD_MARK} ${hostname}`));
    }
    return realFetch(input, init);
  };
}

// ---------------------------------------------------------------------------
// Helpers

function deferred() {
  let resolve;
  const promise = new Promise((r) => (resolve = r));
  return { promise, resolve };
}

// within rejects when p takes longer than ms.
function within(p, ms, what) {
  let t;
  const limit = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(t));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// waitFor polls cond every 20 ms until it holds, for at most STEP_TIMEOUT.
async function waitFor(cond, what) {
  const end = Date.now() + STEP_TIMEOUT;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(20);
  }
}

function readBody(stream) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    stream.on('data', (c) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    stream.on('error', reject);
  });
}

// call sends one request to the app on 127.0.0.1:port and resolves to
// { status, headers, json }.
function call(port, method, urlPath, body) {
  const req = http.request({ host: '127.0.0.1', port, method, path: urlPath });
  const done = new Promise((resolve, reject) => {
    req.on('response', async (res) => {
      try {
        const text = await readBody(res);
        resolve({ status: res.statusCode, headers: res.headers, json: JSON.parse(text) });
      } catch (err) {
        reject(err);
      }
    });
    req.on('error', reject);
  });
  if (body !== undefined) req.setHeader('Content-Type', 'application/json');
  req.end(body === undefined ? undefined : JSON.stringify(body));
  return within(done, STEP_TIMEOUT, `${method} ${urlPath}`);
}

// openStream posts a streamed question and calls onEvent(event, data, req)
// for each server-sent event as it arrives. Resolves to { status, headers,
// events } once the response ends (or was destroyed by the caller).
function openStream(port, id, question, onEvent = () => {}) {
  const req = http.request({
    host: '127.0.0.1', port, method: 'POST',
    path: `/api/v1/customers/${id}/assistant`,
    headers: { 'Content-Type': 'application/json' },
  });
  const events = [];
  const done = new Promise((resolve, reject) => {
    req.on('response', (res) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        buf += chunk;
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          const data = JSON.parse(/^data: (.*)$/m.exec(block)?.[1] ?? 'null');
          events.push({ event, data });
          onEvent(event, data, req);
        }
      });
      const finish = () => resolve({ status: res.statusCode, headers: res.headers, events });
      res.on('end', finish);
      res.on('close', finish);
    });
    req.on('error', (err) => (req.destroyed ? resolve({ events }) : reject(err)));
  });
  req.end(JSON.stringify({ question, stream: true }));
  return within(done, STEP_TIMEOUT, `stream for customer ${id}`);
}

// ---------------------------------------------------------------------------
// The fake OpenAI server: POST /v1/chat/completions only. What it does
// depends on the question: "REFUSE" gets a 401, "LIMIT" a 429, "SLOW" a
// stream of 200 pieces 50 ms apart; anything else a short answer (a stream
// waits after its first piece until release() or 5 s).

class FakeOpenAI {
  constructor() {
    this.calls = [];
    this.gate = null;
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err) => {
        process.stderr.write(`fake openai: ${err.stack}\n`);
        res.destroy();
      });
    });
  }

  async start() {
    await new Promise((r) => this.server.listen(0, '127.0.0.1', r));
    this.baseURL = `http://127.0.0.1:${this.server.address().port}/v1`;
  }

  stop() {
    this.server.closeAllConnections();
    this.server.close();
  }

  // holdAfterFirstDelta makes the next plain stream wait after its first
  // piece; the returned function lets it go on.
  holdAfterFirstDelta() {
    this.gate = deferred();
    return this.gate.resolve;
  }

  async handle(req, res) {
    const text = await readBody(req);
    const c = {
      path: req.url, headers: req.headers, body: null,
      closedEarly: false, gateTimedOut: false, firstDeltaSent: deferred(),
    };
    this.calls.push(c);
    res.on('close', () => (c.closedEarly = !res.writableFinished));
    if (req.method !== 'POST' || req.url !== '/v1/chat/completions') {
      return json(res, 404, { error: { message: 'unknown route', type: 'invalid_request_error' } });
    }
    c.body = JSON.parse(text);
    const question = c.body.messages.at(-1).content;
    if (question.includes('REFUSE')) {
      return json(res, 401, { error: {
        message: `Incorrect API key provided: ${UPSTREAM_SECRET}.`,
        type: 'invalid_request_error', code: 'invalid_api_key',
      } }, { 'X-Fake-Secret': UPSTREAM_SECRET });
    }
    if (question.includes('LIMIT')) {
      return json(res, 429, { error: {
        message: 'Rate limit reached', type: 'requests', code: 'rate_limit_exceeded',
      } }, { 'Retry-After-Ms': '1' });
    }
    if (!c.body.stream) return json(res, 200, completion(c.body.model));
    return this.stream(c, res, question.includes('SLOW'));
  }

  async stream(c, res, slow) {
    res.writeHead(200, { 'Content-Type': 'text/event-stream' });
    const chunk = (delta, finish, extra = {}) => res.write(`data: ${JSON.stringify({
      id: 'chatcmpl-smoke', object: 'chat.completion.chunk', created: 1, model: c.body.model,
      choices: [{ index: 0, delta, finish_reason: finish }], ...extra,
    })}\n\n`);
    chunk({ role: 'assistant', content: '' }, null);
    const pieces = slow ? Array.from({ length: 200 }, (_, i) => ` ${i}`) : DELTAS;
    const gate = slow ? null : this.gate;
    this.gate = null;
    for (let i = 0; i < pieces.length && !res.destroyed; i++) {
      chunk({ content: pieces[i] }, null);
      if (i === 0) c.firstDeltaSent.resolve();
      if (i === 0 && gate) {
        const released = await Promise.race([gate.promise.then(() => true), sleep(5000)]);
        c.gateTimedOut = !released;
      }
      if (slow) await sleep(50);
    }
    if (res.destroyed) return;
    chunk({}, 'stop');
    if (c.body.stream_options?.include_usage) {
      res.write(`data: ${JSON.stringify({
        id: 'chatcmpl-smoke', object: 'chat.completion.chunk', created: 1,
        model: c.body.model, choices: [], usage: USAGE,
      })}\n\n`);
    }
    res.end('data: [DONE]\n\n');
  }
}

function json(res, status, doc, headers = {}) {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(JSON.stringify(doc));
}

function completion(model) {
  return {
    id: 'chatcmpl-smoke', object: 'chat.completion', created: 1, model,
    choices: [{
      index: 0, message: { role: 'assistant', content: ANSWER },
      finish_reason: 'stop', logprobs: null,
    }],
    usage: USAGE,
  };
}

// ---------------------------------------------------------------------------
// The apps under test

const children = new Set();
const started = []; // every app started, for the guard's final check

// appEnv is this process's environment without any OpenAI setting of its
// own, then pointed at the fake. Throws unless the base URL is loopback.
function appEnv(fake, extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('OPENAI_') || k.startsWith('SHOP_') ||
        ['NODE_OPTIONS', 'NODE_PATH', 'HOST', 'PORT'].includes(k)) continue;
    env[k] = v;
  }
  Object.assign(env, { OPENAI_BASE_URL: fake.baseURL, OPENAI_API_KEY: PLACEHOLDER_KEY }, extra);
  const base = new URL(env.OPENAI_BASE_URL || 'missing:');
  if (base.protocol !== 'http:' || base.hostname !== '127.0.0.1') {
    throw new Error(`OPENAI_BASE_URL must be the fake on 127.0.0.1, got ${base.href}`);
  }
  return env;
}

// startApp runs server.js (script) and resolves once it prints its port.
async function startApp(script, env, grace = 2) {
  const child = spawn(process.execPath,
    ['--require', __filename, script, '--host', '127.0.0.1', '--port', '0', '--grace', `${grace}`],
    { env, cwd: path.dirname(script), stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const app = { child, stderr: '', exited: deferred() };
  started.push(app);
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => (app.stderr += d));
  child.on('exit', (code, signal) => {
    children.delete(child);
    app.exited.resolve({ code, signal });
  });
  let out = '';
  child.stdout.setEncoding('utf8');
  await within(new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      const m = /^listening on 127\.0\.0\.1:(\d+)$/m.exec(out);
      if (m) resolve((app.port = Number(m[1])));
    });
    child.on('exit', () => reject(new Error(`server.js exited early:\n${app.stderr}`)));
  }), STEP_TIMEOUT, 'server.js to listen');
  return app;
}

async function addCustomer(app, id) {
  const put = await call(app.port, 'PUT', `/api/v1/customers/${id}`, { ownerId: 42 });
  const item = await call(app.port, 'POST', `/api/v1/customers/${id}/catalog/items`,
    { sku: 'tea-1', name: 'Green tea', price: 3.5 });
  if (put.status !== 201 || item.status !== 201) {
    throw new Error(`setup: PUT ${put.status}, POST item ${item.status}`);
  }
}

const ask = (app, id, question, stream = false) =>
  call(app.port, 'POST', `/api/v1/customers/${id}/assistant`, { question, stream });

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const wantUsage = { promptTokens: 31, completionTokens: 9, totalTokens: 40 };

// ---------------------------------------------------------------------------
// Checks: each returns an empty string when it passed, else why not.

function checksFor(fake, app, id) {
  const last = () => fake.calls.at(-1);
  return [
    ['JSON answer carries the text, model and usage', async () => {
      const r = await ask(app, id, 'Do you sell tea?');
      if (r.status !== 200) return `status ${r.status} ${JSON.stringify(r.json)}`;
      if (r.json.answer !== ANSWER) return `answer ${JSON.stringify(r.json.answer)}`;
      if (r.json.model !== 'shop-smoke-model') return `model ${r.json.model}`;
      if (!same(r.json.usage, wantUsage)) return `usage ${JSON.stringify(r.json.usage)}`;
      return r.json.finishReason === 'stop' ? '' : `finishReason ${r.json.finishReason}`;
    }],
    ['the call names the customer and sends the placeholder key', async () => {
      const c = last();
      if (c.path !== '/v1/chat/completions') return `path ${c.path}`;
      if (c.headers['x-zimmer-user-automation-id'] !== String(id)) {
        return `user header ${c.headers['x-zimmer-user-automation-id']}`;
      }
      if (c.headers.authorization !== `Bearer ${PLACEHOLDER_KEY}`) return 'wrong authorization';
      if (c.body.model !== 'shop-smoke-model' || c.body.stream) return 'wrong model or stream';
      return c.body.messages[0].content.includes('tea-1: Green tea, 3.5')
        ? '' : 'catalog missing from the prompt';
    }],
    ['stream relays the first piece at once, then every piece and the usage', async () => {
      const release = fake.holdAfterFirstDelta();
      const r = await openStream(app.port, id, 'Is tea in stock?', (event) => {
        if (event === 'delta') release();
      });
      const c = last();
      if (c.gateTimedOut) return 'the first piece was held back until the stream went on';
      if (!c.body.stream || !c.body.stream_options?.include_usage) return 'no include_usage';
      if (c.headers['x-zimmer-user-automation-id'] !== String(id)) return 'no user header';
      if (c.headers.authorization !== `Bearer ${PLACEHOLDER_KEY}`) return 'wrong authorization';
      if (r.status !== 200 || !/^text\/event-stream/.test(r.headers['content-type'])) {
        return `status ${r.status} ${r.headers['content-type']}`;
      }
      const text = r.events.filter((e) => e.event === 'delta').map((e) => e.data.text).join('');
      if (text !== DELTAS.join('')) return `text ${JSON.stringify(text)}`;
      const end = r.events.at(-1);
      const want = { complete: true, finishReason: 'stop', usage: wantUsage };
      return end.event === 'end' && same(end.data, want) ? '' : `last ${JSON.stringify(end)}`;
    }],
    ['upstream 401 becomes a JSON 401 without its text or headers', async () => {
      const r = await ask(app, id, 'REFUSE please');
      const all = JSON.stringify(r);
      if (r.status !== 401 || r.json.code !== 'OPENAI_ERROR') return `got ${all}`;
      if (all.includes(UPSTREAM_SECRET) || all.includes('Incorrect')) return `echoed: ${all}`;
      return app.stderr.includes(UPSTREAM_SECRET) ? 'the upstream text was logged' : '';
    }],
    ['upstream 429 (after the package retried twice) becomes 429', async () => {
      const before = fake.calls.length;
      const r = await ask(app, id, 'LIMIT me');
      const tries = fake.calls.length - before;
      if (tries !== 3) return `${tries} upstream tries, want 3`;
      return r.status === 429 && r.json.message.includes('rate_limit_exceeded')
        ? '' : `got ${r.status} ${JSON.stringify(r.json)}`;
    }],
    ['bad input and unknown customers never reach OpenAI', async () => {
      const before = fake.calls.length;
      const got = [
        (await ask(app, 999, 'anything')).status,
        (await ask(app, id, '  ')).status,
        (await call(app.port, 'POST', `/api/v1/customers/${id}/assistant`,
          { question: 'hi', stream: 'yes' })).status,
      ];
      if (!same(got, [404, 400, 400])) return `statuses ${got}`;
      return fake.calls.length === before ? '' : 'the fake was called';
    }],
    ['a client that hangs up mid-stream ends the upstream call', async () => {
      await openStream(app.port, id, 'SLOW answer please', (event, _, req) => {
        if (event === 'delta') req.destroy();
      });
      const c = last();
      await waitFor(() => c.closedEarly, 'the upstream call to be closed');
      return '';
    }],
  ];
}

// The app copied into an empty folder: no openai package to load.
async function checkWithoutPackage(fake) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shop-bot-'));
  const script = path.join(dir, 'server.js');
  fs.copyFileSync(path.join(__dirname, 'server.js'), script);
  const app = await startApp(script, appEnv(fake));
  try {
    const before = fake.calls.length;
    await addCustomer(app, 3);
    const status = await call(app.port, 'GET', '/status');
    const r = await ask(app, 3, 'Do you sell tea?');
    if (status.status !== 200) return `/status ${status.status}`;
    if (r.status !== 503 || r.json.code !== 'ASSISTANT_UNAVAILABLE') {
      return `assistant ${r.status} ${JSON.stringify(r.json)}`;
    }
    return fake.calls.length === before ? '' : 'the fake was called';
  } finally {
    app.child.kill('SIGKILL');
    await app.exited.promise;
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// SIGTERM while a long answer streams: the grace (0.3 s) runs out, the
// client gets a final "end" event, the upstream call ends, the app exits 0.
async function checkShutdown(fake) {
  const app = await startApp(path.join(__dirname, 'server.js'), appEnv(fake), 0.3);
  try {
    await addCustomer(app, 5);
    const r = await openStream(app.port, 5, 'SLOW answer please', (event) => {
      if (event === 'delta' && !app.termed) app.termed = app.child.kill('SIGTERM');
    });
    const c = fake.calls.at(-1);
    const exit = await within(app.exited.promise, STEP_TIMEOUT, 'server.js to exit');
    const end = r.events.at(-1);
    if (c.body.model !== 'gpt-4o-mini') return `default model ${c.body.model}`;
    if (exit.code !== 0) return `exit ${JSON.stringify(exit)}`;
    if (end?.event !== 'end' || end.data.complete !== false || end.data.reason !== 'SHUTDOWN') {
      return `last event ${JSON.stringify(end)}`;
    }
    if (r.events.filter((e) => e.event === 'delta').length >= 200) return 'not cut short';
    await waitFor(() => c.closedEarly, 'the upstream call to be closed');
    return '';
  } finally {
    app.child.kill('SIGKILL');
  }
}

// SIGTERM while a short answer streams: it completes within the grace
// (5 s), and the app exits 0 without waiting for the grace to run out.
async function checkShutdownCompletes(fake) {
  const app = await startApp(path.join(__dirname, 'server.js'), appEnv(fake), 5);
  try {
    await addCustomer(app, 6);
    const release = fake.holdAfterFirstDelta();
    const r = await openStream(app.port, 6, 'Is tea in stock?', async (event) => {
      if (event !== 'delta' || app.termed) return;
      app.termed = app.child.kill('SIGTERM');
      await waitFor(() => app.stderr.includes('SIGTERM'), 'the app to start stopping');
      release();
    });
    const exit = await within(app.exited.promise, STEP_TIMEOUT, 'server.js to exit');
    const text = r.events.filter((e) => e.event === 'delta').map((e) => e.data.text).join('');
    const end = r.events.at(-1);
    if (text !== DELTAS.join('') || end?.event !== 'end' || !end.data.complete) {
      return `events ${JSON.stringify(r.events)}`;
    }
    if (exit.code !== 0) return `exit ${JSON.stringify(exit)}`;
    return app.stderr.includes('grace over') ? 'the app waited for the grace to run out' : '';
  } finally {
    app.child.kill('SIGKILL');
  }
}

async function main() {
  const fake = new FakeOpenAI();
  await fake.start();
  let passed = 0;
  let failed = 0;
  const report = (name, why) => {
    if (why) failed++;
    else passed++;
    console.log(`${why ? 'FAIL' : 'ok  '} ${name}${why ? ` (${why})` : ''}`);
  };
  const run = async (name, check) => {
    let why;
    try {
      why = await within(check(), 3 * STEP_TIMEOUT, name);
    } catch (err) {
      why = err.message;
    }
    report(name, why);
  };

  const env = appEnv(fake, { SHOP_OPENAI_MODEL: 'shop-smoke-model' });
  const app = await startApp(path.join(__dirname, 'server.js'), env);
  await addCustomer(app, 7);
  for (const [name, check] of checksFor(fake, app, 7)) await run(name, check);
  app.child.kill('SIGKILL');
  await run('without node_modules the app runs and the assistant answers 503',
    () => checkWithoutPackage(fake));
  await run('SIGTERM mid-stream, grace left: the answer completes, then exit 0',
    () => checkShutdownCompletes(fake));
  await run('SIGTERM mid-stream, grace over: a final event, the upstream call ends, exit 0',
    () => checkShutdown(fake));
  const refused = started.some((a) => a.stderr.includes(GUARD_MARK));
  report('no server.js tried a host but 127.0.0.1', refused ? 'the guard refused a call' : '');

  fake.stop();
  if (failed) {
    for (const a of started) console.log(`server.js stderr:\n${a.stderr.replace(/^/gm, '  ')}`);
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

if (require.main === module) {
  process.on('exit', () => {
    for (const child of children) child.kill('SIGKILL');
  });
  main().catch((err) => {
    console.log(`FAIL ${err.stack}`);
    process.exit(1);
  });
} else {
  installLoopbackGuard();
}
