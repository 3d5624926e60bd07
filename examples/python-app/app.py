#!/usr/bin/env python3
"""notes-assistant: a small notes and Q&A service for Telegram bot owners.

Each tenant (one bot owner's workspace) keeps short notes; the chat routes
answer questions from them. This is the kind of service the sidecar is meant
to sit in front of unchanged: it has its own route names and JSON shapes and
knows nothing about Zimmer.

Standard library only. State lives in SQLite: in memory by default, or in
<data dir>/notes.db when --data-dir or NOTES_DATA_DIR is set.

Run:  python3 app.py [--host 127.0.0.1] [--port 8000] [--data-dir DIR]
Once the socket is bound it prints "listening on HOST:PORT" on stdout;
--port 0 picks a free port and the line shows the real one. Request logs
go to stderr. SIGTERM or SIGINT stops it: new connections are refused,
event streams end at once, other running requests get --grace seconds
to finish; the exit status is then 0.
"""

import argparse
import datetime as dt
import json
import os
import re
import signal
import socket
import sqlite3
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20  # bytes
MAX_SLOW_MS = 600_000
MAX_STREAM_EVENTS = 100_000


def now_iso():
    """The current UTC time as ISO 8601 with a Z suffix, second precision."""
    t = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    return t.isoformat().replace("+00:00", "Z")


def is_id(value):
    """True for a positive JSON integer (booleans are not integers here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class BadRequest(Exception):
    """A client mistake; the message is safe to send back."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------
# Storage


SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    id INTEGER PRIMARY KEY,
    owner INTEGER NOT NULL,
    telegram_token TEXT,
    phase TEXT NOT NULL DEFAULT 'none',
    indexed_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notes_by_tenant ON notes(tenant_id);
