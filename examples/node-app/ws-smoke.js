#!/usr/bin/env node
// ws-smoke: checks the /ws echo of server.js (or of a proxy in front of it)
// with a raw node:net client, no packages.
//
//   node ws-smoke.js [host:]port [path]      (default path /ws)
//
// Prints one line per check and exits 1 if any failed.
'use strict';

const net = require('node:net');
const crypto = require('node:crypto');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

// frame builds one masked client frame.
function frame(opcode, payload, { fin = true, mask = true } = {}) {
  const len = payload.length;
  const head = [(fin ? 0x80 : 0) | opcode];
  const m = mask ? 0x80 : 0;
  if (len < 126) head.push(m | len);
  else if (len < 65536) head.push(m | 126, len >> 8, len & 0xff);
  else throw new Error('test frames stay under 64 KiB');
  if (!mask) return Buffer.concat([Buffer.from(head), payload]);
  const key = crypto.randomBytes(4);
  const body = Buffer.from(payload.map((b, i) => b ^ key[i & 3]));
  return Buffer.concat([Buffer.from(head), key, body]);
}

// Conn is a connected, upgraded socket with a frame reader.
class Conn {
  static open(host, port, path) {
    return new Promise((resolve, reject) => {
      const key = crypto.randomBytes(16).toString('base64');
      const want = crypto
        .createHash('sha1')
        .update(key + GUID)
        .digest('base64');
      const sock = net.connect(port, host);
      let buf = Buffer.alloc(0);
      const onData = (d) => {
        buf = Buffer.concat([buf, d]);
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        sock.off('data', onData);
        const head = buf.subarray(0, end).toString();
        if (!/^HTTP\/1\.1 101 /.test(head)) {
          return reject(new Error(`no upgrade: ${head.split('\r\n')[0]}`));
        }
        const got = /sec-websocket-accept:\s*(\S+)/i.exec(head);
        if (!got || got[1] !== want) {
          return reject(new Error('wrong Sec-WebSocket-Accept'));
        }
        resolve(new Conn(sock, buf.subarray(end + 4)));
      };
      sock.on('data', onData);
      sock.on('error', reject);
      sock.write(
        `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\n` +
          'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
  }

  constructor(sock, rest) {
    this.sock = sock;
    this.buf = rest;
    this.waiters = [];
    this.ended = false;
    sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.pump();
    });
    sock.on('close', () => {
      this.ended = true;
      this.pump();
    });
  }

  send(opcode, payload, opts) {
    this.sock.write(frame(opcode, Buffer.from(payload), opts));
  }

  // next resolves to the next server frame, or null once the socket closed.
  next(timeoutMs = 2000) {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('timed out')), timeoutMs);
      this.waiters.push((f) => {
        clearTimeout(t);
        resolve(f);
      });
      this.pump();
    });
  }

  pump() {
    while (this.waiters.length) {
      const f = this.parse();
      if (f) this.waiters.shift()(f);
      else if (this.ended) this.waiters.shift()(null);
      else return;
    }
  }

  parse() {
    const b = this.buf;
    if (b.length < 2) return null;
    if (b[1] & 0x80) throw new Error('server frames must not be masked');
    let len = b[1] & 0x7f;
    let off = 2;
    if (len === 126) {
      if (b.length < 4) return null;
      len = b.readUInt16BE(2);
      off = 4;
    } else if (len === 127) {
      if (b.length < 10) return null;
      len = Number(b.readBigUInt64BE(2));
      off = 10;
    }
    if (b.length < off + len) return null;
    this.buf = b.subarray(off + len);
    return {
      fin: (b[0] & 0x80) !== 0,
      opcode: b[0] & 0x0f,
      payload: b.subarray(off, off + len),
    };
  }
}

const checks = [
  ['small text frame echoed', async (c) => {
    c.send(1, 'hello, shop');
    const f = await c.next();
    return f.opcode === 1 && f.fin && f.payload.toString() === 'hello, shop';
  }],
  ['non-ASCII text echoed', async (c) => {
    c.send(1, 'سلام 👋');
    return (await c.next()).payload.toString() === 'سلام 👋';
  }],
  ['300-byte text (16-bit length) echoed', async (c) => {
    const s = 'x'.repeat(300);
    c.send(1, s);
    return (await c.next()).payload.toString() === s;
  }],
  ['binary frame echoed as binary', async (c) => {
    c.send(2, Buffer.from([0, 1, 2, 255]));
    const f = await c.next();
    return f.opcode === 2 && f.payload.equals(Buffer.from([0, 1, 2, 255]));
  }],
  ['fragmented message with a ping inside', async (c) => {
    c.send(1, 'frag', { fin: false });
    c.send(9, 'p1');
    c.send(0, 'ment', { fin: false });
    c.send(0, 'ed');
    const pong = await c.next();
    const msg = await c.next();
    return pong.opcode === 10 && pong.payload.toString() === 'p1' &&
      msg.opcode === 1 && msg.payload.toString() === 'fragmented';
  }],
  ['two frames in one write', async (c) => {
    c.sock.write(Buffer.concat([
      frame(1, Buffer.from('a')), frame(1, Buffer.from('b')),
    ]));
    const a = await c.next();
    const b = await c.next();
    return a.payload.toString() === 'a' && b.payload.toString() === 'b';
  }],
  ['close handshake echoes the code', async (c) => {
    const p = Buffer.alloc(2);
    p.writeUInt16BE(1000);
    c.send(8, p);
    const f = await c.next();
    const closed = await c.next();
    return f.opcode === 8 && f.payload.readUInt16BE(0) === 1000 &&
      closed === null;
  }],
  ['unmasked frame closes with 1002', async (c) => {
    c.send(1, 'no mask', { mask: false });
    const f = await c.next();
    return f.opcode === 8 && f.payload.readUInt16BE(0) === 1002;
  }],
  ['invalid UTF-8 text closes with 1007', async (c) => {
    c.send(1, Buffer.from([0xc3, 0x28]));
    const f = await c.next();
    return f.opcode === 8 && f.payload.readUInt16BE(0) === 1007;
  }],
];

async function main() {
  const [addr = '8001', path = '/ws'] = process.argv.slice(2);
  const [host, port] = addr.includes(':')
    ? [addr.slice(0, addr.lastIndexOf(':')), addr.slice(addr.lastIndexOf(':') + 1)]
    : ['127.0.0.1', addr];
  let failed = 0;
  for (const [name, check] of checks) {
    let ok = false;
    let why = '';
    let conn;
    try {
      conn = await Conn.open(host, Number(port), path);
      ok = await check(conn);
    } catch (err) {
      why = ` (${err.message})`;
    } finally {
      conn?.sock.destroy();
    }
    if (!ok) failed++;
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${why}`);
  }
  process.exit(failed ? 1 : 0);
}

main();
