package sidecar

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:9090", true},
		{"127.0.0.2:9", true},
		{"localhost:9", true},
		{"[::1]:9", true},
		{"0.0.0.0:9", false},
		{":9", false},
		{"[::]:9", false},
		{"10.0.0.1:9", false},
		{"192.168.1.5:9", false},
		{"example.com:9", false},
		{"LOCALHOST:9", false}, // unknown spellings fail closed: auth required
		{"127.0.0.1", false},   // no port: not an address Listen accepts
		{"", false},
	}
	for _, tt := range tests {
		if got := isLoopback(tt.addr); got != tt.want {
			t.Errorf("isLoopback(%q) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}

func TestNewRequiresLogger(t *testing.T) {
	t.Parallel()
	cfg := parseConfig(t, params{appURL: "http://127.0.0.1:1"})
	if _, err := New(cfg, Options{}); err == nil {
		t.Fatal("New without a logger: got nil error")
	}
}

func TestRouting(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{})
	tok := withToken(testToken)

	tests := []struct {
		name     string
		method   string
		target   string
		body     string
		hdr      http.Header
		want     int
		wantApp  string // the path the app receives, "" when it must see nothing
		wantBody string // a substring of the answer
	}{
		{name: "health", method: "GET", target: "/health", want: 200,
			wantBody: `"9.8.7"`},
		{name: "health under prefix", method: "GET", target: "/api/zimmer/health/",
			want: 200, wantBody: `"9.8.7"`},
		{name: "health head", method: "HEAD", target: "/health", want: 200},
		{name: "health post", method: "POST", target: "/health", want: 405},
		{name: "provision get before auth", method: "GET", target: "/provision",
			want: 405, wantBody: "Method Not Allowed"},
		{name: "provision without token", method: "POST", target: "/provision",
			body: provisionBody, want: 401, wantBody: "Missing service token"},
		{name: "provision wrong token", method: "POST", target: "/provision",
			body: provisionBody, hdr: withToken("nope"), want: 401,
			wantBody: "Invalid service token"},
		{name: "dot segments reach provision", method: "POST",
			target: "/health/../provision", body: provisionBody, want: 401},
		{name: "escaped slashes reach provision", method: "POST",
			target: "/public%2F..%2Fprovision", body: provisionBody, want: 401},
		{name: "provision under prefix", method: "POST", target: "/api/zimmer/provision",
			body: provisionBody, hdr: tok, want: 200, wantApp: "/internal/tenants"},
		{name: "consume", method: "POST", target: "/usage/consume",
			body: `{"user_automation_id": 7, "units": 1, "usage_type": "chat"}`,
			hdr:  tok, want: 200, wantBody: `"remaining_demo_tokens":4`},
		{name: "consume trailing slash", method: "POST",
			target: "/api/zimmer/usage/consume/",
			body:   `{"user_automation_id": 7, "units": 1, "usage_type": "chat"}`,
			hdr:    tok, want: 200, wantBody: `"remaining_demo_tokens":3`},
		{name: "kb not configured", method: "POST", target: "/kb/status",
			body: `{"user_automation_id": 7}`, hdr: tok, want: 404},
		{name: "not a prefix", method: "GET", target: "/api/health", want: 200,
			wantApp: "/api/health"},
		{name: "healthz is the app's", method: "GET", target: "/healthz", want: 200,
			wantApp: "/healthz"},
		{name: "passthrough", method: "GET", target: "/hello/world?x=1", want: 200,
			wantApp: "/hello/world", wantBody: `{"ok":true}`},
		{name: "protected without token", method: "GET", target: "/private/doc",
			want: 401},
		{name: "protected with token", method: "GET", target: "/private/doc",
			hdr: tok, want: 200, wantApp: "/private/doc"},
		{name: "metered", method: "POST", target: "/chat/send", body: "hi",
			hdr: withToken(testToken, "X-Tenant", "7"), want: 200, wantApp: "/chat/send"},
	}
	for _, tt := range tests {
		before := len(h.app.requests())
		a := h.do(tt.method, h.publicURL()+tt.target, tt.body, tt.hdr)
		if a.status != tt.want {
			t.Errorf("%s: got status %d, want %d: %s", tt.name, a.status, tt.want, a.body)
		}
		if !strings.Contains(a.body, tt.wantBody) {
			t.Errorf("%s: got body %q, want it to contain %q", tt.name, a.body, tt.wantBody)
		}
		seen := h.app.requests()[before:]
		switch {
		case tt.wantApp == "" && len(seen) > 0:
			t.Errorf("%s: the app received %s %s, want nothing",
				tt.name, seen[0].method, seen[0].path)
		case tt.wantApp != "" && (len(seen) != 1 || seen[0].path != tt.wantApp):
			t.Errorf("%s: the app received %v, want one request to %s",
				tt.name, seen, tt.wantApp)
		}
	}

	// The provision hook got the mapped body; the metered call charged.
	for _, r := range h.app.requests() {
		switch r.path {
		case "/internal/tenants":
			if strings.ReplaceAll(r.body, " ", "") != `{"tenant":7}` {
				t.Errorf("hook body %q, want {\"tenant\":7}", r.body)
			}
		case "/chat/send":
			if got := r.header.Get("X-Zimmer-User-Automation-Id"); got != "7" {
				t.Errorf("metered call: got user header %q, want 7", got)
			}
			if got := r.header.Get("X-Zimmer-Remaining-Demo-Tokens"); got != "2" {
				t.Errorf("metered call: got remaining demo %q, want 2", got)
			}
		}
	}
}

// TestServiceTokenNeverReachesApp sends the token on every kind of path
// under several spellings; the app must never see it.
func TestServiceTokenNeverReachesApp(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{})
	// Each set authenticates; the last adds the underscore spelling that
	// some app servers read as the same header.
	spellings := []http.Header{
		{"X-Zimmer-Service-Token": {testToken}},
		{"x-zimmer-service-token": {testToken}},
		{"X-Zimmer-Service-Token": {testToken}, "X_zimmer_service_token": {testToken}},
	}
	h.do("POST", h.publicURL()+"/provision", provisionBody, withToken(testToken))
	for _, sp := range spellings {
		for _, target := range []string{"/open/page", "/private/page", "/chat/x"} {
			hdr := sp.Clone()
			hdr["X-Tenant"] = []string{"7"}
			if a := h.do("POST", h.publicURL()+target, "x", hdr); a.status != 200 {
				t.Errorf("%s with %v: got status %d, want 200: %s",
					target, sp, a.status, a.body)
			}
		}
	}

	seen := h.app.requests()
	if len(seen) != 1+3*3 {
		t.Fatalf("the app received %d requests, want 10", len(seen))
	}
	for _, r := range seen {
		for name, vals := range r.header {
			if strings.Contains(strings.ToLower(strings.ReplaceAll(name, "_", "-")),
				"service-token") {
				t.Errorf("%s: the app received header %s", r.path, name)
			}
			for _, v := range vals {
				if strings.Contains(v, testToken) {
					t.Errorf("%s: the app received the token in %s", r.path, name)
				}
			}
		}
	}
}

// TestTokenRotationWithoutRestart installs a configuration with a new
// token into a running sidecar: the old token stops working and the new
// one works, on Zimmer endpoints and protected routes alike, including
// handlers built before the swap.
func TestTokenRotationWithoutRestart(t *testing.T) {
	t.Parallel()
	const newToken = "zs-rotated-token-0c4d8e2a7f1b"
	h := startHarness(t, params{})
	consume := `{"user_automation_id": 7, "units": 1, "usage_type": "chat"}`

	if a := h.do("POST", h.publicURL()+"/provision", provisionBody,
		withToken(testToken)); a.status != 200 {
		t.Fatalf("provision with the first token: got %d: %s", a.status, a.body)
	}
	oldSnap := h.sc.current.Load()

	cfg2 := parseConfig(t, params{
		token:  newToken,
		appURL: h.app.srv.URL,
		ledger: h.cfg.Ledger.Path,
	})
	if err := h.sc.install(cfg2); err != nil {
		t.Fatalf("install: %v", err)
	}

	tests := []struct {
		token, target string
		want          int
	}{
		{testToken, "/usage/consume", 401},
		{newToken, "/usage/consume", 200},
		{testToken, "/private/x", 401},
		{newToken, "/private/x", 200},
	}
	for _, tt := range tests {
		a := h.do("POST", h.publicURL()+tt.target, consume, withToken(tt.token))
		if a.status != tt.want {
			t.Errorf("%s with the %s token: got %d, want %d: %s", tt.target,
				map[bool]string{true: "old", false: "new"}[tt.token == testToken],
				a.status, tt.want, a.body)
		}
	}

	// A handler built before the swap keeps its own snapshot's verifier:
	// only a request that loaded the old snapshot reaches it, and it
	// finishes under the configuration it started with.
	hd, ok := oldSnap.api.Lookup("/usage/consume")
	if !ok {
		t.Fatal("the old snapshot has no consume handler")
	}
	for _, tt := range []struct {
		token string
		want  int
	}{{testToken, 200}, {newToken, 401}} {
		req := httptest.NewRequest("POST", "/usage/consume", strings.NewReader(consume))
		req.Header.Set("X-Zimmer-Service-Token", tt.token)
		rec := httptest.NewRecorder()
		hd.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("old handler: got %d, want %d: %s", rec.Code, tt.want, rec.Body)
		}
	}
}