"""


class Store:
    """Tenants and their notes. One connection, guarded by a lock.

    A tenant's index phase is "none" with no notes, "idle" once its notes
    are indexed, "indexing" while a deferred index is pending and "broken"
    after a failed index run.
    """

    def __init__(self, path):
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        with self.lock, self.db:
            self.db.executescript(SCHEMA)

    def close(self):
        with self.lock:
            self.db.close()

    def ping(self):
        try:
            with self.lock:
                self.db.execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    def upsert_tenant(self, tenant_id, owner, token):
        """Create or update a tenant; returns (tenant, created)."""
        stamp = now_iso()
        with self.lock, self.db:
            row = self._tenant(tenant_id)
            if row is None:
                self.db.execute(
                    "INSERT INTO tenants (id, owner, telegram_token,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                    (tenant_id, owner, token, stamp, stamp),
                )
                created = True
            else:
                if (row["owner"], row["telegram_token"]) != (owner, token):
                    self.db.execute(
                        "UPDATE tenants SET owner = ?, telegram_token = ?,"
                        " updated_at = ? WHERE id = ?",
                        (owner, token, stamp, tenant_id),
                    )
                created = False
            return self._public(self._tenant(tenant_id)), created

    def tenant(self, tenant_id):
        with self.lock:
            row = self._tenant(tenant_id)
        return None if row is None else self._public(row)

    def summary(self, tenant_id):
        with self.lock:
            return self._summary(tenant_id)

    def notes(self, tenant_id):
        with self.lock:
            if self._tenant(tenant_id) is None:
                return None
            rows = self.db.execute(
                "SELECT id, title, created_at FROM notes"
                " WHERE tenant_id = ? ORDER BY id",
                (tenant_id,),
            ).fetchall()
        return [dict(r) for r in rows]

    def add_note(self, tenant_id, title, body, defer):
        """Store a note and index it now, or later when defer is true."""
        stamp = now_iso()
        with self.lock, self.db:
            if self._tenant(tenant_id) is None:
                return None, None
            cur = self.db.execute(
                "INSERT INTO notes (tenant_id, title, body, created_at)"
                " VALUES (?, ?, ?, ?)",
                (tenant_id, title, body, stamp),
            )
            if defer:
                self.db.execute(
                    "UPDATE tenants SET phase = 'indexing' WHERE id = ?",
                    (tenant_id,),
                )
            else:
                self._mark_indexed(tenant_id, stamp)
            note = {"id": cur.lastrowid, "title": title, "created_at": stamp}
            return note, self._summary(tenant_id)

    def reindex(self, tenant_id, fail):
        """Run the indexer over a tenant's notes; fail simulates a crash."""
        with self.lock, self.db:
            if self._tenant(tenant_id) is None:
                return None
            if fail:
                self.db.execute(
                    "UPDATE tenants SET phase = 'broken' WHERE id = ?",
                    (tenant_id,),
                )
            else:
                self._mark_indexed(tenant_id, now_iso())
            return self._summary(tenant_id)

    def wipe(self, tenant_id):
        """Delete every note; returns (deleted count, summary)."""
        with self.lock, self.db:
            if self._tenant(tenant_id) is None:
                return None, None
            cur = self.db.execute(
                "DELETE FROM notes WHERE tenant_id = ?", (tenant_id,)
            )
            self.db.execute(
                "UPDATE tenants SET phase = 'none', indexed_at = NULL,"
                " updated_at = ? WHERE id = ?",
                (now_iso(), tenant_id),
            )
            return cur.rowcount, self._summary(tenant_id)

    def search(self, tenant_id, question):
        """Notes sharing at least one word of 3+ letters with the question."""
        words = {w for w in re.findall(r"\w{3,}", question.lower())}
        with self.lock:
            rows = self.db.execute(
                "SELECT id, title, body FROM notes WHERE tenant_id = ?"
                " ORDER BY id",
                (tenant_id,),
            ).fetchall()
        hits = []
        for row in rows:
            text = (row["title"] + " " + row["body"]).lower()
            if words & set(re.findall(r"\w{3,}", text)):
                hits.append(dict(row))
        return hits

    # Helpers below expect self.lock to be held.

    def _tenant(self, tenant_id):
        return self.db.execute(
            "SELECT * FROM tenants WHERE id = ?", (tenant_id,)
        ).fetchone()

    def _mark_indexed(self, tenant_id, stamp):
        self.db.execute(
            "UPDATE tenants SET phase = CASE WHEN EXISTS (SELECT 1 FROM notes"
            " WHERE tenant_id = ?1) THEN 'idle' ELSE 'none' END,"
            " indexed_at = ?2 WHERE id = ?1",
            (tenant_id, stamp),
        )

    def _summary(self, tenant_id):
        row = self._tenant(tenant_id)
        if row is None:
            return None
        (count,) = self.db.execute(
            "SELECT COUNT(*) FROM notes WHERE tenant_id = ?", (tenant_id,)
        ).fetchone()
        return {
            "count": count,
            "indexed_at": row["indexed_at"],
            "phase": row["phase"],
        }

    @staticmethod
    def _public(row):
        # The bot token itself never leaves the service, only its tail.
        token = row["telegram_token"]
        return {
            "id": row["id"],
            "owner": row["owner"],
            "has_telegram": bool(token),
            "telegram_token_tail": token[-4:] if token else None,
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
        }


# ---------------------------------------------------------------------------
# HTTP


ROUTES = []


