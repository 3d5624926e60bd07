package egress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/outbox"
)

// An upstream that resets mid-stream: the app keeps what it got, nothing
// is retried (bytes went out), one record with upstream_error, charged
// at the reservation.
func TestUpstreamResetMidStream(t *testing.T) {
	t.Parallel()
	up, seen := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ seenRequest) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"+
			"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(sseChunk), sseChunk)
		_ = brw.Flush()
	})
	budget := newBudget(t, map[int64]int64{9: 100000})
	e := newEnv(t, up.URL, 2, func(o *Options) { o.Budget = budget })
	resp, _ := e.openStream(streamBody, http.Header{DefaultUserHeader: {"9"}})
	got, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Errorf("the app's answer ended cleanly; want it cut")
	}
	if string(got) != sseChunk {
		t.Errorf("app got %q, want the first event", got)
	}
	e.wait()
	if n := len(seen.all()); n != 1 {
		t.Errorf("upstream got %d requests, want 1 (no retry once bytes went out)", n)
	}
	rec := e.sink.only(t)
	if rec.Exit != outbox.ExitUpstreamError || rec.Success || rec.UsageKnown {
		t.Errorf("record %+v: want upstream_error without usage", rec)
	}
	if h := budget.hold(rec.ID); h.settles != 1 || h.settled != h.reserved ||
		rec.Units != h.reserved {
		t.Errorf("hold %+v, record units %d: want settled at the reservation", h, rec.Units)
	}
}

func TestCallTimeout(t *testing.T) {
	t.Parallel()
	t.Run("before the answer", func(t *testing.T) {
		t.Parallel()
		up, seen := newUpstream(t, func(_ http.ResponseWriter, r *http.Request, _ seenRequest) {
			<-r.Context().Done()
		})
		budget := newBudget(t, map[int64]int64{9: 100000})
		e := newEnv(t, up.URL, 2, func(o *Options) {
			o.CallTimeout = 100 * time.Millisecond
			o.Budget = budget
		})
		resp, body := e.do("POST", "/v1/chat/completions", chatBody,
			http.Header{DefaultUserHeader: {"9"}})
		if resp.StatusCode != 504 || decodeError(t, body).Error.Code != "upstream_timeout" {
			t.Fatalf("got %d %s, want 504 upstream_timeout", resp.StatusCode, body)
		}
		e.wait()
		if n := len(seen.all()); n != 1 {
			t.Errorf("upstream got %d requests, want 1 (no time left to retry)", n)
		}
		rec := e.sink.only(t)
		if rec.Exit != outbox.ExitTimeout || rec.Success {
			t.Errorf("record %+v: want timeout", rec)
		}
		if h := budget.hold(rec.ID); h.releases != 1 || rec.Units != 0 {
			t.Errorf("hold %+v: want released", h)
		}
	})
	t.Run("mid-stream", func(t *testing.T) {
		t.Parallel()
		up, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
			startStream(w)
			_, _ = io.WriteString(w, sseChunk)
			flush(w)
			<-r.Context().Done()
		})
		e := newEnv(t, up.URL, 1, func(o *Options) { o.CallTimeout = 200 * time.Millisecond })
		resp, _ := e.openStream(streamBody, nil)
		got, _ := io.ReadAll(resp.Body)
		if string(got) != sseChunk {
			t.Errorf("app got %q, want the first event", got)
		}
		e.wait()
		if rec := e.sink.only(t); rec.Exit != outbox.ExitTimeout || rec.Success {
			t.Errorf("record %+v: want timeout", rec)
		}
	})
}

