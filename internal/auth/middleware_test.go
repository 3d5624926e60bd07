package auth

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// seen records what the protected handler received.
type seen struct {
	calls  atomic.Int32
	header atomic.Pointer[http.Header]
}

// handler answers 200 "ok" and records the request headers.
func (s *seen) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		h := r.Header.Clone()
		s.header.Store(&h)
		_, _ = io.WriteString(w, "ok")
	})
}

// decodeDetail returns the "detail" of a JSON error body.
func decodeDetail(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("body %q is not a JSON error: %v", body, err)
	}
	return e.Detail
}

func TestRequire(t *testing.T) {
	t.Parallel()
	tokens := []Token{{Kind: KindPlain, Value: tokHex}}
	tests := []struct {
		name       string
		bearer     bool
		headers    []string
		wantStatus int
		wantDetail string
		wantAuthz  []string // Authorization values the app receives
	}{
		{name: "header ok", headers: []string{HeaderName, tokHex},
			wantStatus: 200},
		{name: "header ok keeps the app's Authorization",
			headers:    []string{HeaderName, tokHex, "Authorization", "Bearer app-jwt"},
			wantStatus: 200, wantAuthz: []string{"Bearer app-jwt"}},
		{name: "missing", wantStatus: 401, wantDetail: detailMissing},
		{name: "invalid", headers: []string{HeaderName, tokNew},
			wantStatus: 401, wantDetail: detailInvalid},
		{name: "bearer off", headers: []string{"Authorization", "Bearer " + tokHex},
			wantStatus: 401, wantDetail: detailMissing},
		{name: "bearer on", bearer: true,
			headers:    []string{"Authorization", "Bearer " + tokHex},
			wantStatus: 200},
		{name: "bearer scheme any case", bearer: true,
			headers:    []string{"Authorization", "bEaReR  " + tokHex},
			wantStatus: 200},
		{name: "bearer on keeps Basic", bearer: true,
			headers: []string{"Authorization", "Bearer " + tokHex,
				"Authorization", "Basic dXNlcjpwdw=="},
			wantStatus: 200, wantAuthz: []string{"Basic dXNlcjpwdw=="}},
		{name: "bearer on with header drops stray Bearer", bearer: true,
			headers: []string{HeaderName, tokHex,
				"Authorization", "Bearer " + tokHex},
			wantStatus: 200},
		{name: "bearer wrong", bearer: true,
			headers:    []string{"Authorization", "Bearer " + tokNew},
			wantStatus: 401, wantDetail: detailInvalid},
		{name: "bearer empty", bearer: true,
			headers:    []string{"Authorization", "Bearer "},
			wantStatus: 401, wantDetail: detailMissing},
		{name: "bearer two credentials", bearer: true,
			headers: []string{"Authorization", "Bearer " + tokNew,
				"Authorization", "Bearer " + tokHex},
			wantStatus: 401, wantDetail: detailInvalid},
		{name: "basic is not bearer", bearer: true,
			headers:    []string{"Authorization", "Basic " + tokHex},
			wantStatus: 401, wantDetail: detailMissing},
		{name: "bearerish is not bearer", bearer: true,
			headers:    []string{"Authorization", "Bearerx" + tokHex},
			wantStatus: 401, wantDetail: detailMissing},
		{name: "header wins over bearer", bearer: true,
			headers: []string{HeaderName, tokNew,
				"Authorization", "Bearer " + tokHex},
			wantStatus: 401, wantDetail: detailInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v := mustNew(t, tokens, Options{AcceptBearer: tt.bearer})
			var app seen
			w := httptest.NewRecorder()
			v.Require(app.handler()).ServeHTTP(w, newRequest("192.0.2.1", tt.headers...))

			if w.Code != tt.wantStatus {
				t.Fatalf("got status %d, want %d", w.Code, tt.wantStatus)
			}
			if strings.Contains(w.Body.String(), tokHex) {
				t.Errorf("response body echoes the token")
			}
			if tt.wantStatus != http.StatusOK {
				checkRefusal(t, w, tt.wantDetail, tt.bearer)
				if app.calls.Load() != 0 {
					t.Errorf("app called for a refused request")
				}
				return
			}
			h := *app.header.Load()
			if got := h.Values(HeaderName); len(got) != 0 {
				t.Errorf("app received %s: %q", HeaderName, got)
			}
			if got := h.Values("Authorization"); !equalStrings(got, tt.wantAuthz) {
				t.Errorf("app received Authorization %q, want %q", got, tt.wantAuthz)
			}
		})
	}
}