def route(method, pattern):
    """Register a handler method for METHOD and a full-match path regex."""

    def register(fn):
        ROUTES.append((method, re.compile(pattern), fn))
        return fn

    return register


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes; without this, Nagle and
    # delayed ACKs add ~40 ms to every keep-alive answer.
    disable_nagle_algorithm = True
    server_version = "notes-assistant/0.4"
    timeout = 120  # idle keep-alive connections are closed after this

    # -- plumbing ----------------------------------------------------------

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def dispatch(self):
        started = time.monotonic()
        self.status = 0
        self.extra_log = ""
        url = urllib.parse.urlsplit(self.path)
        self.route_path = url.path
        self.query = urllib.parse.parse_qs(url.query)
        self.body_read = False
        self.server.begin_request()
        try:
            self.run_route()
        except BadRequest as err:
            self.send_json(err.status, {"error": str(err)})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            self.extra_log += " client gone"
        except Exception as err:  # noqa: BLE001 - last-resort 500
            self.log_line(f"error: {type(err).__name__}: {err}")
            if not self.status:
                self.send_json(500, {"error": "internal error"})
            self.close_connection = True
        finally:
            if not self.body_read and self.has_body():
                # An unread body would be parsed as the next request.
                self.close_connection = True
            self.server.end_request()
            ms = (time.monotonic() - started) * 1000
            # The query string is left out: it may carry credentials.
            self.log_line(
                f'{self.client_address[0]} "{self.command} {self.route_path}"'
                f" {self.status} {ms:.1f}ms{self.extra_log}"
            )

    def run_route(self):
        allowed = []
        for method, pattern, fn in ROUTES:
            match = pattern.fullmatch(self.route_path)
            if not match:
                continue
            if method == self.command or (
                method == "GET" and self.command == "HEAD"
            ):
                fn(self, *match.groups())
                return
            allowed.append(method)
        if allowed:
            self.send_json(
                405,
                {"error": "method not allowed"},
                headers={"Allow": ", ".join(sorted(set(allowed)))},
            )
        else:
            self.send_json(404, {"error": "not found"})

    def log_line(self, text):
        sys.stderr.write(f"{now_iso()} notes: {text}\n")
        sys.stderr.flush()

    def log_message(self, fmt, *args):
        # Used by the base class for malformed requests and timeouts.
        self.log_line(fmt % args)

    def log_request(self, code="-", size="-"):
        pass  # dispatch() writes one line per request itself

    def send_json(self, status, payload, headers=None):
        body = json.dumps(payload).encode()
        self.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.server.stopping.is_set():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def has_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        return bool(te) or self.headers.get("Content-Length", "0") != "0"

    def read_body(self):
        """The request body, from Content-Length or chunked framing."""
        self.body_read = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.read_chunked()
        raw = self.headers.get("Content-Length", "0") or "0"
        if not raw.isdigit():
            raise BadRequest("bad content-length")
        length = int(raw)
        if length > MAX_BODY:
            self.close_connection = True
            raise BadRequest("body too large", 413)
        return self.rfile.read(length)

    def read_chunked(self):
        data = bytearray()
        while True:
            line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                self.close_connection = True
                raise BadRequest("bad chunked body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(data)
            if len(data) + size > MAX_BODY:
                self.close_connection = True
                raise BadRequest("body too large", 413)
            data += self.rfile.read(size)
            self.rfile.readline(16)

    def json_body(self):
        """The body as a JSON object; an empty body is an empty object."""
        raw = self.read_body()
        if not raw.strip():
            return {}
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("body is not valid JSON") from None
        if not isinstance(doc, dict):
            raise BadRequest("body must be a JSON object")
        return doc

    def query_int(self, name, default, low, high):
        raw = self.query.get(name, [None])[0]
        if raw is None or raw == "":
            return default
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise BadRequest(f"{name} must be an integer in [{low}, {high}]")
        return int(raw)

    def flag(self, name):
        return self.query.get(name, [""])[0].lower() in ("1", "true", "yes")

    # -- health ------------------------------------------------------------

    @route("GET", r"/healthz")
    def healthz(self):
        knobs = self.server.health_knobs
        if knobs["delay_ms"]:
            time.sleep(knobs["delay_ms"] / 1000)
        db_up = not knobs["down"] and self.server.store.ping()
        body = {"ok": db_up, "db": "up" if db_up else "down"}
        if self.server.stopping.is_set():
            body["ok"] = False
            body["draining"] = True
        self.send_json(200 if body["ok"] else 503, body)

    @route("POST", r"/debug/health")
    def debug_health(self):
        """Make /healthz fail or slow down, for probe tests."""
        doc = self.json_body()
        down = doc.get("down", False)
        delay = doc.get("delay_ms", 0)
        if not isinstance(down, bool):
            raise BadRequest("down must be a boolean")
        if isinstance(delay, bool) or not isinstance(delay, int) or not (
            0 <= delay <= 60_000
        ):
            raise BadRequest("delay_ms must be an integer in [0, 60000]")
        self.server.health_knobs.update(down=down, delay_ms=delay)
        self.send_json(200, {"health": self.server.health_knobs})

    @route("GET", r"/debug/echo")
    def debug_echo(self):
        """What this service received, so a proxy in front can be checked."""
        self.send_json(200, self.echo())

    @route("POST", r"/debug/echo")
    def debug_echo_post(self):
        body = self.read_body()
        self.send_json(200, dict(self.echo(), body_bytes=len(body)))

    def echo(self):
        return {
            "method": self.command,
            "path": self.route_path,
            "query": self.query,
            "headers": [[k, v] for k, v in self.headers.items()],
        }

    # -- tenants and notes -------------------------------------------------

    @route("POST", r"/internal/tenants")
    def put_tenant(self):
        doc = self.json_body()
        tenant, owner = doc.get("tenant"), doc.get("owner")
        token = doc.get("telegram_token")
        if not is_id(tenant):
            raise BadRequest("tenant must be a positive integer")
        if not is_id(owner):
            raise BadRequest("owner must be a positive integer")
        if token is not None and not isinstance(token, str):
            raise BadRequest("telegram_token must be a string or null")
        record, created = self.server.store.upsert_tenant(
            tenant, owner, token or None
        )
        self.extra_log = f" tenant={tenant} created={created}"
        self.send_json(
            201 if created else 200, {"tenant": record, "created": created}
        )

    @route("GET", r"/internal/tenants/(\d+)")
    def get_tenant(self, tenant_id):
        record = self.server.store.tenant(int(tenant_id))
        if record is None:
            raise BadRequest("no such tenant", 404)
        self.send_json(200, {"tenant": record})

    @route("GET", r"/internal/tenants/(\d+)/docs/summary")
    def docs_summary(self, tenant_id):
        summary = self.server.store.summary(int(tenant_id))
        if summary is None:
            raise BadRequest("no such tenant", 404)
        self.send_json(200, {"summary": summary})

    @route("GET", r"/internal/tenants/(\d+)/docs")
    def list_docs(self, tenant_id):
        notes = self.server.store.notes(int(tenant_id))
        if notes is None:
            raise BadRequest("no such tenant", 404)
        self.send_json(200, {"notes": notes})

    @route("POST", r"/internal/tenants/(\d+)/docs")
    def add_doc(self, tenant_id):
        """Add a note; ?defer=1 leaves it waiting for /docs/reindex."""
        doc = self.json_body()
        title, text = doc.get("title", ""), doc.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("text must be a non-empty string")
        if not isinstance(title, str):
            raise BadRequest("title must be a string")
        title = title.strip() or text.strip().splitlines()[0][:60]
        note, summary = self.server.store.add_note(
            int(tenant_id), title, text, self.flag("defer")
        )
        if note is None:
            raise BadRequest("no such tenant", 404)
        self.send_json(201, {"note": note, "summary": summary})

    @route("POST", r"/internal/tenants/(\d+)/docs/reindex")
    def reindex(self, tenant_id):
        """Index pending notes; {"fail": true} simulates a broken indexer."""
        fail = self.json_body().get("fail", False)
        if not isinstance(fail, bool):
            raise BadRequest("fail must be a boolean")
        summary = self.server.store.reindex(int(tenant_id), fail)
        if summary is None:
            raise BadRequest("no such tenant", 404)
        self.send_json(200, {"summary": summary})

    @route("POST", r"/internal/tenants/(\d+)/docs/wipe")
    def wipe(self, tenant_id):
        self.read_body()  # any body is ignored
        deleted, summary = self.server.store.wipe(int(tenant_id))
        if summary is None:
            raise BadRequest("no such tenant", 404)
        self.send_json(200, {"wiped": deleted, "summary": summary})

    # -- chat --------------------------------------------------------------

    def tenant_from_header(self):
        raw = self.headers.get("X-Tenant", "").strip()
        if not raw.isdigit() or int(raw) == 0:
            raise BadRequest("X-Tenant header must be a tenant id")
        tenant_id = int(raw)
        if self.server.store.tenant(tenant_id) is None:
            raise BadRequest("no such tenant", 404)
        return tenant_id

    @route("POST", r"/chat/ask")
    def ask(self):
        tenant_id = self.tenant_from_header()
        question = self.json_body().get("question")
        if not isinstance(question, str) or not question.strip():
            raise BadRequest("question must be a non-empty string")
        hits = self.server.store.search(tenant_id, question)
        if hits:
            best = hits[0]
            answer = f"From your note \"{best['title']}\": {best['body'][:200]}"
        else:
            answer = "I don't have a note about that yet."
        self.extra_log = f" tenant={tenant_id} hits={len(hits)}"
        self.send_json(
            200,
            {
                "answer": answer,
                "tenant": tenant_id,
                "sources": [h["id"] for h in hits],
                "answered_at": now_iso(),
            },
        )

    @route("GET", r"/chat/stream")
    def stream(self):
        """n server-sent events interval_ms apart, each flushed at once."""
        n = self.query_int("n", 5, 0, MAX_STREAM_EVENTS)
        interval = self.query_int("interval_ms", 50, 0, 60_000) / 1000
        words = "let me look that up in your notes for you".split()
        self.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        sent = 0
        for i in range(n):
            if i and self.server.stopping.wait(interval):
                break  # shutting down: end the stream cleanly
            data = json.dumps({"seq": i, "text": words[i % len(words)]})
            self.write_chunk(f"id: {i}\nevent: token\ndata: {data}\n\n")
            sent += 1
        done = json.dumps({"events": sent, "complete": sent == n})
        self.write_chunk(f"event: done\ndata: {done}\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.extra_log = f" events={sent}"

    def write_chunk(self, text):
        data = text.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    # -- misc --------------------------------------------------------------

    @route("GET", r"/slow")
    def slow(self):
        ms = self.query_int("ms", 1000, 0, MAX_SLOW_MS)
        started = time.monotonic()
        # Finishes during a shutdown too, unless the grace period runs out.
        self.server.grace_over.wait(ms / 1000)
        slept = round((time.monotonic() - started) * 1000)
        self.send_json(200, {"slept_ms": slept, "asked_ms": ms})


class NotesServer(ThreadingHTTPServer):
    """A threading server that counts running requests for a clean stop."""

    daemon_threads = True

    def __init__(self, address, store):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.store = store
        self.stopping = threading.Event()  # SIGTERM seen: streams end now
        self.grace_over = threading.Event()  # running requests give up
        self.health_knobs = {"down": False, "delay_ms": 0}
        self.active = 0
        self.idle = threading.Condition()
        super().__init__(address, Handler)

    def begin_request(self):
        with self.idle:
            self.active += 1

    def end_request(self):
        with self.idle:
            self.active -= 1
            self.idle.notify_all()

    def drain(self, grace):
        """Wait up to grace seconds for running requests; True if none."""
        with self.idle:
            return self.idle.wait_for(lambda: self.active == 0, grace)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=os.environ.get("PORT", "8000"))
    p.add_argument(
        "--data-dir",
        default=os.environ.get("NOTES_DATA_DIR"),
        help="keep notes.db here (default: in memory)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=5.0,
        help="seconds running requests get on shutdown",
    )
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    db_path = ":memory:"
    if args.data_dir:
        os.makedirs(args.data_dir, exist_ok=True)
        db_path = os.path.join(args.data_dir, "notes.db")
    store = Store(db_path)
    server = NotesServer((args.host, args.port), store)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    loop = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}
    )
    loop.start()
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)

    while not stop.wait(0.5):
        pass
    sys.stderr.write(f"{now_iso()} notes: shutting down\n")
    server.stopping.set()
    server.shutdown()  # returns once the accept loop has exited
    loop.join()
    server.server_close()  # new connections are refused from here on
    if not server.drain(args.grace):
        sys.stderr.write(f"{now_iso()} notes: grace over, dropping requests\n")
        server.grace_over.set()
        server.drain(1.0)
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
