package sidecar

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/health"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/logging"
)

// rotatedToken is the second service token of the rotation tests.
const rotatedToken = "zs-rotated-token-9e41b07c25d8"

// twoTokens makes a configuration accept testToken and rotatedToken.
var twoTokens = []string{
	"ZIMMER_SIDECAR_AUTH__TOKENS=env:ZS_TOKEN,env:ZS_TOKEN2",
	"ZS_TOKEN2=" + rotatedToken,
}

// next parses a configuration for the running harness: same app, same
// ledger, same listen addresses as configured, plus p's changes.
func (h *harness) next(p params) *config.Config {
	h.t.Helper()
	if p.appURL == "" {
		p.appURL = h.cfg.App.URL.String()
	}
	p.ledger = h.cfg.Ledger.Path
	return parseConfig(h.t, p)
}

// reload applies cfg and fails the test on error.
func (h *harness) reload(cfg *config.Config) {
	h.t.Helper()
	if err := h.sc.Reload(cfg); err != nil {
		h.t.Fatalf("Reload: %v", err)
	}
}

// lastRecord returns the last log record with message msg.
func (h *harness) lastRecord(msg string) map[string]any {
	h.t.Helper()
	var found map[string]any
	for _, r := range h.logs.records(h.t) {
		if r["msg"] == msg {
			found = r
		}
	}
	if found == nil {
		h.t.Fatalf("no log line %q in:\n%s", msg, h.logs)
	}
	return found
}

// strs converts a JSON array of strings from a log record.
func strs(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// firer sends requests with one token in a loop until stopped, counting
// answers and remembering every one that was not 200.
type firer struct {
	done     atomic.Int64
	stopping chan struct{}
	wg       sync.WaitGroup

	mu       sync.Mutex
	failures []string
}

func startFiring(h *harness, token string, workers int) *firer {
	f := &firer{stopping: make(chan struct{})}
	consume := `{"user_automation_id": 7, "units": 1, "usage_type": "chat",` +
		` "idempotency_key": "k"}`
	targets := []struct{ method, path, body string }{
		{"GET", "/private/x", ""},
		{"POST", "/provision", provisionBody},
		{"POST", "/api/zimmer/usage/consume", consume},
	}
	for w := range workers {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for i := w; ; i++ {
				select {
				case <-f.stopping:
					return
				default:
				}
				tg := targets[i%len(targets)]
				a, err := h.try(tg.method, h.publicURL()+tg.path, tg.body, withToken(token))
				if err == nil && a.status != http.StatusOK {
					err = fmt.Errorf("status %d: %s", a.status, a.body)
				}
				if err != nil {
					f.mu.Lock()
					f.failures = append(f.failures, tg.path+": "+err.Error())
					f.mu.Unlock()
				}
				f.done.Add(1)
			}
		}()
	}
	return f
}

// waitMore waits until n more requests were answered.
func (f *firer) waitMore(t *testing.T, n int64) {
	t.Helper()
	target := f.done.Load() + n
	eventually(t, fmt.Sprintf("%d more requests", n), func() bool {
		return f.done.Load() >= target
	})
}

func (f *firer) stop() []string {
	close(f.stopping)
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failures
}