// TestRotatedTokenIsRedacted: a token that arrives by install must be
// masked in logs like the ones New saw.
func TestRotatedTokenIsRedacted(t *testing.T) {
	t.Parallel()
	const newToken = "zs-rotated-token-77aa13ce90"
	h := startHarness(t, params{})
	cfg2 := parseConfig(t, params{
		token: newToken, appURL: h.app.srv.URL, ledger: h.cfg.Ledger.Path,
	})
	if err := h.sc.install(cfg2); err != nil {
		t.Fatalf("install: %v", err)
	}
	h.do("GET", h.publicURL()+"/open/"+newToken, "", nil)
	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if strings.Contains(h.logs.String(), newToken) {
		t.Errorf("the rotated token is in the log:\n%s", h.logs)
	}
}

// TestAdminAPIAuth checks that the ledger admin API requires the service
// token exactly when the admin address is not loopback, while /livez and
// /readyz never do. The non-loopback address is only configured, never
// bound: the handler is served on a loopback test server.
func TestAdminAPIAuth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		admin     string
		wantNoTok int
	}{
		{"loopback", "127.0.0.1:0", http.StatusOK},
		{"localhost", "localhost:9", http.StatusOK},
		{"ipv6 loopback", "[::1]:9", http.StatusOK},
		{"all interfaces", "0.0.0.0:9", http.StatusUnauthorized},
		{"empty host", ":9", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newAdminOnly(t, tt.admin)
			srv := httptest.NewServer(h.sc.AdminHandler())
			t.Cleanup(srv.Close)

			acct := srv.URL + "/admin/ledger/accounts/7"
			if a := h.do("GET", acct, "", nil); a.status != tt.wantNoTok {
				t.Errorf("account without token: got %d, want %d: %s",
					a.status, tt.wantNoTok, a.body)
			}
			if a := h.do("GET", acct, "", withToken(testToken)); a.status != 200 {
				t.Errorf("account with token: got %d, want 200: %s", a.status, a.body)
			}
			credit := `{"user_automation_id": 7, "units": 3}`
			a := h.do("POST", srv.URL+"/admin/ledger/credit", credit, nil)
			if a.status != tt.wantNoTok {
				t.Errorf("credit without token: got %d, want %d", a.status, tt.wantNoTok)
			}
			// On loopback the token is not looked at; elsewhere a wrong one
			// is refused like a missing one.
			a = h.do("GET", srv.URL+"/admin/ledger/journal", "", withToken("bad"))
			if a.status != tt.wantNoTok {
				t.Errorf("journal with a bad token: got %d, want %d",
					a.status, tt.wantNoTok)
			}
			if a := h.do("GET", srv.URL+"/livez", "", nil); a.status != 200 {
				t.Errorf("livez: got %d, want 200", a.status)
			}
			a = h.do("GET", srv.URL+"/readyz", "", nil)
			if a.status != 503 || !strings.Contains(a.body, "starting") {
				t.Errorf("readyz before Run: got %d %s, want 503 starting", a.status, a.body)
			}
		})
	}
}

