package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/e2etest"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeopenai"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// This file runs the Node example app with its assistant's OpenAI calls
// going through the real sidecar's egress (base-URL mode) to a fake
// OpenAI upstream served by the test on loopback.

const (
	// placeholderKey is the app's OpenAI key: never a real one, and it
	// must never reach the upstream.
	placeholderKey = "sk-placeholder-e2e-app-key-0000"
	// egressUserHeader names the user an egress call is charged to (the
	// example config keeps the default).
	egressUserHeader = "X-Zimmer-User-Automation-Id"
	// guardMark starts the line the app's loopback guard writes when it
	// refuses a host.
	guardMark = "e2e guard: refused"
	// appStartTimeout bounds the app's start.
	appStartTimeout = 30 * time.Second
)

// loopbackGuard is preloaded into the Node app (node --require): any fetch
// to a host other than 127.0.0.1 is refused, a second fence behind
// OPENAI_BASE_URL, which the tests always point at the sidecar.
const loopbackGuard = `'use strict';
const realFetch = globalThis.fetch;
globalThis.fetch = function guardedFetch(input, init) {
  const raw = typeof input === 'string' || input instanceof URL ? String(input) : input.url;
  const host = new URL(raw).hostname;
  if (host !== '127.0.0.1') {
    process.stderr.write('` + guardMark + ` ' + host + '\n');
    return Promise.reject(new Error('` + guardMark + ` ' + host));
  }
  return realFetch(input, init);
};
`

// egressSetup configures startEgressStack.
type egressSetup struct {
	// upstream is the fake OpenAI API (its handler is served behind a
	// streamGate on an httptest server).
	upstream *fakeopenai.Server
	// staticKey, when set, is the one static key the sidecar injects
	// (key_source static, from the environment).
	staticKey string
	// token is the service token; empty: a fresh one.
	token string
	// env is added to the sidecar's environment.
	env []string
}

// egressStack is the Node app, its sidecar with the egress on, and the
// fake upstream.
type egressStack struct {
	*stack
	egress   string      // host:port of the egress listener
	outbox   string      // the outbox file
	gate     *streamGate // in front of the fake upstream
	upstream string      // the fake upstream's base URL
	env      []string    // the sidecar's environment, for restarts
}

// nodeCase returns the Node app's appCase.
func nodeCase(t *testing.T) appCase {
	t.Helper()
	for _, tc := range apps {
		if tc.app == e2etest.NodeApp {
			return tc
		}
	}
	t.Fatal("no node-app case")
	return appCase{}
}

