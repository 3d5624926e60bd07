package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
)

const goodToken = "planted-service-token-5f1e"

// seenRequest is what the app received.
type seenRequest struct {
	Method, Path, RawPath, RawQuery, Host string
	Header                                http.Header
	Body                                  string
}

// recorder is an app that records each request and answers 200 JSON.
type recorder struct {
	mu   sync.Mutex
	reqs []seenRequest
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.record(r)
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"app": "ok"})
}

// record keeps r, its body read in full.
func (rec *recorder) record(r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	rec.reqs = append(rec.reqs, seenRequest{
		Method: r.Method, Path: r.URL.Path, RawPath: r.URL.RawPath,
		RawQuery: r.URL.RawQuery, Host: r.Host, Header: r.Header.Clone(),
		Body: string(body),
	})
	rec.mu.Unlock()
}

// last returns the last request the app saw.
func (rec *recorder) last(t *testing.T) seenRequest {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) == 0 {
		t.Fatal("the app saw no request")
	}
	return rec.reqs[len(rec.reqs)-1]
}

// count returns how many requests the app saw.
func (rec *recorder) count() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.reqs)
}

// newApp starts an app server and closes it at cleanup.
func newApp(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	app := httptest.NewServer(h)
	t.Cleanup(app.Close)
	return app
}

// newFront builds a Proxy to app with opts and serves it.
func newFront(t *testing.T, app *httptest.Server, opts Options) (*Proxy, *httptest.Server) {
	t.Helper()
	if opts.AppURL == "" {
		opts.AppURL = app.URL
	}
	p, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	front := httptest.NewServer(p)
	t.Cleanup(func() {
		front.Close()
		_ = p.Close()
	})
	return p, front
}