// TestReloadTokenRotation rotates the service token the way an operator
// does: the new token is added while clients keep using the old one, then
// the old one is dropped. No request fails while both are valid.
func TestReloadTokenRotation(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{})
	h.waitReady()
	if a := h.do("POST", h.publicURL()+"/provision", provisionBody,
		withToken(testToken)); a.status != 200 {
		t.Fatalf("provision: got %d: %s", a.status, a.body)
	}

	// 1. Clients keep sending the old token through the first reload.
	f := startFiring(h, testToken, 4)
	f.waitMore(t, 30)
	h.reload(h.next(params{env: twoTokens}))
	f.waitMore(t, 30)
	for _, tok := range []string{testToken, rotatedToken} {
		if a := h.do("GET", h.publicURL()+"/private/x", "", withToken(tok)); a.status != 200 {
			t.Errorf("with both tokens valid, %.8s...: got %d, want 200", tok, a.status)
		}
	}
	if failures := f.stop(); len(failures) > 0 {
		t.Fatalf("%d of %d requests failed during the rotation, first: %s",
			len(failures), f.done.Load(), failures[0])
	}

	// 2. Clients moved to the new token; the old one is dropped.
	f = startFiring(h, rotatedToken, 4)
	f.waitMore(t, 30)
	h.reload(h.next(params{token: rotatedToken}))
	f.waitMore(t, 30)
	if failures := f.stop(); len(failures) > 0 {
		t.Fatalf("%d requests with the new token failed, first: %s",
			len(failures), failures[0])
	}
	for _, target := range []string{"/private/x", "/api/zimmer/provision"} {
		method, body := "GET", ""
		if strings.HasSuffix(target, "provision") {
			method, body = "POST", provisionBody
		}
		a := h.do(method, h.publicURL()+target, body, withToken(testToken))
		if a.status != http.StatusUnauthorized {
			t.Errorf("%s with the dropped token: got %d, want 401", target, a.status)
		}
	}

	// 3. The log says what changed, never the tokens.
	rec := h.lastRecord("configuration reloaded")
	if got := strs(rec["changed"]); !slices.Equal(got, []string{"auth.tokens"}) {
		t.Errorf("changed: got %v, want [auth.tokens]", got)
	}
	for _, tok := range []string{testToken, rotatedToken} {
		if strings.Contains(h.logs.String(), tok) {
			t.Errorf("a service token is in the log")
		}
	}
}

// TestReloadRoutesAndProbes: routes, passthrough and probes take effect
// on the next request.
func TestReloadRoutesAndProbes(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{})
	h.waitReady()
	if a := h.do("GET", h.publicURL()+"/open/x", "", nil); a.status != 200 {
		t.Fatalf("before: /open/x got %d, want 200", a.status)
	}

	h.reload(h.next(params{extra: `
[[app.probe]]
name = "app"
path = "/healthz"
every = "1h"

[[route]]
path = "/open/*"
protect = true
`}))
	tests := []struct {
		target string
		hdr    http.Header
		want   int
	}{
		{"/open/x", nil, 401},
		{"/open/x", withToken(testToken), 200},
		{"/private/x", nil, 401}, // an unchanged route stays
		{"/elsewhere", nil, 200}, // passthrough
	}
	for _, tt := range tests {
		if a := h.do("GET", h.publicURL()+tt.target, "", tt.hdr); a.status != tt.want {
			t.Errorf("after: GET %s: got %d, want %d", tt.target, a.status, tt.want)
		}
	}
	var names []string
	for _, p := range h.sc.monitor.Probes() {
		names = append(names, p.Options.Name)
	}
	if !slices.Equal(names, []string{"app"}) {
		t.Errorf("probes after reload: got %v, want [app]", names)
	}
	eventually(t, "/health to report the new probe", func() bool {
		a := h.do("GET", h.publicURL()+"/health", "", nil)
		return strings.Contains(a.body, `"app"`)
	})
	rec := h.lastRecord("configuration reloaded")
	if got, want := strs(rec["changed"]), []string{"app.probe", "route"}; !slices.Equal(got, want) {
		t.Errorf("changed: got %v, want %v", got, want)
	}

	// Passthrough off: unnamed paths now answer 404.
	h.reload(h.next(params{env: []string{"ZIMMER_SIDECAR_APP__PASSTHROUGH=false"}}))
	if a := h.do("GET", h.publicURL()+"/elsewhere", "", nil); a.status != 404 {
		t.Errorf("passthrough off: got %d, want 404", a.status)
	}
	if n := len(h.sc.monitor.Probes()); n != 0 {
		t.Errorf("probes after removing them: got %d, want 0", n)
	}
}