func TestBudget(t *testing.T) {
	t.Parallel()
	up, seen := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ seenRequest) {
		writeJSONAnswer(w, 200, chatAnswer(30, 45)) // 75 tokens
	})
	budget := newBudget(t, map[int64]int64{1: 1000, 2: 5})
	e := newEnv(t, up.URL, 1, func(o *Options) {
		o.Budget = budget
		o.TokensPerUnit = 10
	})
	capped := `{"model":"m","max_tokens":100,"n":2,"messages":[]}` // 200 + prompt

	t.Run("settled to the usage", func(t *testing.T) {
		resp, _ := e.do("POST", "/v1/chat/completions", capped,
			http.Header{DefaultUserHeader: {"1"}})
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		e.wait()
		rec := e.sink.records()[len(e.sink.records())-1]
		h := budget.hold(rec.ID)
		wantReserved := (int64(len(capped)+3)/4 + 200 + 9) / 10
		if h.reserved != wantReserved || h.settled != 8 || h.settles != 1 || rec.Units != 8 {
			t.Errorf("hold %+v, record units %d: want %d reserved, 8 settled (75 tokens)",
				h, rec.Units, wantReserved)
		}
		if got := budget.balance(1); got != 1000-8 {
			t.Errorf("balance %d, want %d", got, 1000-8)
		}
	})

	refusals := []struct {
		name     string
		user     []string
		status   int
		wantCode string
	}{
		{"balance too low", []string{"2"}, 402, "budget_exceeded"},
		{"unknown user", []string{"3"}, 402, "unknown_user"},
		{"not a number", []string{"abc"}, 400, "invalid_user"},
		{"zero", []string{"0"}, 400, "invalid_user"},
		{"twice", []string{"1", "2"}, 400, "invalid_user"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			before := len(seen.all())
			resp, body := e.do("POST", "/v1/chat/completions", capped,
				http.Header{DefaultUserHeader: tt.user})
			if resp.StatusCode != tt.status || decodeError(t, body).Error.Code != tt.wantCode {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, body, tt.status, tt.wantCode)
			}
			if len(seen.all()) != before {
				t.Errorf("the upstream was called")
			}
		})
	}
	if got := budget.balance(2); got != 5 {
		t.Errorf("balance of user 2 is %d, want 5 (refused, untouched)", got)
	}

	t.Run("GET: not reserved, not charged", func(t *testing.T) {
		resp, _ := e.do("GET", "/v1/models", "", http.Header{DefaultUserHeader: {"2"}})
		if resp.StatusCode != 200 {
			t.Fatalf("status %d, want the upstream's answer", resp.StatusCode)
		}
		e.wait()
		recs := e.sink.records()
		if rec := recs[len(recs)-1]; rec.UserAutomationID != 2 || rec.Units != 0 ||
			budget.hold(rec.ID) != (hold{}) {
			t.Errorf("record %+v: want user 2, no units, no hold", rec)
		}
	})

	t.Run("no user: uncharged", func(t *testing.T) {
		resp, _ := e.do("POST", "/v1/chat/completions", capped, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		e.wait()
		recs := e.sink.records()
		if rec := recs[len(recs)-1]; rec.UserAutomationID != 0 || rec.Units != 0 {
			t.Errorf("record %+v: want no user, no units", rec)
		}
	})
	e.wait()
	if n := len(e.sink.records()); n != 3 {
		t.Errorf("%d records, want 3 (refused calls have none)", n)
	}
}

func TestBudgetRequiredUserAndFailures(t *testing.T) {
	t.Parallel()
	up, seen := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ seenRequest) {
		writeJSONAnswer(w, 200, chatAnswer(1, 1))
	})
	budget := newBudget(t, map[int64]int64{1: 1 << 40})
	e := newEnv(t, up.URL, 1, func(o *Options) {
		o.Budget = budget
		o.RequireUser = true
	})
	resp, body := e.do("POST", "/v1/chat/completions", chatBody, nil)
	if resp.StatusCode != 400 || decodeError(t, body).Error.Code != "user_required" {
		t.Fatalf("got %d %s, want 400 user_required", resp.StatusCode, body)
	}

	budget.mu.Lock()
	budget.err = errors.New("ledger down")
	budget.mu.Unlock()
	resp, body = e.do("POST", "/v1/chat/completions", chatBody,
		http.Header{DefaultUserHeader: {"1"}})
	if resp.StatusCode != 503 || decodeError(t, body).Error.Code != "budget_unavailable" ||
		resp.Header.Get("Retry-After") == "" {
		t.Fatalf("got %d %s, want 503 budget_unavailable with Retry-After", resp.StatusCode, body)
	}
	if strings.Contains(body, "ledger down") {
		t.Errorf("the cause reached the app: %s", body)
	}
	e.wait()
	if len(seen.all()) != 0 || len(e.sink.records()) != 0 {
		t.Errorf("refused calls reached the upstream or the sink")
	}
}

