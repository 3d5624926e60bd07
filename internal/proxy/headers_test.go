package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/auth"
)

// TestLowerCaseMethodIsRouted is finding H3: "post" is POST to apps such
// as Django and Werkzeug, so it must be protected and metered as POST,
// and the app receives the method that was routed.
func TestLowerCaseMethodIsRouted(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	app := newApp(t, rec)
	ledger, state := newMemLedger(map[int64]int64{42: 10})
	_, front := newFront(t, app, Options{
		Passthrough: true,
		Auth:        fakeAuth,
		Ledger:      ledger,
		Routes: []Route{
			{Path: "/orders", Methods: []string{"POST"}, Protect: true},
			{Path: "/chat/*", Methods: []string{"POST"}, Meter: &Meter{Units: 2,
				UsageType: "chat", User: UserSource{FromHeader, "X-Tenant"}}},
		},
	})

	tests := []struct {
		name       string
		method     string
		path       string
		header     http.Header
		wantCode   int
		wantMethod string // the app's view; "" when not forwarded
		wantLeft   int64
	}{
		{"protected lower", "post", "/orders", nil, 401, "", 10},
		{"protected mixed", "pOsT", "/orders", nil, 401, "", 10},
		{"protected lower with token", "post", "/orders",
			http.Header{TokenHeader: {goodToken}}, 200, "POST", 10},
		{"other method passes through", "get", "/orders", nil, 200, "GET", 10},
		{"metered lower", "post", "/chat/x",
			http.Header{"X-Tenant": {"42"}}, 200, "POST", 8},
		{"metered lower, no user", "post", "/chat/x", nil, 400, "", 8},
		{"connect in lower case", "connect", "/x", nil, 405, "", 8},
	}
	for _, tt := range tests {
		before := rec.count()
		req := newReq(t, tt.method, front.URL+tt.path, nil)
		for k, vs := range tt.header {
			req.Header[k] = vs
		}
		code, body, _ := do(t, req)
		if code != tt.wantCode {
			t.Fatalf("%s: got %d %s, want %d", tt.name, code, body, tt.wantCode)
		}
		forwarded := rec.count() > before
		if forwarded != (tt.wantMethod != "") {
			t.Errorf("%s: forwarded %v, want %v", tt.name, forwarded, !forwarded)
		}
		if forwarded && rec.last(t).Method != tt.wantMethod {
			t.Errorf("%s: app saw method %q, want %q", tt.name, rec.last(t).Method,
				tt.wantMethod)
		}
		if got := state.balance(42); got != tt.wantLeft {
			t.Errorf("%s: balance got %d, want %d", tt.name, got, tt.wantLeft)
		}
	}
}

// TestMethodOverridesDropped: no header that asks the app to take the
// request for another method reaches it, in any spelling.
func TestMethodOverridesDropped(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	app := newApp(t, rec)
	_, front := newFront(t, app, Options{Passthrough: true})

	req := newReq(t, "GET", front.URL+"/orders", nil)
	overrides := []string{"X-HTTP-Method-Override", "x-method-override",
		"X_HTTP_Method", "X-Http-Method", "x_http_method_override"}
	for _, name := range overrides {
		req.Header[name] = []string{"POST"}
	}
	req.Header.Set("X-Method", "kept") // not an override any app reads
	if code, body, _ := do(t, req); code != 200 {
		t.Fatalf("got %d %s, want 200", code, body)
	}
	seen := rec.last(t)
	for k := range seen.Header {
		for _, name := range methodOverrideHeaders {
			if sameHeaderName(k, name) {
				t.Errorf("app received override header %q", k)
			}
		}
	}
	if seen.Header.Get("X-Method") != "kept" {
		t.Errorf("X-Method was removed; only the override names go")
	}
}

// TestUserHeaderTwins is finding M3: CGI and WSGI servers read X_Tenant
// as X-Tenant, so a second spelling is a second value (400), and the app
// only ever gets the charged id under the configured name.
func TestUserHeaderTwins(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	app := newApp(t, rec)
	ledger, state := newMemLedger(map[int64]int64{7: 10, 42: 10})
	_, front := newFront(t, app, Options{Ledger: ledger, Routes: refundRoutes()})

	tests := []struct {
		name     string
		header   map[string]string
		wantCode int
		wantUser string // the charged id the app sees; "" when not forwarded
	}{
		{"twin spellings", map[string]string{"X-Tenant": "7", "X_Tenant": "42"},
			400, ""},
		{"twin, same value", map[string]string{"X-Tenant": "7", "x_tenant": "7"},
			400, ""},
		{"underscore spelling alone", map[string]string{"X_Tenant": "42"}, 200, "42"},
		{"usual spelling", map[string]string{"x-tenant": "7"}, 200, "7"},
	}
	for _, tt := range tests {
		before := rec.count()
		req := newReq(t, "GET", front.URL+"/h/x", nil)
		for k, v := range tt.header {
			req.Header[k] = []string{v}
		}
		code, body, _ := do(t, req)
		if code != tt.wantCode {
			t.Fatalf("%s: got %d %s, want %d", tt.name, code, body, tt.wantCode)
		}
		if tt.wantUser == "" {
			if rec.count() != before {
				t.Errorf("%s: forwarded", tt.name)
			}
			continue
		}
		seen := rec.last(t)
		got := headerValues(seen.Header, "X-Tenant")
		if len(got) != 1 || got[0] != tt.wantUser || seen.Header.Get("X-Tenant") != got[0] {
			t.Errorf("%s: app saw %v, want only X-Tenant: %s", tt.name, seen.Header,
				tt.wantUser)
		}
		if seen.Header.Get(UserHeader) != tt.wantUser {
			t.Errorf("%s: %s got %q, want %q", tt.name, UserHeader,
				seen.Header.Get(UserHeader), tt.wantUser)
		}
	}
	if a, b := state.balance(7), state.balance(42); a != 8 || b != 8 {
		t.Errorf("balances: got 7:%d 42:%d, want 8 and 8", a, b)
	}
}