// startEgressStack starts the fake upstream, the Node app with
// OPENAI_BASE_URL pointed at the egress port and a placeholder key, and
// the sidecar with the egress on that port (budgets on, 1 token a unit,
// debug logging, the outbox in the test's directory).
func startEgressStack(t *testing.T, setup egressSetup) *egressStack {
	t.Helper()
	tc := nodeCase(t)
	tc.app.Require(t)
	root, err := e2etest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(root, "examples", "node-app", "node_modules", "openai", "package.json")
	if _, err := os.Stat(pkg); err != nil {
		t.Skip("the Node app's openai package is not installed: " +
			"run npm ci in examples/node-app (scripts/test.sh does)")
	}

	// The fake upstream, behind a gate the test can close mid-stream.
	gate := &streamGate{next: setup.upstream.Handler(), marker: []byte(`"content":"w1"`)}
	up := httptest.NewServer(gate)
	t.Cleanup(up.Close)

	dir := t.TempDir()
	token := setup.token
	if token == "" {
		token = newToken(t)
	}
	es := &egressStack{
		stack: &stack{
			tc:      tc,
			token:   token,
			dataDir: filepath.Join(dir, "app"),
			ledger:  filepath.Join(dir, "ledger.db"),
			config:  e2etest.WriteConfig(t, tc.app.ConfigPath(t), dir),
		},
		egress:   fmt.Sprintf("127.0.0.1:%d", e2etest.FreePort(t)),
		outbox:   filepath.Join(dir, "egress-outbox.db"),
		gate:     gate,
		upstream: up.URL,
	}
	es.cfg = loadAppConfig(t, es.config)

	// The app: its OpenAI client reaches the egress only.
	guard := filepath.Join(dir, "loopback-guard.js")
	if err := os.WriteFile(guard, []byte(loopbackGuard), 0o600); err != nil {
		t.Fatal(err)
	}
	es.app = startNodeApp(t, root, es.dataDir, guard, []string{
		"OPENAI_BASE_URL=http://" + es.egress + "/v1",
		"OPENAI_API_KEY=" + placeholderKey,
	})

	// The sidecar, its upstream always the fake.
	es.env = []string{
		"ZIMMER_SIDECAR_LOG__LEVEL=debug",
		"ZIMMER_SIDECAR_EGRESS__LISTEN=" + es.egress,
		"ZIMMER_SIDECAR_EGRESS__UPSTREAM=" + up.URL,
		"ZIMMER_SIDECAR_EGRESS__OUTBOX__PATH=" + es.outbox,
		"ZIMMER_SIDECAR_EGRESS__BUDGET__ENABLED=true",
		"ZIMMER_SIDECAR_EGRESS__BUDGET__TOKENS_PER_UNIT=1",
	}
	if setup.staticKey != "" {
		es.env = append(es.env,
			"ZIMMER_SIDECAR_EGRESS__KEY_SOURCE=static",
			"ZIMMER_SIDECAR_EGRESS__KEYS=env:ZS_E2E_OPENAI_KEY",
			"ZS_E2E_OPENAI_KEY="+setup.staticKey)
	}
	es.env = append(es.env, setup.env...)
	es.startSidecar(t, es.env...)
	if got := egressAddr(t, es.sidecar); got != es.egress {
		t.Fatalf("the sidecar's egress listens on %q, want %q", got, es.egress)
	}
	if _, err := os.Stat(es.outbox); err != nil {
		t.Fatalf("the outbox is not where the test put it: %v", err)
	}
	return es
}

// startNodeApp starts the Node example with the guard preloaded and env
// added, on a free port, and waits for its "listening on" line.
func startNodeApp(t *testing.T, root, dataDir, guard string,
	env []string) *e2etest.AppProcess {
	t.Helper()
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	app := e2etest.NodeApp
	p := e2etest.Start(t, e2etest.Spec{
		Name: app.Name,
		Path: app.Interpreter,
		Args: []string{"--require", guard, filepath.Join(root, app.Script),
			"--host", "127.0.0.1", "--port", "0", "--grace", "2",
			"--data-file", filepath.Join(dataDir, "shop.json")},
		Env: env,
	})
	l, err := p.WaitLine(appStartTimeout, func(l e2etest.Line) bool {
		return l.Stream == e2etest.Stdout && strings.HasPrefix(l.Text, "listening on ")
	})
	if err != nil {
		t.Fatalf("start %s: %v\n%s", app.Name, err, p.Output())
	}
	return &e2etest.AppProcess{Process: p, Addr: strings.TrimPrefix(l.Text, "listening on ")}
}

// egressAddr reads the egress address from the sidecar's "listening" line.
func egressAddr(t *testing.T, sc *e2etest.Sidecar) string {
	t.Helper()
	var rec struct {
		Msg    string `json:"msg"`
		Egress string `json:"egress"`
	}
	_, err := sc.WaitLine(0, func(l e2etest.Line) bool {
		return json.Unmarshal([]byte(l.Text), &rec) == nil && rec.Msg == "listening"
	})
	if err != nil {
		t.Fatalf("no listening line: %v", err)
	}
	return rec.Egress
}

// streamGate serves the fake upstream and, once armed, stops the next
// answer that writes marker right after that write is flushed, until the
// test releases it: whatever the client has by then came through
// unbuffered, and the upstream has sent nothing after it.
type streamGate struct {
	next   http.Handler
	marker []byte

	mu    sync.Mutex
	armed *gateHold // the hold for the next marked answer
}

// gateHold is one armed stop.
type gateHold struct {
	reached chan struct{} // closed once the marked write was flushed
	release chan struct{}
	once    sync.Once
}

// Release lets the held answer go on; it is idempotent.
func (h *gateHold) Release() { h.once.Do(func() { close(h.release) }) }