func TestSinkFullRefusesBeforeUpstream(t *testing.T) {
	t.Parallel()
	up, seen := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ seenRequest) {
		writeJSONAnswer(w, 200, chatAnswer(1, 1))
	})
	budget := newBudget(t, map[int64]int64{1: 1000000})
	e := newEnv(t, up.URL, 1, func(o *Options) { o.Budget = budget })
	e.sink.setFull(true)
	resp, body := e.do("POST", "/v1/chat/completions", chatBody,
		http.Header{DefaultUserHeader: {"1"}})
	if resp.StatusCode != 503 || decodeError(t, body).Error.Code != "usage_backlog_full" {
		t.Fatalf("got %d %s, want 503 usage_backlog_full", resp.StatusCode, body)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Errorf("no Retry-After")
	}
	e.wait()
	if len(seen.all()) != 0 || budget.balance(1) != 1000000 {
		t.Errorf("a refused call reached the upstream or the budget")
	}
	calls, _, _, _ := e.metrics.snapshot()
	if calls[RefusedBacklog+"/503"] != 1 {
		t.Errorf("metrics %v, want one backlog_full/503", calls)
	}
}

// An Enqueue failure is logged and counted, secret-free.
func TestEnqueueFailureCounted(t *testing.T) {
	t.Parallel()
	up, _ := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ seenRequest) {
		writeJSONAnswer(w, 200, chatAnswer(1, 1))
	})
	e := newEnv(t, up.URL, 1, nil)
	e.sink.err = errors.New("outbox full")
	if resp, _ := e.do("POST", "/v1/chat/completions", chatBody, nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	e.wait()
	if _, _, _, lost := e.metrics.snapshot(); lost != 1 {
		t.Errorf("lost records %d, want 1", lost)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "usage record lost") || !strings.Contains(logs, "outbox full") {
		t.Errorf("logs do not report the lost record:\n%s", logs)
	}
}

func TestRequestBodyLimits(t *testing.T) {
	t.Parallel()
	up, seen := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ seenRequest) {
		writeJSONAnswer(w, 200, chatAnswer(1, 1))
	})
	e := newEnv(t, up.URL, 1, func(o *Options) { o.MaxRequestBytes = 100 })
	big := `{"model":"m","messages":"` + strings.Repeat("x", 200) + `"}`
	resp, body := e.do("POST", "/v1/chat/completions", big, nil)
	if resp.StatusCode != 413 || decodeError(t, body).Error.Code != "request_too_large" {
		t.Fatalf("got %d %s, want 413", resp.StatusCode, body)
	}

	// Without a declared length, the limit still holds.
	resp, body = e.do("POST", "/v1/chat/completions", "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("empty body: got %d %s", resp.StatusCode, body)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequestWithContext(t.Context(), "POST", "/v1/chat/completions",
		io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/json")
	e.h.ServeHTTP(rec, req)
	if rec.Code != 413 {
		t.Errorf("chunked body over the limit: status %d, want 413", rec.Code)
	}

	for _, bad := range []string{`[1,2]`, `{"stream":"yes"}`, `{"model":1}`,
		`{"stream":true,"stream":false}`} {
		resp, body := e.do("POST", "/v1/chat/completions", bad, nil)
		if resp.StatusCode != 400 || decodeError(t, body).Error.Code != "invalid_request_body" {
			t.Errorf("%s: got %d %s, want 400 invalid_request_body", bad, resp.StatusCode, body)
		}
	}
	e.wait()
	if n := len(seen.all()); n != 1 {
		t.Errorf("upstream got %d requests, want only the empty-body one", n)
	}
}

