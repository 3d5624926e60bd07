package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"syscall"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/e2etest"
)

// TestGracefulShutdown sends SIGTERM to the sidecar while a slow proxied
// request and an event stream are in flight (case C7): readiness fails at
// once, new connections are refused while both still run, both complete
// normally, the process exits 0, and the ledger opens cleanly in a new
// sidecar.
func TestGracefulShutdown(t *testing.T) {
	for _, tc := range apps {
		t.Run(tc.app.Name, func(t *testing.T) {
			t.Parallel()
			s := startStack(t, tc, nil)
			ctx := testContext(t)
			testGracefulShutdown(ctx, t, s, 301)
		})
	}
}

// result is what a goroutine's request ended with.
type result struct {
	resp *e2etest.Response
	err  error
}

func testGracefulShutdown(ctx context.Context, t *testing.T, s *stack, id int64) {
	const (
		slowMS   = 2000
		events   = 8
		interval = 250 * time.Millisecond
	)
	provision(ctx, t, s, id, 10)

	// 1. A slow request, in flight once fully written. It goes on a new
	// connection: one written into an idle keep-alive connection at the
	// instant shutdown closes idle connections can be lost (an HTTP/1.1
	// race no server can close, documented), while a new connection,
	// once accepted (the accept loop is quick), is never closed before
	// its first request is read.
	written := make(chan struct{})
	slowDone := make(chan result, 1)
	fresh := e2etest.NewPlatform(s.sidecar.PublicURL(), s.token)
	go func() {
		trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) {
			close(written)
		}}
		r, err := fresh.Do(httptrace.WithClientTrace(ctx, trace),
			e2etest.Request{Method: http.MethodGet, Path: s.tc.slow(slowMS)})
		slowDone <- result{r, err}
	}()
	select {
	case <-written:
	case r := <-slowDone:
		t.Fatalf("slow request ended before it was written: %v %v", r.resp, r.err)
	}

	// 2. An event stream, in flight once its first event is in.
	st, err := openStream(ctx, s.platform, s.tc.stream(id, events, interval))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	first, err := st.next()
	if err != nil || first.name != s.tc.streamEvent {
		t.Fatalf("first event: %+v, %v", first, err)
	}
	streamDone := make(chan error, 1)
	go func() {
		rest, err := st.all()
		if err == nil && (len(rest) != events || rest[len(rest)-1].name == s.tc.streamEvent) {
			err = errors.New("stream ended early or without its final event")
		}
		streamDone <- err
	}()

	// 3. SIGTERM: readiness on the admin listener fails at once.
	if err := s.sidecar.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	admin := e2etest.NewPlatform(s.sidecar.AdminURL(), "")
	e2etest.Eventually(t, 5*time.Second, 20*time.Millisecond, func() (bool, string) {
		r, err := admin.Do(ctx, e2etest.Request{Method: http.MethodGet, Path: "/readyz"})
		if err != nil {
			return false, err.Error()
		}
		var v struct {
			Status string `json:"status"`
		}
		_ = json.Unmarshal(r.Body, &v)
		return r.Status == http.StatusServiceUnavailable && v.Status == "shutting_down",
			"readyz: " + r.String()
	})

	// 4. New connections are refused while the old ones still run.
	e2etest.Eventually(t, 5*time.Second, 20*time.Millisecond, func() (bool, string) {
		c, err := net.DialTimeout("tcp", s.sidecar.Public, time.Second)
		if err == nil {
			c.Close()
			return false, "the public listener still accepts connections"
		}
		return errors.Is(err, syscall.ECONNREFUSED), err.Error()
	})
	select {
	case r := <-slowDone:
		t.Errorf("the slow request ended (%v, %v) before new connections were refused",
			r.resp, r.err)
		slowDone <- r
	default:
	}

	// 5. Both in-flight exchanges complete normally.
	if r := <-slowDone; r.err != nil || r.resp.Status != http.StatusOK {
		t.Errorf("slow request across the shutdown: %v, %v", r.resp, r.err)
	}
	if err := <-streamDone; err != nil {
		t.Errorf("stream across the shutdown: %v", err)
	}

	// 6. A clean exit, having said so.
	code, err := s.sidecar.Wait(30 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("sidecar exit: code %d, %v", code, err)
	}
	if _, err := s.sidecar.WaitLine(0, func(l e2etest.Line) bool {
		var v struct{ Msg string }
		return json.Unmarshal([]byte(l.Text), &v) == nil && v.Msg == "drained"
	}); err != nil {
		t.Errorf("no \"drained\" log line: %v", err)
	}

	// 7. The ledger reopens in a new sidecar with the stream's charge.
	s.startSidecar(t)
	acct := e2etest.LedgerAccount(t, s.sidecar.AdminURL(), id)
	if want := 10 - s.tc.streamUnits; acct.DemoTokens != want {
		t.Errorf("reopened ledger: got %+v, want %d demo tokens", acct, want)
	}
}