// TestReloadRestartOnly: settings that need a restart are named in one
// warning and keep their running values, while the rest is applied.
func TestReloadRestartOnly(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{})
	h.waitReady()
	public := h.sc.PublicAddr()

	h.reload(h.next(params{
		public: "127.0.0.1:1",
		env: []string{
			"ZIMMER_SIDECAR_LISTEN__MAX_CONNECTIONS=7",
			"ZIMMER_SIDECAR_LISTEN__MAX_BODY=64",
			"ZIMMER_SIDECAR_LOG__ACCESS=false",
			"ZIMMER_SIDECAR_AUTH__FAILURES_PER_MINUTE=1",
			"ZIMMER_SIDECAR_LEDGER__DEFAULT_DEMO_TOKENS=9",
		},
	}))

	warn := h.lastRecord("reload: settings need a restart to change; " +
		"their running values stay in effect")
	want := []string{"listen.public", "listen.max_connections", "log.access",
		"auth.failures_per_minute", "ledger.default_demo_tokens"}
	if got := strs(warn["restart_required"]); !slices.Equal(got, want) {
		t.Errorf("restart_required: got %v, want %v", got, want)
	}
	if warn["level"] != "WARN" {
		t.Errorf("level: got %v, want WARN", warn["level"])
	}
	rec := h.lastRecord("configuration reloaded")
	if got := strs(rec["changed"]); !slices.Equal(got, []string{"listen.max_body"}) {
		t.Errorf("changed: got %v, want [listen.max_body]", got)
	}

	// Running values stay; the body limit applies.
	live := h.sc.applied()
	if live.Listen.Public != h.cfg.Listen.Public || live.Ledger.DefaultDemoTokens != 5 ||
		live.Auth.FailuresPerMinute != h.cfg.Auth.FailuresPerMinute || !live.Log.Access {
		t.Errorf("a restart-only setting changed: %+v %+v", live.Listen, live.Ledger)
	}
	if h.sc.PublicAddr() != public {
		t.Errorf("public address: got %s, want %s", h.sc.PublicAddr(), public)
	}
	a := h.do("POST", h.publicURL()+"/provision",
		`{"user_automation_id": 8, "user_id": 80, "pad": "`+strings.Repeat("x", 80)+`"}`,
		withToken(testToken))
	if a.status != http.StatusRequestEntityTooLarge {
		t.Errorf("a body over the reloaded max_body: got %d, want 413", a.status)
	}
	// The ledger keeps granting its running default of demo tokens.
	a = h.do("POST", h.publicURL()+"/provision", `{"user_automation_id":8,"user_id":8}`,
		withToken(testToken))
	if a.status != 200 {
		t.Fatalf("provision after reload: got %d: %s", a.status, a.body)
	}
	acct, err := h.sc.ledger.Account(context.Background(), 8)
	if err != nil || acct.DemoTokens != 5 {
		t.Errorf("demo tokens granted after reload: got %d (%v), want 5",
			acct.DemoTokens, err)
	}
}

// TestReloadLogLevel: with Options.Level the level is reloadable;
// without it, it is named as needing a restart.
func TestReloadLogLevel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		withLevel   bool
		wantLevel   slog.Level
		wantRestart bool
	}{
		{"level var", true, slog.LevelError, false},
		{"fixed level", false, slog.LevelDebug, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := parseConfig(t, params{appURL: "http://127.0.0.1:1"})
			logs := &syncBuffer{}
			lv := new(slog.LevelVar)
			lv.Set(cfg.Log.Level)
			opts := Options{Logger: logging.New(logs, lv, logging.NewRedactor())}
			if tt.withLevel {
				opts.Level = lv
			}
			sc, err := New(cfg, opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sc.Close() })

			next := parseConfig(t, params{appURL: "http://127.0.0.1:1",
				ledger: cfg.Ledger.Path,
				env:    []string{"ZIMMER_SIDECAR_LOG__LEVEL=error"}})
			if err := sc.Reload(next); err != nil {
				t.Fatal(err)
			}
			if lv.Level() != tt.wantLevel {
				t.Errorf("level: got %v, want %v", lv.Level(), tt.wantLevel)
			}
			named := `"restart_required":["log.level"]`
			if got := strings.Contains(logs.String(), named); got != tt.wantRestart {
				t.Errorf("log.level named as restart-only: got %v, want %v\n%s",
					got, tt.wantRestart, logs)
			}
		})
	}
}

