package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/logging"
)

// testToken is the service token every test configuration accepts.
const testToken = "zs-test-token-5b1e7c0d9a2f4e63"

// waitLimit bounds every wait for a server or a goroutine.
const waitLimit = 10 * time.Second

// configTOML is the test configuration. The placeholders are, in order:
// the public and admin addresses, the shutdown grace, the app URL and the ledger path.
const configTOML = `
[automation]
version = "9.8.7"

[listen]
public = %q
admin = %q
shutdown_grace = %q

[log]
level = "debug"

[auth]
tokens = ["env:ZS_TOKEN"]

[app]
url = %q

[ledger]
path = %q
default_demo_tokens = 5

[zimmer]
prefixes = ["/", "/api/zimmer"]

[zimmer.provision]
call = "POST /internal/tenants"
body = { tenant = "{user_automation_id}" }

[[route]]
path = "/private/*"
protect = true

[[route]]
path = "/chat/*"
protect = true
meter = { units = 1, usage_type = "chat", user = "header:X-Tenant" }
`

// params are the parts of the test configuration a test may change.
type params struct {
	public string   // default "127.0.0.1:0"
	admin  string   // default "127.0.0.1:0"
	grace  string   // default "5s"
	token  string   // default testToken
	appURL string   // default: the fake app
	ledger string   // default: ledger.db in a temporary directory
	extra  string   // TOML appended to the configuration
	env    []string // more environment for the configuration
}

// parseConfig builds a validated configuration from p.
func parseConfig(t *testing.T, p params) *config.Config {
	t.Helper()
	if p.public == "" {
		p.public = "127.0.0.1:0"
	}
	if p.admin == "" {
		p.admin = "127.0.0.1:0"
	}
	if p.grace == "" {
		p.grace = "5s"
	}
	if p.token == "" {
		p.token = testToken
	}
	if p.ledger == "" {
		p.ledger = filepath.Join(t.TempDir(), "ledger.db")
	}
	doc := fmt.Sprintf(configTOML, p.public, p.admin, p.grace, p.appURL, p.ledger) +
		"\n" + p.extra
	cfg, err := config.Parse([]byte(doc), append([]string{"ZS_TOKEN=" + p.token}, p.env...))
	if err != nil {
		t.Fatalf("parse config: %v", err)
	}
	return cfg
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of the
// servers' goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// records parses every line as a JSON object, failing t on any other.
func (b *syncBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// seenRequest is one request the fake app received.
type seenRequest struct {
	method string
	path   string
	header http.Header
	body   string
}

// fakeApp is the app behind the sidecar. It answers 200 {"ok":true} to
// everything, except:
//
//	/slow/...   signals entered, then answers once release is closed
//	/broken/... drops the connection without an answer
type fakeApp struct {
	srv     *httptest.Server
	entered chan struct{}

	release     chan struct{}
	releaseOnce sync.Once

	mu   sync.Mutex
	seen []seenRequest
}

func newFakeApp(t *testing.T) *fakeApp {
	t.Helper()
	a := &fakeApp{
		entered: make(chan struct{}, 8),
		release: make(chan struct{}),
	}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	t.Cleanup(a.unblock) // runs before Close, which waits for handlers
	return a
}

// unblock lets every slow request answer. It is idempotent.
func (a *fakeApp) unblock() { a.releaseOnce.Do(func() { close(a.release) }) }

func (a *fakeApp) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.seen = append(a.seen, seenRequest{
		method: r.Method, path: r.URL.Path, header: r.Header.Clone(), body: string(body),
	})
	a.mu.Unlock()

	switch {
	case strings.HasPrefix(r.URL.Path, "/slow/"):
		a.entered <- struct{}{}
		select {
		case <-a.release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "slow done")
	case strings.HasPrefix(r.URL.Path, "/broken/"):
		panic(http.ErrAbortHandler)
	default:
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}
}

// requests returns a copy of what the app received so far.
func (a *fakeApp) requests() []seenRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]seenRequest(nil), a.seen...)
}

// harness is one sidecar in front of one fake app, listening on
// loopback ports chosen by the kernel.
type harness struct {
	t      *testing.T
	sc     *Sidecar
	cfg    *config.Config
	app    *fakeApp
	logs   *syncBuffer
	client *http.Client

	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	runErr error
}

// newHarness builds a sidecar for p and opens its listeners; call run to
// serve. The sidecar is stopped (or closed) when t ends.
func newHarness(t *testing.T, p params) *harness {
	t.Helper()
	app := newFakeApp(t)
	if p.appURL == "" {
		p.appURL = app.srv.URL
	}
	h := &harness{
		t:    t,
		cfg:  parseConfig(t, p),
		app:  app,
		logs: &syncBuffer{},
		client: &http.Client{
			Timeout:   waitLimit,
			Transport: &http.Transport{},
		},
	}
	red := logging.NewRedactor()
	sc, err := New(h.cfg, Options{
		Logger:   logging.New(h.logs, h.cfg.Log.Level, red),
		Redactor: red,
	})
	if err != nil {
		t.Fatalf("new sidecar: %v", err)
	}
	h.sc = sc
	t.Cleanup(func() { _ = sc.Close() })
	if err := sc.Listen(); err != nil {
		t.Fatalf("listen: %v", err)
	}
	return h
}

// startHarness is newHarness followed by run.
func startHarness(t *testing.T, p params) *harness {
	t.Helper()
	h := newHarness(t, p)
	h.run()
	return h
}

// run starts Run in a goroutine; stop ends it.
func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- h.sc.Run(ctx) }()
	h.t.Cleanup(func() { _ = h.stop() })
}

// stop cancels Run's context and returns what Run returned.
func (h *harness) stop() error {
	h.t.Helper()
	h.once.Do(func() {
		h.cancel()
		select {
		case h.runErr = <-h.done:
		case <-time.After(waitLimit):
			h.t.Fatal("Run did not return after its context was cancelled")
		}
		h.client.CloseIdleConnections()
	})
	return h.runErr
}

func (h *harness) publicURL() string { return "http://" + h.sc.PublicAddr() }
func (h *harness) adminURL() string  { return "http://" + h.sc.AdminAddr() }

// answer is a finished response.
type answer struct {
	status int
	header http.Header
	body   string
}

// do sends one request to base+target and reads the whole answer. hdr
// values are set as given, so several values or odd spellings survive.
func (h *harness) do(method, url, body string, hdr http.Header) answer {
	h.t.Helper()
	a, err := h.try(method, url, body, hdr)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, url, err)
	}
	return a
}

func (h *harness) try(method, url, body string, hdr http.Header) (answer, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return answer{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: string(b)}, nil
}

// withToken returns a header set carrying the service token and the
// given name/value pairs.
func withToken(token string, kv ...string) http.Header {
	h := http.Header{"X-Zimmer-Service-Token": {token}}
	for i := 0; i+1 < len(kv); i += 2 {
		h[kv[i]] = append(h[kv[i]], kv[i+1])
	}
	return h
}

// eventually polls cond until it holds, failing t after waitLimit.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitLimit)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// waitReady polls the admin listener's /readyz until it answers 200.
func (h *harness) waitReady() {
	h.t.Helper()
	eventually(h.t, "/readyz to answer 200", func() bool {
		a, err := h.try("GET", h.adminURL()+"/readyz", "", nil)
		return err == nil && a.status == http.StatusOK
	})
}

// newTestLogger returns a debug JSON logger into w.
func newTestLogger(w io.Writer) *slog.Logger {
	return logging.New(w, slog.LevelDebug, logging.NewRedactor())
}

const provisionBody = `{"user_automation_id": 7, "user_id": 70}`