// fakeAuth accepts goodToken in TokenHeader. It deliberately leaves the
// header in place, so the tests show the proxy removes it on its own.
func fakeAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(TokenHeader) != goodToken {
			httpx.Error(w, http.StatusUnauthorized, "Invalid service token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// do sends a request built by the caller and returns status and body.
func do(t *testing.T, req *http.Request) (int, string, http.Header) {
	t.Helper()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	return resp.StatusCode, string(body), resp.Header
}

func newReq(t *testing.T, method, rawURL string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, body)
	if err != nil {
		t.Fatalf("NewRequest: %v", err)
	}
	return req
}

// ctxIDKey carries a request id in tests.
type ctxIDKey struct{}

func ctxRequestID(ctx context.Context) string {
	id, _ := ctx.Value(ctxIDKey{}).(string)
	return id
}

// withRequestID plays the logging middleware: it puts an id in the ctx.
func withRequestID(id string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := context.WithValue(r.Context(), ctxIDKey{}, id)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func TestRewriteIgnoresClientForwarding(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	app := newApp(t, rec)
	_, front := newFront(t, app, Options{Passthrough: true})

	req := newReq(t, "GET", front.URL+"/anything?q=1", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("Forwarded", "for=203.0.113.9;host=evil;proto=https")
	req.Header.Set("X-Forwarded-Host", "evil.example")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Real-Ip", "203.0.113.9")
	req.Header.Set("X-Request-Id", "client-id-1")
	req.Header.Set(UserHeader, "999")
	req.Header.Set(TokenHeader, goodToken)
	req.Header["x_zimmer_service_token"] = []string{goodToken}
	req.Header["X-ZIMMER-SERVICE-TOKEN-2"] = []string{goodToken}
	code, _, _ := do(t, req)
	if code != http.StatusOK {
		t.Fatalf("status: got %d, want 200", code)
	}

	got := rec.last(t)
	appHost := strings.TrimPrefix(app.URL, "http://")
	frontHost := strings.TrimPrefix(front.URL, "http://")
	checks := []struct{ name, got, want string }{
		{"Host", got.Host, appHost},
		{"path", got.Path, "/anything"},
		{"query", got.RawQuery, "q=1"},
		{"X-Forwarded-For", got.Header.Get("X-Forwarded-For"), "127.0.0.1"},
		{"X-Forwarded-Host", got.Header.Get("X-Forwarded-Host"), frontHost},
		{"X-Forwarded-Proto", got.Header.Get("X-Forwarded-Proto"), "http"},
		{"Forwarded", got.Header.Get("Forwarded"), ""},
		{"X-Real-Ip", got.Header.Get("X-Real-Ip"), ""},
		{"X-Request-Id", got.Header.Get("X-Request-Id"), "client-id-1"},
		{UserHeader, got.Header.Get(UserHeader), ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
	assertNoSecret(t, got, goodToken)
}

// assertNoSecret fails when secret appears in any header name or value
// the app received, or in its body.
func assertNoSecret(t *testing.T, got seenRequest, secret string) {
	t.Helper()
	for k, vs := range got.Header {
		for _, v := range vs {
			if strings.Contains(v, secret) {
				t.Errorf("the app received the secret in header %s", k)
			}
		}
		if containsFold(strings.ReplaceAll(k, "_", "-"), "x-zimmer-service") {
			t.Errorf("the app received header %s", k)
		}
	}
	if strings.Contains(got.Body, secret) || strings.Contains(got.RawQuery, secret) {
		t.Error("the app received the secret in the body or query")
	}
}

func TestTokenNeverReachesApp(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	app := newApp(t, rec)
	_, front := newFront(t, app, Options{
		Passthrough: true,
		Auth:        fakeAuth,
		Routes:      []Route{{Path: "/private/*", Protect: true}},
	})
	for _, p := range []string{"/private/x", "/public/x"} {
		req := newReq(t, "POST", front.URL+p, strings.NewReader(`{"a":1}`))
		req.Header.Set(TokenHeader, goodToken)
		if code, body, _ := do(t, req); code != http.StatusOK {
			t.Fatalf("%s: got %d %s, want 200", p, code, body)
		}
		assertNoSecret(t, rec.last(t), goodToken)
	}
}

func TestConnectionHeaderCannotDropProxyHeaders(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	app := newApp(t, rec)
	ledger := memLedger(map[int64]int64{42: 10})
	p, err := New(Options{
		AppURL:    app.URL,
		Ledger:    ledger,
		RequestID: ctxRequestID,
		Routes: []Route{{Path: "/chat/*", Meter: &Meter{Units: 1,
			UsageType: "chat", User: UserSource{FromHeader, "X-Tenant"}}}},
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	front := httptest.NewServer(withRequestID("rid-7", p))
	t.Cleanup(front.Close)

	req := newReq(t, "GET", front.URL+"/chat/x", nil)
	req.Header.Set("Connection", "keep-alive, X-Forwarded-For, "+
		"X-Zimmer-User-Automation-Id, X-Request-Id, X-Forwarded-Host, X-Tenant")
	req.Header.Set("X-Tenant", "42")
	if code, body, _ := do(t, req); code != http.StatusOK {
		t.Fatalf("status: got %d %s, want 200", code, body)
	}
	got := rec.last(t)
	for name, want := range map[string]string{
		"X-Forwarded-For":   "127.0.0.1",
		"X-Forwarded-Host":  strings.TrimPrefix(front.URL, "http://"),
		UserHeader:          "42",
		RemainingDemoHeader: "9",
		RequestIDHeader:     "rid-7",
	} {
		if v := got.Header.Get(name); v != want {
			t.Errorf("%s: got %q, want %q", name, v, want)
		}
	}
}

func TestRoutesOnCleanedPath(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	app := newApp(t, rec)
	_, front := newFront(t, app, Options{
		Passthrough: true,
		Auth:        fakeAuth,
		Routes: []Route{
			{Path: "/public/*"},
			{Path: "/secret", Protect: true},
			{Path: "/b", Protect: true},
		},
	})
	tests := []struct {
		name     string
		path     string
		token    bool
		header   map[string]string
		wantCode int
		wantPath string // the path the app sees, "" when it sees nothing
	}{
		{"encoded slash climbs", "/public%2F..%2Fsecret", false, nil, 401, ""},
		{"encoded slash with token", "/public%2F..%2Fsecret", true, nil, 200, "/secret"},
		{"dot segments", "/a/../b", false, nil, 401, ""},
		{"dot segments with token", "/a/../b", true, nil, 200, "/b"},
		{"trailing slash protected", "/secret/", false, nil, 401, ""},
		{"trailing slash kept", "/secret/", true, nil, 200, "/secret/"},
		{"double slash", "//secret", false, nil, 401, ""},
		{"spoofed forwarded uri", "/secret", false,
			map[string]string{"X-Forwarded-Uri": "/public/x",
				"X-Original-Url": "/public/x", "User-Agent": "kube-probe/1.30",
				"X-Forwarded-For": "127.0.0.1"}, 401, ""},
		{"public", "/public/x", false, nil, 200, "/public/x"},
		{"public encoded slash is a slash", "/public/a%2Fb", false, nil, 200,
			"/public/a/b"},
		{"encoded other chars kept", "/public/a%20b%3Fc", false, nil, 200,
			"/public/a b?c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := rec.count()
			req := newReq(t, "GET", front.URL+tt.path, nil)
			if tt.token {
				req.Header.Set(TokenHeader, goodToken)
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			code, body, _ := do(t, req)
			if code != tt.wantCode {
				t.Fatalf("status: got %d %s, want %d", code, body, tt.wantCode)
			}
			if tt.wantPath == "" {
				if rec.count() != before {
					t.Fatalf("the app saw %+v, want nothing", rec.last(t))
				}
				return
			}
			got := rec.last(t)
			if got.Path != tt.wantPath {
				t.Errorf("app path: got %q, want %q", got.Path, tt.wantPath)
			}
		})
	}
}

func TestPassthroughOff(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	app := newApp(t, rec)
	p, front := newFront(t, app, Options{
		Routes: []Route{{Path: "/api/*", Methods: []string{"POST"}}},
	})
	code, body, hdr := do(t, newReq(t, "GET", front.URL+"/other", nil))
	if code != http.StatusNotFound || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("unrouted: got %d %q %s, want 404 JSON", code, hdr.Get("Content-Type"), body)
	}
	if code, _, _ := do(t, newReq(t, "GET", front.URL+"/api/x", nil)); code != 404 {
		t.Fatalf("wrong method: got %d, want 404", code)
	}
	if code, _, _ := do(t, newReq(t, "POST", front.URL+"/api/x", nil)); code != 200 {
		t.Fatalf("routed: got %d, want 200", code)
	}
	w := httptest.NewRecorder()
	p.ServeHTTP(w, httptest.NewRequest("CONNECT", "/api/x", nil))
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("CONNECT: got %d, want 405", w.Code)
	}
	if n := rec.count(); n != 1 {
		t.Errorf("the app saw %d requests, want 1", n)
	}
}

func TestSSEFirstEventNotHeldBack(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	app := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release: // the client has read the first event
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "data: second\n\n")
	}))
	_, front := newFront(t, app, Options{Passthrough: true})

	// The deadline only turns a regression (the proxy holding the first
	// event until the app finishes) into a failure instead of a hang.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := newReq(t, "GET", front.URL+"/events", nil).WithContext(ctx)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("first line: got %q, %v; want the first event before the app ends",
			line, err)
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "\ndata: second\n\n" {
		t.Fatalf("rest: got %q, %v", rest, err)
	}
}

