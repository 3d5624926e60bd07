package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/zimmer"
)

// resettingApp resets the connection of its first `resets` requests
// before answering anything, then answers 200 "ok"; it records every
// request it received.
type resettingApp struct {
	resets int
	mu     sync.Mutex
	seen   []seenRequest
}

func (a *resettingApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.seen = append(a.seen, seenRequest{Method: r.Method, Path: r.URL.Path,
		Body: string(body)})
	n := len(a.seen)
	a.mu.Unlock()
	if n > a.resets {
		_, _ = io.WriteString(w, "ok")
		return
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err) // an httptest server always allows a hijack
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // close with RST, not FIN
	}
	_ = conn.Close()
}

func (a *resettingApp) requests() []seenRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]seenRequest(nil), a.seen...)
}

func TestRetryProxiedCalls(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		method   string
		body     string
		noRetry  bool
		wantCode int
		wantHits int
	}{
		{"GET after a reset", "GET", "", false, http.StatusOK, 2},
		{"HEAD after a reset", "HEAD", "", false, http.StatusOK, 2},
		{"DELETE after a reset", "DELETE", "", false, http.StatusOK, 2},
		{"POST is not retried", "POST", "", false, http.StatusBadGateway, 1},
		{"PATCH is not retried", "PATCH", "", false, http.StatusBadGateway, 1},
		// A client's body is streamed to the app, so it cannot be replayed.
		{"PUT with a body is not retried", "PUT", "data", false,
			http.StatusBadGateway, 1},
		{"retry turned off", "GET", "", true, http.StatusBadGateway, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			app := &resettingApp{resets: 1}
			b := newBreaker(t, BreakerOptions{ConsecutiveFailures: 2, OpenFor: time.Hour})
			p, front := newFront(t, newApp(t, app), Options{Breaker: b, Passthrough: true,
				NoRetry: tt.noRetry})
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			code, _, _ := do(t, newReq(t, tt.method, front.URL+"/x", body))
			if code != tt.wantCode {
				t.Errorf("got %d, want %d", code, tt.wantCode)
			}
			if got := len(app.requests()); got != tt.wantHits {
				t.Errorf("the app saw %d requests, want %d", got, tt.wantHits)
			}
			// A call and its retry count once: one failure does not open
			// a breaker that needs two, and a retried success is clean.
			if got := p.BreakerState(); got != BreakerClosed {
				t.Errorf("breaker %s, want closed", got)
			}
		})
	}
}

func TestRetryMeteredCallChargedOnce(t *testing.T) {
	t.Parallel()
	app := &resettingApp{resets: 1}
	var counts countingLedger
	_, front := newFront(t, newApp(t, app), Options{Ledger: counts.ledger(),
		Routes: refundRoutes()})
	code, body := sendMetered(t, front.URL, "retry-key")
	if code != http.StatusOK || body != "ok" {
		t.Fatalf("got %d %q, want the app's 200 ok", code, body)
	}
	if got := len(app.requests()); got != 2 {
		t.Errorf("the app saw %d requests, want 2", got)
	}
	if c, r := counts.consumes.Load(), counts.refunds.Load(); c != 1 || r != 0 {
		t.Errorf("%d charges, %d refunds; want 1 and 0", c, r)
	}
}

func TestRetryHookReplaysBody(t *testing.T) {
	t.Parallel()
	tests := []struct {
		method   string
		wantHits int
	}{
		{"PUT", 2},  // idempotent, body rendered from a template: replayed
		{"POST", 1}, // not idempotent
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			t.Parallel()
			app := &resettingApp{resets: 1}
			srv := newApp(t, app)
			p, err := New(Options{AppURL: srv.URL})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			t.Cleanup(func() { _ = p.Close() })
			h, err := p.NewProvisionHook(ProvisionOptions{Call: Call{
				Method: tt.method, Path: "/t/{user_automation_id}",
				Body: map[string]any{"owner": "{user_id}"}}})
			if err != nil {
				t.Fatalf("NewProvisionHook: %v", err)
			}
			_, err = h.Provision(context.Background(),
				zimmer.ProvisionCall{UserAutomationID: 7, UserID: 42})
			if (err == nil) != (tt.wantHits == 2) {
				t.Errorf("Provision: got %v", err)
			}
			seen := app.requests()
			if len(seen) != tt.wantHits {
				t.Fatalf("the app saw %d requests, want %d", len(seen), tt.wantHits)
			}
			for i, r := range seen {
				if r.Body != `{"owner":42}` {
					t.Errorf("request %d: body %q, want the whole template", i, r.Body)
				}
			}
		})
	}
}

// scriptedTransport answers RoundTrip from a list of errors (nil: a 200),
// one per call, and records the bodies it was sent.
type scriptedTransport struct {
	mu     sync.Mutex
	errs   []error
	bodies []string
}

func (s *scriptedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	body := ""
	if req.Body != nil {
		b, _ := io.ReadAll(req.Body)
		_ = req.Body.Close()
		body = string(b)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.bodies)
	s.bodies = append(s.bodies, body)
	if n < len(s.errs) && s.errs[n] != nil {
		return nil, s.errs[n]
	}
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody,
		Request: req}, nil
}

func TestRetryErrors(t *testing.T) {
	t.Parallel()
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	timeout := fmt.Errorf("round trip: %w", context.DeadlineExceeded)
	tests := []struct {
		name      string
		errs      []error
		wantErr   bool
		wantCalls int
	}{
		{"refused then answered", []error{dial}, false, 2},
		{"reset then answered", []error{reset}, false, 2},
		{"closed then answered", []error{io.EOF}, false, 2},
		{"at most one retry", []error{dial, dial}, true, 2},
		{"a timeout is not retried", []error{timeout}, true, 1},
		{"other errors are not retried", []error{errors.New("tls")}, true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			base := &scriptedTransport{errs: tt.errs}
			tr := &appTransport{base: base, retry: true, delay: time.Millisecond}
			req, err := http.NewRequest("PUT", "http://app/x", strings.NewReader("b"))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := tr.RoundTrip(req)
			if (err != nil) != tt.wantErr {
				t.Errorf("got error %v, want error %v", err, tt.wantErr)
			}
			if resp != nil {
				resp.Body.Close()
			}
			if len(base.bodies) != tt.wantCalls {
				t.Errorf("sent %d times, want %d", len(base.bodies), tt.wantCalls)
			}
			for i, b := range base.bodies {
				if b != "b" {
					t.Errorf("attempt %d sent body %q, want %q", i, b, "b")
				}
			}
		})
	}
}

func TestRetryStopsWithTheClient(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	base := &scriptedTransport{errs: []error{dial}}
	tr := &appTransport{base: base, retry: true, delay: time.Hour}
	req, err := http.NewRequestWithContext(ctx, "GET", "http://app/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	go cancel() // while the retry waits
	if _, err := tr.RoundTrip(req); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("got %v, want the first attempt's error", err)
	}
	if len(base.bodies) != 1 {
		t.Errorf("sent %d times, want 1", len(base.bodies))
	}
}