// Arm makes the next answer that writes the marker stop after it.
// t.Cleanup releases it.
func (g *streamGate) Arm(t *testing.T) *gateHold {
	h := &gateHold{reached: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(h.Release)
	g.mu.Lock()
	g.armed = h
	g.mu.Unlock()
	return h
}

func (g *streamGate) take() *gateHold {
	g.mu.Lock()
	defer g.mu.Unlock()
	h := g.armed
	g.armed = nil
	return h
}

func (g *streamGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.next.ServeHTTP(&gateWriter{ResponseWriter: w, gate: g, ctx: r.Context()}, r)
}

// gateWriter watches an answer's writes for the gate's marker.
type gateWriter struct {
	http.ResponseWriter
	gate   *streamGate
	ctx    context.Context
	marked bool // a write since the last flush held the marker
}

func (w *gateWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, w.gate.marker) {
		w.marked = true
	}
	return w.ResponseWriter.Write(p)
}

// FlushError flushes and, after the marked write, waits for the release
// (or the client leaving) when the gate is armed.
func (w *gateWriter) FlushError() error {
	err := http.NewResponseController(w.ResponseWriter).Flush()
	if w.marked {
		w.marked = false
		if h := w.gate.take(); h != nil {
			close(h.reached)
			select {
			case <-h.release:
			case <-w.ctx.Done():
			}
		}
	}
	return err
}

func (w *gateWriter) Flush() { _ = w.FlushError() }