// echoUpgrade answers an Upgrade: echo-test handshake and echoes bytes
// over the hijacked connection.
func echoUpgrade(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") ||
		r.Header.Get(TokenHeader) != "" {
		http.Error(w, "want a websocket upgrade", http.StatusBadRequest)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\n"+
		"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	if brw.Flush() != nil {
		return
	}
	_, _ = io.Copy(conn, brw)
}

func TestWebSocketUpgradePassesThrough(t *testing.T) {
	t.Parallel()
	app := newApp(t, http.HandlerFunc(echoUpgrade))
	_, front := newFront(t, app, Options{
		Auth:   fakeAuth,
		Routes: []Route{{Path: "/ws", Protect: true}},
	})
	conn, err := net.Dial("tcp", strings.TrimPrefix(front.URL, "http://"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second)) // hang guard
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: front\r\n"+
		"Connection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"+
		"%s: %s\r\n\r\n", TokenHeader, goodToken)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read handshake: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: got %d, want 101", resp.StatusCode)
	}
	for _, msg := range []string{"ping", "second message"} {
		if _, err := io.WriteString(conn, msg); err != nil {
			t.Fatalf("write: %v", err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo: got %q, %v; want %q", buf, err, msg)
		}
	}
}

// closedURL returns the URL of a listener that is already closed.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	u := "http://" + ln.Addr().String()
	_ = ln.Close()
	return u
}

// errorSink collects OnError causes.
type errorSink struct {
	mu   sync.Mutex
	errs []error
}

func (s *errorSink) on(_ *http.Request, err error) {
	s.mu.Lock()
	s.errs = append(s.errs, err)
	s.mu.Unlock()
}

func (s *errorSink) get() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.errs...)
}

func TestErrorHandler(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	slow := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	expired := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithDeadline(r.Context(), time.Unix(0, 0))
			defer cancel()
			h.ServeHTTP(w, r.WithContext(ctx))
		})
	}
	tests := []struct {
		name       string
		appURL     string
		headerWait time.Duration
		wrap       func(http.Handler) http.Handler
		wantCode   int
		wantDetail string
		hidden     string // a cause the client must not see
	}{
		{"refused", closedURL(t), 0, nil, 502, "App unavailable", "refused"},
		{"header timeout", slow.URL, 20 * time.Millisecond, nil, 504,
			"App timed out", "awaiting"},
		{"ctx deadline", slow.URL, 0, expired, 504, "App timed out", "deadline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &errorSink{}
			p, err := New(Options{AppURL: tt.appURL, Passthrough: true,
				ResponseHeaderTimeout: tt.headerWait, OnError: sink.on})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			var h http.Handler = p
			if tt.wrap != nil {
				h = tt.wrap(h)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest("GET", "/x", nil))
			var body struct{ Detail string }
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("answer is not JSON: %q", w.Body.String())
			}
			if w.Code != tt.wantCode || body.Detail != tt.wantDetail {
				t.Errorf("got %d %q, want %d %q", w.Code, body.Detail,
					tt.wantCode, tt.wantDetail)
			}
			if containsFold(w.Body.String(), tt.hidden) {
				t.Errorf("answer %q shows the cause", w.Body.String())
			}
			errs := sink.get()
			if len(errs) != 1 || !containsFold(errs[0].Error(), tt.hidden) {
				t.Errorf("OnError got %v, want one cause mentioning %q", errs, tt.hidden)
			}
		})
	}
}