// checkRefusal checks a 401's body and challenge.
func checkRefusal(t *testing.T, w *httptest.ResponseRecorder, detail string, bearer bool) {
	t.Helper()
	if got := decodeDetail(t, w.Body.Bytes()); got != detail {
		t.Errorf("got detail %q, want %q", got, detail)
	}
	if got := w.Header().Get("Content-Type"); got != "application/json" {
		t.Errorf("got Content-Type %q, want application/json", got)
	}
	want := []string{`X-Zimmer-Service-Token realm="zimmer"`}
	if bearer {
		want = append(want, `Bearer realm="zimmer"`)
	}
	if got := w.Header().Values("WWW-Authenticate"); !equalStrings(got, want) {
		t.Errorf("got WWW-Authenticate %q, want %q", got, want)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestStripTokenAnySpelling(t *testing.T) {
	t.Parallel()
	// Headers set by code rather than parsed may escape canonicalisation.
	h := http.Header{
		"x-zimmer-service-token": {tokHex},
		HeaderName:               {tokHex},
		"authorization":          {"Bearer " + tokHex, "Basic abc"},
		"X-Other":                {"kept"},
	}
	stripToken(h, true)
	want := http.Header{"authorization": {"Basic abc"}, "X-Other": {"kept"}}
	if len(h) != len(want) || h.Get("X-Other") != "kept" ||
		!equalStrings(h["authorization"], want["authorization"]) {
		t.Errorf("got %v, want %v", h, want)
	}
}

func TestRateLimitThroughRequire(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	lim := NewLimiter(3, 0, clock.Now)
	v := mustNew(t, []Token{{Kind: KindPlain, Value: tokHex}}, Options{Limiter: lim})
	c := instrument(v)
	var app seen
	h := v.Require(app.handler())
	serve := func(addr string, kv ...string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, newRequest(addr, kv...))
		return w
	}

	// Successes from a busy client never use up its budget.
	for range 20 {
		if w := serve("203.0.113.5", HeaderName, tokHex); w.Code != 200 {
			t.Fatalf("valid caller: got status %d, want 200", w.Code)
		}
	}

	// Missing tokens do not count; wrong ones do, whatever the spoofable
	// headers claim about the client.
	for range 5 {
		if w := serve("203.0.113.9"); w.Code != 401 {
			t.Fatalf("missing token: got status %d, want 401", w.Code)
		}
	}
	for i := range 3 {
		w := serve("203.0.113.9", HeaderName, "guess", "X-Forwarded-For",
			"10.0.0."+string(rune('1'+i)), "X-Real-Ip", "127.0.0.1")
		if w.Code != 401 {
			t.Fatalf("guess %d: got status %d, want 401", i+1, w.Code)
		}
	}

	// The next wrong or missing token is refused with 429 after the cheap
	// checks alone: every digest is still compared (C9), nothing more.
	for _, kv := range [][]string{
		{HeaderName, "guess", "X-Forwarded-For", "203.0.113.5"},
		{HeaderName, tokHex[:63]},
		nil,
	} {
		before, _ := c.snapshot()
		w := serve("203.0.113.9", kv...)
		if w.Code != http.StatusTooManyRequests {
			t.Fatalf("after 3 failures: got status %d, want 429", w.Code)
		}
		if got := decodeDetail(t, w.Body.Bytes()); got != detailRateLimited {
			t.Errorf("got detail %q, want %q", got, detailRateLimited)
		}
		if got := w.Header().Get("Retry-After"); got != "20" {
			t.Errorf("got Retry-After %q, want 20", got)
		}
		want := 1 // the one configured token
		if kv == nil {
			want = 0
		}
		if after, _ := c.snapshot(); after-before != want {
			t.Errorf("429 ran %d comparisons, want %d", after-before, want)
		}
	}

	// The right token still passes: behind an ingress every client shares
	// the address, and a stranger's guesses must not lock the platform out.
	if w := serve("203.0.113.9", HeaderName, tokHex); w.Code != 200 {
		t.Fatalf("valid token from a limited address: got status %d, want 200",
			w.Code)
	}

	// Another client is unaffected; the limited one recovers with time: a
	// wrong token is verified (401) again, not refused.
	if w := serve("203.0.113.10", HeaderName, "guess"); w.Code != 401 {
		t.Errorf("other client: got status %d, want 401", w.Code)
	}
	clock.Advance(20 * time.Second)
	if w := serve("203.0.113.9", HeaderName, "guess"); w.Code != 401 {
		t.Errorf("after 20s: got status %d, want 401", w.Code)
	}
}

// TestLimitedClientGetsNoBcrypt: a limited client's token is checked
// against the bcrypt cache but never with bcrypt itself. An uncached valid
// bcrypt token is therefore refused (the documented trade-off) until a
// request from an unlimited client has verified it.
func TestLimitedClientGetsNoBcrypt(t *testing.T) {
	t.Parallel()
	lim := NewLimiter(1, 0, newFakeClock().Now)
	v := mustNew(t, []Token{
		{Kind: KindBcrypt, Value: bcryptHash(t, tokHex)},
		{Kind: KindPlain, Value: tokNew},
	}, Options{Limiter: lim})
	c := instrument(v)
	const shared = "10.1.2.3" // every client behind one ingress

	if err := v.Check(newRequest(shared, HeaderName, "guess")); !errors.Is(
		err, ErrInvalidToken) {
		t.Fatalf("first guess: got error %v, want ErrInvalidToken", err)
	}
	steps := []struct {
		name       string
		addr       string
		token      string
		wantErr    error
		wantBcrypt int // cumulative, the guess's 1 included
	}{
		{"limited wrong token", shared, "guess2", ErrRateLimited, 1},
		{"limited uncached bcrypt token", shared, tokHex, ErrRateLimited, 1},
		{"limited plain token", shared, tokNew, nil, 1},
		{"unlimited client fills the cache", "192.0.2.7", tokHex, nil, 2},
		{"limited cached bcrypt token", shared, tokHex, nil, 2},
	}
	for _, s := range steps {
		err := v.Check(newRequest(s.addr, HeaderName, s.token))
		if !errors.Is(err, s.wantErr) || (err == nil) != (s.wantErr == nil) {
			t.Errorf("%s: got error %v, want %v", s.name, err, s.wantErr)
		}
		if _, got := c.snapshot(); got != s.wantBcrypt {
			t.Errorf("%s: got %d bcrypt calls in all, want %d", s.name, got,
				s.wantBcrypt)
		}
	}
}

func TestLimiterSurvivesVerifierSwap(t *testing.T) {
	t.Parallel()
	lim := NewLimiter(2, 0, newFakeClock().Now)
	old := mustNew(t, []Token{{Kind: KindPlain, Value: tokHex}}, Options{Limiter: lim})
	_ = old.Check(newRequest("203.0.113.9", HeaderName, "guess1"))
	_ = old.Check(newRequest("203.0.113.9", HeaderName, "guess2"))

	reloaded := mustNew(t, []Token{{Kind: KindPlain, Value: tokNew}},
		Options{Limiter: lim})
	err := reloaded.Check(newRequest("203.0.113.9", HeaderName, tokHex))
	var rl *RateLimitError
	if !errors.As(err, &rl) || !errors.Is(err, ErrRateLimited) || rl.RetryAfter <= 0 {
		t.Errorf("after reload: got error %v, want a *RateLimitError", err)
	}
	if err := reloaded.Check(newRequest("203.0.113.9", HeaderName, tokNew)); err != nil {
		t.Errorf("after reload, the new token: got error %v, want none", err)
	}
}

func TestSpoofableHeadersDoNotAuthenticate(t *testing.T) {
	t.Parallel()
	v := mustNew(t, []Token{{Kind: KindPlain, Value: tokHex}}, Options{})
	spoofs := [][]string{
		{"X-Forwarded-For", "127.0.0.1"},
		{"X-Real-Ip", "127.0.0.1"},
		{"Forwarded", "for=127.0.0.1"},
		{"User-Agent", "kube-probe/1.30"},
		{"X-Forwarded-Uri", "/health"},
		{"X-Original-Url", "/health"},
		{"X-Forwarded-Host", "localhost"},
		{"Cookie", "zimmer_service_token=" + tokHex},
		{"X-Zimmer-Service-Token-Digest", hexDigest(tokHex)},
		{"X-Service-Token", tokHex},
		{"Authorization", "Bearer " + tokHex}, // Bearer is off
		{"Proxy-Authorization", "Bearer " + tokHex},
	}
	for _, kv := range spoofs {
		for _, addr := range []string{"127.0.0.1", "::1", "192.0.2.1"} {
			var app seen
			w := httptest.NewRecorder()
			v.Require(app.handler()).ServeHTTP(w, newRequest(addr, kv...))
			if w.Code != http.StatusUnauthorized || app.calls.Load() != 0 {
				t.Errorf("%s: %s from %s: got status %d, want 401",
					kv[0], kv[1][:min(len(kv[1]), 16)], addr, w.Code)
			}
		}
	}
	// The token in the query string does not count either.
	r := newRequest("127.0.0.1")
	r.URL.RawQuery = "token=" + tokHex + "&" + HeaderName + "=" + tokHex
	if err := v.Check(r); !errors.Is(err, ErrMissingToken) {
		t.Errorf("query token: got error %v, want ErrMissingToken", err)
	}
}

// rawExchange sends head (request line and headers, no body) on a new
// connection to srv and returns the status line of the first response.
func rawExchange(t *testing.T, srv *httptest.Server, head string) string {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	// A guard against a hung test, not a speed assertion.
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatalf("write: %v", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("read status line: %v", err)
	}
	return strings.TrimRight(line, "\r\n")
}

// TestExpectContinueRefusedUnread is case C8: a refused request announcing
// a large body gets its answer without 100 Continue, and the body is never
// asked for.
func TestExpectContinueRefusedUnread(t *testing.T) {
	t.Parallel()
	lim := NewLimiter(1, 0, nil)
	v := mustNew(t, []Token{{Kind: KindPlain, Value: tokHex}}, Options{Limiter: lim})
	var read atomic.Int32
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, 4))
		read.Add(int32(n))
	})
	srv := httptest.NewServer(v.Require(app))
	t.Cleanup(srv.Close)

	head := func(extra string) string {
		return "POST /provision HTTP/1.1\r\nHost: zimmer\r\n" +
			"Content-Type: application/json\r\nContent-Length: 5242880\r\n" +
			"Expect: 100-continue\r\n" + extra + "\r\n"
	}
	tests := []struct {
		name  string
		extra string
		want  string
	}{
		{"no token", "", "HTTP/1.1 401 Unauthorized"},
		{"wrong token", "x-zimmer-service-token: nope\r\n", "HTTP/1.1 401 Unauthorized"},
		{"rate limited", "X-Zimmer-Service-Token: " + tokNew + "\r\n",
			"HTTP/1.1 429 Too Many Requests"},
	}
	for _, tt := range tests {
		if got := rawExchange(t, srv, head(tt.extra)); got != tt.want {
			t.Errorf("%s: got first line %q, want %q", tt.name, got, tt.want)
		}
	}
	if n := read.Load(); n != 0 {
		t.Errorf("app read %d body bytes of refused requests", n)
	}

	// Control: a valid token from an unlimited peer reaches the app, whose
	// first body read makes the server send 100 Continue. The lower-case
	// header name shows that names are case-insensitive on the wire.
	v2 := mustNew(t, []Token{{Kind: KindPlain, Value: tokHex}}, Options{})
	srv2 := httptest.NewServer(v2.Require(app))
	t.Cleanup(srv2.Close)
	got := rawExchange(t, srv2, head("x-zimmer-service-token: "+tokHex+"\r\n"))
	if got != "HTTP/1.1 100 Continue" {
		t.Errorf("valid token: got first line %q, want 100 Continue", got)
	}
}