// Unwrap lets http.ResponseController reach the hijacker.
func (w *gateWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// assistantRequest asks the Node app's assistant about customer id's
// catalog, through the sidecar's public listener with the service token.
func assistantRequest(id int64, question string, stream bool) e2etest.Request {
	return e2etest.Request{Method: http.MethodPost,
		Path:      fmt.Sprintf("/api/v1/customers/%d/assistant", id),
		Body:      map[string]any{"question": question, "stream": stream},
		WithToken: true}
}

// appUsage is the usage the Node app reports, in its own field names.
type appUsage struct {
	PromptTokens     int64 `json:"promptTokens"`
	CompletionTokens int64 `json:"completionTokens"`
	TotalTokens      int64 `json:"totalTokens"`
}

// assistantAnswer is the Node app's plain answer.
type assistantAnswer struct {
	Answer       string    `json:"answer"`
	Model        string    `json:"model"`
	FinishReason string    `json:"finishReason"`
	Usage        *appUsage `json:"usage"`
}

// assistantEnd is the data of the Node app's last stream event ("end").
type assistantEnd struct {
	Complete     bool      `json:"complete"`
	FinishReason string    `json:"finishReason"`
	Usage        *appUsage `json:"usage"`
	Reason       string    `json:"reason"`
}

// openPostStream sends req (with its JSON body) and returns the open
// event stream once the status line is in; a status other than 200 is an
// error.
func openPostStream(ctx context.Context, base string, req e2etest.Request,
	token string) (*sseStream, error) {
	b, err := json.Marshal(req.Body)
	if err != nil {
		return nil, err
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, base+req.Path, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	for k, v := range req.Header {
		hr.Header[k] = v
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Accept", "text/event-stream")
	if req.WithToken {
		hr.Header.Set(e2etest.TokenHeader, token)
	}
	// No overall timeout: ctx bounds the stream.
	tr := &http.Transport{DisableKeepAlives: true}
	resp, err := (&http.Client{Transport: tr}).Do(hr)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: status %d: %s", req.Method, req.Path,
			resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: Content-Type %q", req.Method, req.Path, ct)
	}
	return &sseStream{resp: resp, rd: bufio.NewReader(resp.Body)}, nil
}

// nextWithin reads the next event, failing when none comes within d (the
// stream is closed then, so the read ends).
func nextWithin(st *sseStream, d time.Duration) (sseEvent, error) {
	type got struct {
		ev  sseEvent
		err error
	}
	ch := make(chan got, 1)
	go func() {
		ev, err := st.next()
		ch <- got{ev, err}
	}()
	select {
	case g := <-ch:
		return g.ev, g.err
	case <-time.After(d):
		st.close()
		<-ch
		return sseEvent{}, fmt.Errorf("no event within %s", d)
	}
}

// egressCall is the sidecar's log line of one egress call.
type egressCall struct {
	Msg              string `json:"msg"`
	CallID           string `json:"call_id"`
	Endpoint         string `json:"endpoint"`
	Status           int    `json:"status"`
	AppStatus        int    `json:"app_status"`
	Exit             string `json:"exit"`
	KeyID            int64  `json:"key_id"`
	Model            string `json:"model"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	TotalTokens      int64  `json:"total_tokens"`
	UsageKnown       bool   `json:"usage_known"`
	Success          bool   `json:"success"`
	User             int64  `json:"user_automation_id"`
	Units            int64  `json:"units"`
}

// egressCalls returns the sidecar's egress call lines so far, in order,
// and how many said their usage record was lost.
func egressCalls(sc *e2etest.Sidecar) (calls []egressCall, lost int) {
	for _, l := range sc.Lines() {
		var c egressCall
		if l.Stream != e2etest.Stderr || json.Unmarshal([]byte(l.Text), &c) != nil {
			continue
		}
		switch c.Msg {
		case "egress call":
			calls = append(calls, c)
		case "egress call: usage record lost":
			lost++
		}
	}
	return calls, lost
}

// waitEgressCalls waits until the sidecar logged n egress calls.
func waitEgressCalls(t *testing.T, sc *e2etest.Sidecar, n int) []egressCall {
	t.Helper()
	var calls []egressCall
	e2etest.Eventually(t, 15*time.Second, 20*time.Millisecond, func() (bool, string) {
		calls, _ = egressCalls(sc)
		return len(calls) >= n, fmt.Sprintf("%d egress call lines, want %d", len(calls), n)
	})
	if len(calls) != n {
		t.Fatalf("%d egress call lines, want %d: %+v", len(calls), n, calls)
	}
	return calls
}

// wantUsage is one call's exact usage by the fake's rules.
type wantUsage struct {
	prompt, completion int64
}

func (u wantUsage) total() int64 { return u.prompt + u.completion }

// upstreamUsage is the usage the fake answers for a request it received
// with completion words: its PromptTokens rule on the body as it arrived.
func upstreamUsage(t *testing.T, rec fakeopenai.Record, words int) wantUsage {
	t.Helper()
	p, err := fakeopenai.PromptTokens(rec.Body)
	if err != nil {
		t.Fatalf("upstream request %d: %v", rec.Seq, err)
	}
	return wantUsage{prompt: int64(p), completion: int64(words)}
}

// checkCall checks one egress call line: a complete, successful call of
// user with exactly want, charged want.total() units (1 token a unit).
func checkCall(t *testing.T, c egressCall, user, keyID int64, want wantUsage) {
	t.Helper()
	if c.Exit != "complete" || !c.Success || !c.UsageKnown || c.Status != http.StatusOK ||
		c.Endpoint != "/v1/chat/completions" {
		t.Errorf("egress call %s: %+v, want a complete 200 with usage", c.CallID, c)
	}
	if c.PromptTokens != want.prompt || c.CompletionTokens != want.completion ||
		c.TotalTokens != want.total() {
		t.Errorf("egress call %s metered %d+%d=%d, want %d+%d=%d", c.CallID,
			c.PromptTokens, c.CompletionTokens, c.TotalTokens,
			want.prompt, want.completion, want.total())
	}
	if c.User != user || c.Units != want.total() || c.KeyID != keyID {
		t.Errorf("egress call %s: user %d units %d key %d, want %d %d %d", c.CallID,
			c.User, c.Units, c.KeyID, user, want.total(), keyID)
	}
}

// balance is an account's demo and paid tokens together.
func balance(a metering.Account) int64 { return a.DemoTokens + a.PaidTokens }

// checkJournal checks that the journal charged each call exactly its
// units: the reservation's debit and its settlement, both under the
// call's key, add up to minus the units.
func checkJournal(t *testing.T, admin string, user int64, calls []egressCall) {
	t.Helper()
	net := map[string]int64{}
	kinds := map[string][]metering.EntryKind{}
	for _, e := range e2etest.LedgerJournal(t, admin) {
		if e.UserAutomationID != user || !strings.HasPrefix(e.IdempotencyKey, "egress ") {
			continue
		}
		id := strings.TrimPrefix(e.IdempotencyKey, "egress ")
		net[id] += e.DemoDelta + e.PaidDelta
		kinds[id] = append(kinds[id], e.Kind)
	}
	for _, c := range calls {
		k := kinds[c.CallID]
		if len(k) != 2 || k[0] != metering.EntryDebit || k[1] != metering.EntrySettle {
			t.Errorf("call %s: journal entries %v, want one debit then one settle",
				c.CallID, k)
		}
		if net[c.CallID] != -c.Units {
			t.Errorf("call %s: journal charged %d, want %d", c.CallID, -net[c.CallID], c.Units)
		}
		delete(kinds, c.CallID)
	}
	if len(kinds) != 0 {
		t.Errorf("journal entries of calls that are not in the log: %v", kinds)
	}
}

// checkUpstreamRequest checks what one request looked like upstream: the
// chat completions path, the injected key as a Bearer token, and neither
// the placeholder, the user header nor the service token.
func checkUpstreamRequest(t *testing.T, rec fakeopenai.Record, key, token string) {
	t.Helper()
	if rec.Path != "/v1/chat/completions" || rec.Method != http.MethodPost {
		t.Errorf("upstream request %d: %s %s", rec.Seq, rec.Method, rec.Path)
	}
	if rec.Key != key || rec.Header.Get("Authorization") != "Bearer "+key || rec.HasAPIKey {
		t.Errorf("upstream request %d: key %q, want the injected one", rec.Seq, rec.Key)
	}
	for name, vs := range rec.Header {
		for _, v := range vs {
			if strings.Contains(v, placeholderKey) || strings.Contains(v, token) {
				t.Errorf("upstream request %d: header %s holds the placeholder "+
					"or the service token", rec.Seq, name)
			}
		}
	}
	if rec.Header.Get(egressUserHeader) != "" || rec.Header.Get(e2etest.TokenHeader) != "" {
		t.Errorf("upstream request %d: a Zimmer header went upstream: %v", rec.Seq, rec.Header)
	}
	if bytes.Contains(rec.Body, []byte(placeholderKey)) {
		t.Errorf("upstream request %d: the body holds the placeholder", rec.Seq)
	}
}

// streamAsked reports whether a request body asked for a stream and for
// usage in it.
func streamAsked(t *testing.T, body []byte) (stream, includeUsage bool) {
	t.Helper()
	var v struct {
		Stream        bool `json:"stream"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("upstream body %q: %v", body, err)
	}
	return v.Stream, v.StreamOptions != nil && v.StreamOptions.IncludeUsage
}

// directCall sends one chat completion straight to the egress port, as
// an app would, with the placeholder key, charged to user.
func directCall(ctx context.Context, egress string, user int64, body string) (
	*e2etest.Response, error) {
	p := e2etest.NewPlatform("http://"+egress, "")
	return p.Do(ctx, e2etest.Request{Method: http.MethodPost, Path: "/v1/chat/completions",
		RawBody: body,
		Header: http.Header{
			"Authorization":  {"Bearer " + placeholderKey},
			egressUserHeader: {fmt.Sprint(user)},
			"Content-Type":   {"application/json"},
		}})
}

// secretFragments returns the key and 16-character windows of it, none of
// which may appear anywhere the key must not.
func secretFragments(key string) []string {
	out := []string{key}
	for i := 0; i+16 <= len(key); i += 8 {
		out = append(out, key[i:i+16])
	}
	return out
}

// containsAny returns the first fragment found in text, or "".
func containsAny(text string, fragments []string) string {
	for _, f := range fragments {
		if strings.Contains(text, f) {
			return f
		}
	}
	return ""
}

// checkNoGuardRefusal fails t when the app's guard refused a host: the
// app tried to reach something other than loopback.
func checkNoGuardRefusal(t *testing.T, app *e2etest.AppProcess) {
	t.Helper()
	for _, l := range app.Lines() {
		if strings.Contains(l.Text, guardMark) {
			t.Errorf("the app tried a non-loopback host: %s", l.Text)
		}
	}
}