func TestBodyLimits(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	app := newApp(t, rec)
	_, front := newFront(t, app, Options{
		Auth:    fakeAuth,
		MaxBody: 1024,
		Routes:  []Route{{Path: "/p", Protect: true}},
	})
	host := strings.TrimPrefix(front.URL, "http://")

	// C8: no 100 Continue and no body read before the refusal.
	for _, tt := range []struct {
		name, token, length string
		want                int
	}{
		{"no token", "", "100", 401},
		{"too big", goodToken, "5000000", 413},
	} {
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second)) // hang guard
		fmt.Fprintf(conn, "POST /p HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"+
			"Content-Length: %s\r\n%s: %s\r\n\r\n", tt.length, TokenHeader, tt.token)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		conn.Close()
		if err != nil {
			t.Fatalf("%s: read: %v", tt.name, err)
		}
		if resp.StatusCode != tt.want {
			t.Errorf("%s: got %d, want %d (and no 100 first)", tt.name,
				resp.StatusCode, tt.want)
		}
	}

	// A chunked body over the limit is cut off while it streams.
	req := newReq(t, "POST", front.URL+"/p",
		io.MultiReader(strings.NewReader(strings.Repeat("x", 4096))))
	req.ContentLength = -1
	req.Header.Set(TokenHeader, goodToken)
	if code, body, _ := do(t, req); code != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked over limit: got %d %s, want 413", code, body)
	}

	req = newReq(t, "POST", front.URL+"/p", strings.NewReader("small"))
	req.Header.Set(TokenHeader, goodToken)
	if code, _, _ := do(t, req); code != 200 || rec.last(t).Body != "small" {
		t.Errorf("small body: got %d, app body %q", code, rec.last(t).Body)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	meter := &Meter{Units: 1, UsageType: "x", User: UserSource{FromHeader, "X"}}
	bad := []Options{
		{AppURL: "ftp://127.0.0.1"},
		{AppURL: "http://"},
		{AppURL: "http://u:p@127.0.0.1"},
		{AppURL: "http://127.0.0.1/?x=1"},
		{AppURL: "http://127.0.0.1", Routes: []Route{{Path: "/a", Protect: true}}},
		{AppURL: "http://127.0.0.1", Routes: []Route{{Path: "/a", Meter: meter}}},
		{AppURL: "http://127.0.0.1", Routes: []Route{{Path: "a"}}},
	}
	for _, o := range bad {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v): got nil error, want one", o)
		}
	}
	p, err := New(Options{AppURL: "http://127.0.0.1:1/base"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	tr := p.Transport()
	if tr.MaxIdleConnsPerHost != DefaultMaxIdleConns || tr.Proxy != nil ||
		tr.ResponseHeaderTimeout != DefaultResponseHeaderTimeout {
		t.Errorf("transport not tuned: per host %d, proxy set %v, header timeout %v",
			tr.MaxIdleConnsPerHost, tr.Proxy != nil, tr.ResponseHeaderTimeout)
	}
	if tr == http.DefaultTransport {
		t.Error("the proxy uses http.DefaultTransport")
	}
}

func TestAppBasePathPrefixes(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	app := newApp(t, rec)
	_, front := newFront(t, app, Options{AppURL: app.URL + "/base/", Passthrough: true})
	if code, _, _ := do(t, newReq(t, "GET", front.URL+"/x/y", nil)); code != 200 {
		t.Fatalf("status: got %d, want 200", code)
	}
	if got := rec.last(t).Path; got != "/base/x/y" {
		t.Errorf("app path: got %q, want /base/x/y", got)
	}
}

func TestBufferPool(t *testing.T) {
	t.Parallel()
	bp := newBufferPool()
	b := bp.Get()
	if len(b) != copyBufSize {
		t.Fatalf("Get: got %d bytes, want %d", len(b), copyBufSize)
	}
	bp.Put(b)
	bp.Put(make([]byte, 10)) // dropped, not returned later
	for range 3 {
		if got := bp.Get(); len(got) != copyBufSize {
			t.Fatalf("Get after Put: got %d bytes, want %d", len(got), copyBufSize)
		}
	}
}