// panicWriter panics on the first body write.
type panicWriter struct{ http.ResponseWriter }

func (p panicWriter) Write([]byte) (int, error) { panic("write failed") }

// A panic in the handler after the upstream call began still finalises
// the call once.
func TestPanicFinalisesOnce(t *testing.T) {
	t.Parallel()
	up, _ := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ seenRequest) {
		writeJSONAnswer(w, 200, chatAnswer(2, 3))
	})
	budget := newBudget(t, map[int64]int64{4: 100000})
	e := newEnv(t, up.URL, 1, func(o *Options) { o.Budget = budget })
	req := httptest.NewRequestWithContext(t.Context(), "POST", "/v1/chat/completions",
		strings.NewReader(chatBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(DefaultUserHeader, "4")
	func() {
		defer func() {
			if p := recover(); p != http.ErrAbortHandler {
				t.Errorf("recovered %v, want http.ErrAbortHandler", p)
			}
		}()
		e.h.ServeHTTP(panicWriter{httptest.NewRecorder()}, req)
	}()
	e.wait()
	rec := e.sink.only(t)
	if rec.Exit != outbox.ExitUpstreamError {
		t.Errorf("record %+v: want upstream_error", rec)
	}
	if h := budget.hold(rec.ID); h.settles+h.releases != 1 {
		t.Errorf("hold %+v: want one settle or release", h)
	}
	if e.h.InFlight() != 0 {
		t.Errorf("in flight %d after the panic", e.h.InFlight())
	}
}

// C7 (egress side): Shutdown waits for calls in flight; past its
// deadline it cuts them, and each is still recorded once.
func TestShutdown(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	up, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
		startStream(w)
		_, _ = io.WriteString(w, sseChunk)
		flush(w)
		select {
		case <-release:
			_, _ = io.WriteString(w, sseUsage+sseDone)
		case <-r.Context().Done():
		}
	})
	e := newEnv(t, up.URL, 1, nil)

	// A call that ends within the grace period.
	resp, _ := e.openStream(streamBody, nil)
	readUntil(t, bufio.NewReader(resp.Body), sseChunk)
	done := make(chan error, 1)
	go func() { done <- e.h.Shutdown(t.Context()) }()
	if n := e.h.InFlight(); n != 1 {
		t.Errorf("in flight %d, want 1", n)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if rec := e.sink.only(t); rec.Exit != outbox.ExitComplete || rec.TotalTokens != 12 {
		t.Errorf("record %+v", rec)
	}

	// New calls are refused.
	resp2, body := e.do("POST", "/v1/chat/completions", chatBody, nil)
	if resp2.StatusCode != 503 || decodeError(t, body).Error.Code != "shutting_down" {
		t.Errorf("after shutdown: got %d %s, want 503 shutting_down", resp2.StatusCode, body)
	}
}

func TestShutdownCutsAtDeadline(t *testing.T) {
	t.Parallel()
	up, _ := newUpstream(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
		startStream(w)
		_, _ = io.WriteString(w, sseChunk)
		flush(w)
		<-r.Context().Done()
	})
	e := newEnv(t, up.URL, 1, nil)
	resp, _ := e.openStream(streamBody, nil)
	readUntil(t, bufio.NewReader(resp.Body), sseChunk)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := e.h.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("shutdown: %v, want the deadline", err)
	}
	if n := e.h.InFlight(); n != 0 {
		t.Errorf("in flight %d after shutdown", n)
	}
	if rec := e.sink.only(t); rec.Exit != outbox.ExitShutdown {
		t.Errorf("record %+v: want shutdown", rec)
	}
}