// TestReloadFailureChangesNothing: a configuration that validates but
// cannot be applied (a probe named like a registered check) leaves the
// tokens, routes and probes of the running one in place.
func TestReloadFailureChangesNothing(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{})
	h.waitReady()
	if err := h.sc.monitor.Register("breaker", func() health.CheckResult {
		return health.CheckResult{State: health.StateUp}
	}); err != nil {
		t.Fatal(err)
	}
	before, snap := h.sc.applied(), h.sc.current.Load()

	bad := h.next(params{token: rotatedToken, extra: `
[[app.probe]]
name = "breaker"
path = "/healthz"

[[route]]
path = "/open/*"
protect = true
`})
	err := h.sc.Reload(bad)
	if !errors.Is(err, health.ErrDuplicateName) {
		t.Fatalf("Reload: got %v, want ErrDuplicateName", err)
	}
	if h.sc.applied() != before || h.sc.current.Load() != snap {
		t.Error("a failed reload swapped the configuration or the snapshot")
	}
	tests := []struct {
		target string
		hdr    http.Header
		want   int
	}{
		{"/private/x", withToken(testToken), 200},
		{"/private/x", withToken(rotatedToken), 401},
		{"/open/x", nil, 200},
	}
	for _, tt := range tests {
		if a := h.do("GET", h.publicURL()+tt.target, "", tt.hdr); a.status != tt.want {
			t.Errorf("GET %s: got %d, want %d", tt.target, a.status, tt.want)
		}
	}
	if n := len(h.sc.monitor.Probes()); n != 0 {
		t.Errorf("probes: got %d, want none", n)
	}
}

// TestReloadAfterClose refuses: nothing may install a proxy that no one
// will close.
func TestReloadAfterClose(t *testing.T) {
	t.Parallel()
	cfg := parseConfig(t, params{appURL: "http://127.0.0.1:1"})
	sc, err := New(cfg, Options{Logger: newTestLogger(io.Discard)})
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sc.Reload(cfg); !errors.Is(err, ErrClosed) {
		t.Errorf("Reload after Close: got %v, want ErrClosed", err)
	}
}

// TestReloadConcurrent: reloads from several goroutines while requests
// flow; the race detector watches, and the last configuration wins
// whole.
func TestReloadConcurrent(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{})
	h.waitReady()
	cfgs := []*config.Config{
		h.next(params{env: twoTokens}),
		h.next(params{env: twoTokens, extra: "[[route]]\npath = \"/open/*\"\n"}),
	}
	f := startFiring(h, testToken, 2)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if err := h.sc.Reload(cfgs[i%2]); err != nil {
				t.Errorf("Reload: %v", err)
			}
		})
	}
	wg.Wait()
	f.waitMore(t, 10)
	if failures := f.stop(); len(failures) > 0 {
		t.Errorf("%d requests failed, first: %s", len(failures), failures[0])
	}
	if got := h.sc.applied(); got.Auth.Tokens[1].Value != rotatedToken {
		t.Errorf("applied configuration lost the second token")
	}
}

// streamApp serves /events/...: a server-sent event stream whose events
// the test releases one at a time, so a reload can happen between any
// two of them. Other paths answer 200.
type streamApp struct {
	srv  *httptest.Server
	next chan struct{}
}