func TestStripServiceBearer(t *testing.T) {
	t.Parallel()
	v := mustNew(t, []Token{{Kind: KindPlain, Value: tokHex}}, Options{})
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"service token", []string{"Bearer " + tokHex}, nil},
		{"any case and blanks", []string{" bEaReR \t" + tokHex + " "}, nil},
		{"app's own bearer", []string{"Bearer " + tokNew}, []string{"Bearer " + tokNew}},
		{"other scheme", []string{"Basic " + tokHex}, []string{"Basic " + tokHex}},
		{"mixed", []string{"Basic abc", "Bearer " + tokHex, "Bearer x"},
			[]string{"Basic abc", "Bearer x"}},
		{"none", nil, nil},
	}
	for _, tt := range tests {
		r := newRequest("192.0.2.1")
		r.Header["authorization"] = tt.in // a non-canonical spelling too
		r.Header.Set("X-Other", "kept")
		v.StripServiceBearer(r)
		if got := r.Header["authorization"]; !equalStrings(got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
		if _, ok := r.Header["authorization"]; ok && len(tt.want) == 0 {
			t.Errorf("%s: empty Authorization left behind", tt.name)
		}
		if r.Header.Get("X-Other") != "kept" {
			t.Errorf("%s: another header was removed", tt.name)
		}
	}
	var none *Verifier
	r := newRequest("192.0.2.1", "Authorization", "Bearer "+tokHex)
	none.StripServiceBearer(r)
	if len(r.Header.Values("Authorization")) != 1 {
		t.Errorf("nil verifier removed a header")
	}
}