// TestStripAuthorizationHook: the hook sees the outbound request of every
// proxied request, protected, metered or passed through, and what it
// removes never reaches the app.
func TestStripAuthorizationHook(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	app := newApp(t, rec)
	var hosts []string // only the requests' goroutines write, one at a time
	_, front := newFront(t, app, Options{
		Passthrough: true,
		Auth:        fakeAuth,
		Ledger:      memLedger(map[int64]int64{42: 10}),
		Routes: []Route{
			{Path: "/p", Protect: true},
			{Path: "/h/*", Meter: &Meter{Units: 1, UsageType: "chat",
				User: UserSource{FromHeader, "X-Tenant"}}},
		},
		StripAuthorization: func(r *http.Request) {
			hosts = append(hosts, r.URL.Host)
			r.Header.Del("Authorization")
		},
	})
	for _, path := range []string{"/p", "/h/x", "/open"} {
		req := newReq(t, "GET", front.URL+path, nil)
		req.Header.Set(TokenHeader, goodToken)
		req.Header.Set("X-Tenant", "42")
		req.Header.Set("Authorization", "Bearer "+goodToken)
		if code, body, _ := do(t, req); code != 200 {
			t.Fatalf("%s: got %d %s, want 200", path, code, body)
		}
		if got := rec.last(t).Header.Values("Authorization"); len(got) != 0 {
			t.Errorf("%s: app received Authorization %q", path, got)
		}
	}
	appHost := strings.TrimPrefix(app.URL, "http://")
	if len(hosts) != 3 || hosts[0] != appHost || hosts[2] != appHost {
		t.Errorf("hook saw hosts %q, want the app's %q three times", hosts, appHost)
	}
}

// TestServiceBearerNotForwardedOnOpenRoutes wires the hook as the sidecar
// does, with auth.Verifier.StripServiceBearer: a Bearer service token sent
// to an open route stays with the sidecar, the app's own Bearer does not.
func TestServiceBearerNotForwardedOnOpenRoutes(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	app := newApp(t, rec)
	v, err := auth.New([]auth.Token{{Kind: auth.KindPlain, Value: goodToken}},
		auth.Options{AcceptBearer: true})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	_, front := newFront(t, app, Options{
		Passthrough:        true,
		Auth:               v.Require,
		Routes:             []Route{{Path: "/p", Protect: true}},
		StripAuthorization: v.StripServiceBearer,
	})
	tests := []struct {
		path, authz string
		want        []string
	}{
		{"/open", "Bearer " + goodToken, nil},
		{"/open", "bearer  " + goodToken, nil},
		{"/open", "Bearer app-user-token", []string{"Bearer app-user-token"}},
		{"/open", "Basic dXNlcjpwdw==", []string{"Basic dXNlcjpwdw=="}},
		{"/p", "Bearer " + goodToken, nil},
	}
	for _, tt := range tests {
		req := newReq(t, "GET", front.URL+tt.path, nil)
		req.Header.Set("Authorization", tt.authz)
		if code, body, _ := do(t, req); code != 200 {
			t.Fatalf("%s %q: got %d %s, want 200", tt.path, tt.authz, code, body)
		}
		got := rec.last(t).Header.Values("Authorization")
		if strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("%s %q: app got Authorization %q, want %q", tt.path, tt.authz,
				got, tt.want)
		}
		assertNoSecret(t, rec.last(t), goodToken)
	}
}

func TestSameHeaderName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		want bool
	}{
		{"X-Tenant", "x-tenant", true},
		{"X_Tenant", "X-Tenant", true},
		{"x_tENANT", "X-Tenant", true},
		{"X-Tenant", "X-Tenants", false},
		{"X-Tenant", "X.Tenant", false},
		{"", "", true},
		{"X-Zimmer-A", "X-Zimmer-B", false},
	}
	for _, tt := range tests {
		if got := sameHeaderName(tt.a, tt.b); got != tt.want {
			t.Errorf("sameHeaderName(%q, %q): got %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

// FuzzSameHeaderName checks the header name comparison against a plain
// definition: equal after lower-casing ASCII and writing "_" as "-".
func FuzzSameHeaderName(f *testing.F) {
	for _, p := range [][2]string{{"X-Tenant", "x_tenant"}, {"a", "B"},
		{"X-Zimmer-", "x_zimmer_"}, {"\xff", "\xdf"}, {"[", "{"}} {
		f.Add(p[0], p[1])
	}
	norm := func(s string) string {
		b := []byte(s)
		for i, c := range b {
			switch {
			case c == '_':
				b[i] = '-'
			case 'A' <= c && c <= 'Z':
				b[i] = c + 32
			}
		}
		return string(b)
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		want := norm(a) == norm(b)
		if got := sameHeaderName(a, b); got != want {
			t.Fatalf("sameHeaderName(%q, %q): got %v, want %v", a, b, got, want)
		}
		if got := hasHeaderPrefix(a, b); got != strings.HasPrefix(norm(a), norm(b)) {
			t.Fatalf("hasHeaderPrefix(%q, %q): got %v", a, b, got)
		}
	})
}