func newStreamApp(t *testing.T) *streamApp {
	t.Helper()
	a := &streamApp{next: make(chan struct{})}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/events/") {
			_, _ = io.WriteString(w, `{"ok":true}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i := range 5 {
			fmt.Fprintf(w, "event: tick\ndata: %d\n\n", i)
			if err := rc.Flush(); err != nil {
				return
			}
			select {
			case <-a.next:
			case <-r.Context().Done():
				return
			}
		}
		_, _ = io.WriteString(w, "event: end\ndata: done\n\n")
	}))
	t.Cleanup(a.srv.Close)
	return a
}

// TestReloadDuringStream: an event stream opened through the proxy keeps
// flowing to its end while the configuration is reloaded between its
// events, even when the reload protects the stream's own route; the
// next request sees the new rules.
func TestReloadDuringStream(t *testing.T) {
	t.Parallel()
	app := newStreamApp(t)
	h := startHarness(t, params{appURL: app.srv.URL})
	h.waitReady()

	resp, err := h.client.Get(h.publicURL() + "/events/1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stream: got %d, want 200", resp.StatusCode)
	}
	rd := bufio.NewReader(resp.Body)
	readEvent := func() string {
		t.Helper()
		var data string
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("stream cut after %q: %v", data, err)
			}
			line = strings.TrimRight(line, "\n")
			if line == "" {
				return data
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok {
				data = v
			}
		}
	}

	protected := h.next(params{env: twoTokens,
		extra: "[[route]]\npath = \"/events/*\"\nprotect = true\n"})
	open := h.next(params{token: rotatedToken})
	var got []string
	for i := range 5 {
		got = append(got, readEvent())
		h.reload([]*config.Config{protected, open}[i%2])
		app.next <- struct{}{}
	}
	got = append(got, readEvent())
	if want := []string{"0", "1", "2", "3", "4", "done"}; !slices.Equal(got, want) {
		t.Errorf("events: got %v, want %v", got, want)
	}

	// The last reload (index 4) protected /events/*: a new stream needs
	// the token.
	if a := h.do("GET", h.publicURL()+"/events/2", "", nil); a.status != 401 {
		t.Errorf("new stream without a token after the reload: got %d, want 401", a.status)
	}
}

// TestMergeConfig names each changed setting by its key and sorts it
// into applied or restart-only.
func TestMergeConfig(t *testing.T) {
	t.Parallel()
	base := parseConfig(t, params{appURL: "http://127.0.0.1:1",
		ledger: filepath.Join(t.TempDir(), "l.db")})
	tests := []struct {
		env         string
		withLevel   bool
		wantChanged string
		wantRestart string
	}{
		{env: "LISTEN__PUBLIC=127.0.0.1:2", wantRestart: "listen.public"},
		{env: "LISTEN__ADMIN=", wantRestart: "listen.admin"},
		{env: "LISTEN__SHUTDOWN_GRACE=9s", wantRestart: "listen.shutdown_grace"},
		{env: "LISTEN__IDLE_TIMEOUT=9s", wantRestart: "listen.idle_timeout"},
		{env: "LISTEN__MAX_BODY=2MiB", wantChanged: "listen.max_body"},
		{env: "LISTEN__REQUESTS_PER_SECOND=5", wantChanged: "listen.requests_per_second"},
		{env: "LISTEN__BURST=9", wantChanged: "listen.burst"},
		{env: "AUTOMATION__VERSION=1.0.1", wantRestart: "automation.version"},
		{env: "APP__URL=http://127.0.0.1:2", wantRestart: "app.url"},
		{env: "APP__PASSTHROUGH=false", wantChanged: "app.passthrough"},
		{env: "APP__CONNECT_TIMEOUT=1s", wantChanged: "app.connect_timeout"},
		{env: "AUTH__ACCEPT_BEARER=true", wantChanged: "auth.accept_bearer"},
		{env: "AUTH__FAILURES_PER_MINUTE=3", wantRestart: "auth.failures_per_minute"},
		{env: "LEDGER__MAX_UNITS=10", wantRestart: "ledger.max_units"},
		{env: "LEDGER__DEMO_RULE=spill", wantRestart: "ledger.demo_rule"},
		{env: "LOG__ACCESS=false", wantRestart: "log.access"},
		{env: "LOG__LEVEL=warn", wantRestart: "log.level"},
		{env: "LOG__LEVEL=warn", withLevel: true, wantChanged: "log.level"},
		{env: "ZIMMER__PREFIXES=/z", wantChanged: "zimmer.prefixes"},
		{env: "ZIMMER__SERVICE_URL=https://x.example/{user_id}",
			wantChanged: "zimmer.service_url"},
	}
	for _, tt := range tests {
		s := &Sidecar{}
		if tt.withLevel {
			s.level = new(slog.LevelVar)
		}
		cfg := parseConfig(t, params{appURL: "http://127.0.0.1:1",
			ledger: base.Ledger.Path, env: []string{"ZIMMER_SIDECAR_" + tt.env}})
		next, changed, restart := s.mergeConfig(base, cfg)
		if got := strings.Join(changed, ","); got != tt.wantChanged {
			t.Errorf("%s: changed %q, want %q", tt.env, got, tt.wantChanged)
		}
		if got := strings.Join(restart, ","); got != tt.wantRestart {
			t.Errorf("%s: restart %q, want %q", tt.env, got, tt.wantRestart)
		}
		// The merged copy differs from the running one exactly in the
		// changed keys; cfg itself is untouched.
		_, again, restartAgain := s.mergeConfig(base, next)
		if !slices.Equal(again, changed) || len(restartAgain) != 0 {
			t.Errorf("%s: merged copy differs in %v / %v", tt.env, again, restartAgain)
		}
		if _, _, r := s.mergeConfig(base, cfg); !slices.Equal(r, restart) {
			t.Errorf("%s: mergeConfig modified its argument", tt.env)
		}
	}
}

// TestReloadKeepsKeysInFlight: a reload builds a new proxy, but a metered
// call in flight still holds its Idempotency-Key: a retry with that key
// hears "in progress", not that a call which may yet fail has completed.
func TestReloadKeepsKeysInFlight(t *testing.T) {
	t.Parallel()
	slowRoute := `
[[route]]
path = "/slow/*"
protect = true
meter = { units = 1, usage_type = "slow", user = "header:X-Tenant" }
`
	h := startHarness(t, params{extra: slowRoute})
	h.waitReady()
	h.do("POST", h.publicURL()+"/provision", `{"user_automation_id":7,"user_id":1}`,
		withToken(testToken))
	hdr := withToken(testToken)
	hdr.Set("X-Tenant", "7")
	hdr.Set("Idempotency-Key", "k1")
	first := make(chan result, 1)
	go func() {
		a, err := h.try("GET", h.publicURL()+"/slow/first", "", hdr)
		first <- result{a, err}
	}()
	select {
	case <-h.app.entered:
	case <-time.After(waitLimit):
		t.Fatal("the first call never reached the app")
	}

	// A real change, so the reload builds a new proxy.
	if err := h.sc.Reload(parseConfig(t, params{extra: slowRoute,
		ledger: h.cfg.Ledger.Path, appURL: h.cfg.App.URL.String(),
		env: []string{"ZIMMER_SIDECAR_APP__CONNECT_TIMEOUT=3s"}})); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	a := h.do("GET", h.publicURL()+"/slow/again", "", hdr)
	if a.status != http.StatusConflict || !strings.Contains(a.body, "in progress") {
		t.Errorf("retry during the first call: got %d %s, want 409 in progress",
			a.status, a.body)
	}
	h.app.unblock()
	<-first
}