// newAdminOnly builds a sidecar whose configuration names admin as the
// admin address without opening any listener, and provisions account 7.
func newAdminOnly(t *testing.T, admin string) *harness {
	t.Helper()
	app := newFakeApp(t)
	cfg := parseConfig(t, params{admin: admin, appURL: app.srv.URL})
	logs := &syncBuffer{}
	h := &harness{t: t, cfg: cfg, app: app, logs: logs, client: &http.Client{}}
	sc, err := New(cfg, Options{Logger: newTestLogger(logs)})
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	t.Cleanup(func() { _ = sc.Close() })
	h.sc = sc
	_, err = sc.ledger.Provision(context.Background(), metering.ProvisionRequest{
		UserAutomationID: 7, UserID: 70,
	})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	return h
}

// TestHealthAnswer checks the public /health body the wiring produces.
func TestHealthAnswer(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{})
	a := h.do("GET", h.publicURL()+"/health", "", nil)
	var body map[string]any
	if err := json.Unmarshal([]byte(a.body), &body); err != nil {
		t.Fatalf("health body %q: %v", a.body, err)
	}
	if body["version"] != "9.8.7" {
		t.Errorf("got version %v, want 9.8.7 from automation.version", body["version"])
	}
	if a.header.Get("Content-Type") != "application/json" {
		t.Errorf("got Content-Type %q", a.header.Get("Content-Type"))
	}
}
