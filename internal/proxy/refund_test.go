package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/bolt"
)

// openBolt opens a real ledger in a temporary directory with one account
// per entry of demo, holding that many demo tokens.
func openBolt(t *testing.T, demo map[int64]int64) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "ledger.db"), metering.Options{})
	if err != nil {
		t.Fatalf("open ledger: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close ledger: %v", err)
		}
	})
	for id, n := range demo {
		_, err := s.Provision(context.Background(), metering.ProvisionRequest{
			UserAutomationID: id, DemoTokens: &n,
		})
		if err != nil {
			t.Fatalf("provision %d: %v", id, err)
		}
	}
	return s
}

// demoOf reads an account's demo balance.
func demoOf(t *testing.T, l metering.Ledger, id int64) int64 {
	t.Helper()
	a, err := l.Account(context.Background(), id)
	if err != nil {
		t.Fatalf("account %d: %v", id, err)
	}
	return a.DemoTokens
}

// journalOf returns the entries of one kind.
func journalOf(t *testing.T, l metering.Ledger, kind metering.EntryKind) []metering.Entry {
	t.Helper()
	var out []metering.Entry
	err := l.Journal(context.Background(), 0, 0, func(e metering.Entry) error {
		if e.Kind == kind {
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("journal: %v", err)
	}
	return out
}

// statusApp is an app that records each request and answers with the
// status in code, 200 when it is 0.
type statusApp struct {
	rec  recorder
	code atomic.Int32
}

func (a *statusApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.rec.record(r)
	code := int(a.code.Load())
	if code == 0 {
		code = http.StatusOK
	}
	httpx.WriteJSON(w, code, map[string]int{"app": code})
}

// refundRoutes meters /h/* at 2 units, paid by the X-Tenant header.
func refundRoutes() []Route {
	return []Route{{Path: "/h/*", Meter: &Meter{Units: 2, UsageType: "chat",
		User: UserSource{FromHeader, "X-Tenant"}}}}
}

// sendMetered sends GET /h/x for user 42, with key when it is not empty.
func sendMetered(t *testing.T, frontURL, key string) (int, string) {
	t.Helper()
	req := newReq(t, "GET", frontURL+"/h/x", nil)
	req.Header.Set("X-Tenant", "42")
	if key != "" {
		req.Header.Set(IdempotencyKeyHeader, key)
	}
	code, body, _ := do(t, req)
	return code, body
}

// refundFailures returns the OnError causes that are failed refunds.
func refundFailures(s *errorSink) []error {
	var out []error
	for _, err := range s.get() {
		if errors.Is(err, ErrRefundFailed) {
			out = append(out, err)
		}
	}
	return out
}

func TestMeterRefundsWhenAppFails(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	slow := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	hangup := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = conn.Close()
		}
	}))
	tests := []struct {
		name       string
		status     int32  // the app's answer; 0 with appURL set
		appURL     string // an app that fails to answer
		wantCode   int
		wantReason string // "" when the charge stands
	}{
		{name: "app down", appURL: closedURL(t), wantCode: 502,
			wantReason: "app gave no answer"},
		{name: "app hangs up", appURL: hangup.URL, wantCode: 502,
			wantReason: "app gave no answer"},
		{name: "app timeout", appURL: slow.URL, wantCode: 504,
			wantReason: "app gave no answer"},
		{name: "app 500", status: 500, wantCode: 500, wantReason: "app answered 500"},
		{name: "app 503", status: 503, wantCode: 503, wantReason: "app answered 503"},
		{name: "app 200", status: 200, wantCode: 200},
		{name: "app 404", status: 404, wantCode: 404},
		{name: "app 429", status: 429, wantCode: 429},
	}
	for _, tt := range tests {
		for _, key := range []string{"", "client-key"} {
			t.Run(fmt.Sprintf("%s/key=%q", tt.name, key), func(t *testing.T) {
				t.Parallel()
				app := &statusApp{}
				app.code.Store(tt.status)
				srv := newApp(t, app)
				ledger := openBolt(t, map[int64]int64{42: 10})
				sink := &errorSink{}
				_, front := newFront(t, srv, Options{
					AppURL: tt.appURL, Ledger: ledger, Routes: refundRoutes(),
					ResponseHeaderTimeout: 50 * time.Millisecond, OnError: sink.on,
				})

				code, body := sendMetered(t, front.URL, key)
				if code != tt.wantCode {
					t.Fatalf("got %d %s, want %d", code, body, tt.wantCode)
				}
				wantDemo := int64(8)
				if tt.wantReason != "" {
					wantDemo = 10
				}
				if got := demoOf(t, ledger, 42); got != wantDemo {
					t.Errorf("balance: got %d, want %d", got, wantDemo)
				}

				// One debit, and one refund naming the debit's key when
				// the app failed.
				debits := journalOf(t, ledger, metering.EntryDebit)
				refunds := journalOf(t, ledger, metering.EntryRefund)
				if len(debits) != 1 || debits[0].IdempotencyKey == "" {
					t.Fatalf("debits: got %+v, want one with a key", debits)
				}
				switch {
				case tt.wantReason == "" && len(refunds) != 0:
					t.Errorf("refunds: got %+v, want none", refunds)
				case tt.wantReason != "" && (len(refunds) != 1 ||
					refunds[0].Reason != tt.wantReason ||
					refunds[0].IdempotencyKey != debits[0].IdempotencyKey):
					t.Errorf("refunds: got %+v, want one of %s for %q",
						refunds, debits[0].IdempotencyKey, tt.wantReason)
				}
				if errs := refundFailures(sink); len(errs) != 0 {
					t.Errorf("failed refunds reported: %v", errs)
				}
			})
		}
	}
}

// TestMeterClientGoneKeepsCharge is finding H1: a client that hangs up
// while the app works stays charged (the app did the work; a refund would
// make every call free), and its key counts as used.
func TestMeterClientGoneKeepsCharge(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{})
	app := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-r.Context().Done() // works until the proxy gives up on it
	}))
	ledger := openBolt(t, map[int64]int64{42: 10})
	sink := &errorSink{}
	p, err := New(Options{AppURL: app.URL, Ledger: ledger, Routes: refundRoutes(),
		OnError: sink.on})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	served := make(chan struct{}, 2) // one per request sent
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter,
		r *http.Request) {
		p.ServeHTTP(w, r)
		served <- struct{}{}
	}))
	t.Cleanup(front.Close)

	ctx, cancel := context.WithCancel(context.Background())
	req := newReq(t, "GET", front.URL+"/h/x", nil).WithContext(ctx)
	req.Header.Set("X-Tenant", "42")
	req.Header.Set(IdempotencyKeyHeader, "k1")
	go func() {
		if resp, err := http.DefaultTransport.RoundTrip(req); err == nil {
			_ = resp.Body.Close()
		}
	}()
	<-arrived
	cancel()
	select {
	case <-served:
	case <-time.After(10 * time.Second): // a hang guard, not a speed check
		t.Fatal("the proxy did not finish the abandoned request")
	}

	if got := demoOf(t, ledger, 42); got != 8 {
		t.Errorf("balance: got %d, want 8 (the charge stands)", got)
	}
	if refunds := journalOf(t, ledger, metering.EntryRefund); len(refunds) != 0 {
		t.Errorf("refunds: got %+v, want none", refunds)
	}
	if errs := sink.get(); len(errs) != 1 || !errors.Is(errs[0], context.Canceled) {
		t.Errorf("OnError: got %v, want one context.Canceled", errs)
	}
	code, body := sendMetered(t, front.URL, "k1")
	if code != http.StatusConflict || !strings.Contains(body, msgKeyUsed) {
		t.Errorf("retry: got %d %s, want 409 %q", code, body, msgKeyUsed)
	}
}

// TestMeterRefundsWhenTheAnswerBreaks: the app sends a status and then
// drops the connection mid-body, so ReverseProxy aborts the handler with
// a panic. A 5xx is still refunded; a 2xx stays charged.
func TestMeterRefundsWhenTheAnswerBreaks(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusOK, http.StatusBadGateway} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			t.Parallel()
			app := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Length", "100")
				w.WriteHeader(status)
				_, _ = io.WriteString(w, "partial")
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					_ = conn.Close()
				}
			}))
			ledger := openBolt(t, map[int64]int64{42: 10})
			_, front := newFront(t, app, Options{Ledger: ledger, Routes: refundRoutes()})

			req := newReq(t, "GET", front.URL+"/h/x", nil)
			req.Header.Set("X-Tenant", "42")
			if resp, err := http.DefaultTransport.RoundTrip(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body) // ends when the proxy has
				_ = resp.Body.Close()                 // settled and aborted
			}

			want := int64(8)
			if status >= 500 {
				want = 10
			}
			if got := demoOf(t, ledger, 42); got != want {
				t.Errorf("balance: got %d, want %d", got, want)
			}
		})
	}
}

// TestMeterRetryAfterRefund: a call the app failed is refunded; its retry
// with the same client key is charged (once) and forwarded as a new
// call; a later retry, whose charge stands, is refused with 409 and never
// reaches the app, whatever the app would answer.
func TestMeterRetryAfterRefund(t *testing.T) {
	t.Parallel()
	app := &statusApp{}
	srv := newApp(t, app)
	ledger := openBolt(t, map[int64]int64{42: 10})
	_, front := newFront(t, srv, Options{Ledger: ledger, Routes: refundRoutes()})

	steps := []struct {
		name     string
		status   int32 // what the app would answer
		wantCode int
		wantDemo int64
		wantApp  int    // requests the app saw so far
		wantLeft string // the app's view of RemainingDemoHeader
	}{
		{"first call fails", 500, 500, 10, 1, "8"},
		{"retry is charged", 200, 200, 8, 2, "8"},
		{"retry again is refused", 200, 409, 8, 2, "8"},
		{"and stays refused", 500, 409, 8, 2, "8"},
	}
	for _, s := range steps {
		app.code.Store(s.status)
		if code, body := sendMetered(t, front.URL, "k1"); code != s.wantCode {
			t.Fatalf("%s: got %d %s, want %d", s.name, code, body, s.wantCode)
		}
		if got := demoOf(t, ledger, 42); got != s.wantDemo {
			t.Errorf("%s: balance got %d, want %d", s.name, got, s.wantDemo)
		}
		if got := app.rec.count(); got != s.wantApp {
			t.Errorf("%s: the app saw %d calls, want %d", s.name, got, s.wantApp)
		}
		seen := app.rec.last(t)
		if got := seen.Header.Get(RemainingDemoHeader); got != s.wantLeft {
			t.Errorf("%s: app saw %s %q, want %q", s.name, RemainingDemoHeader, got,
				s.wantLeft)
		}
	}

	debits := journalOf(t, ledger, metering.EntryDebit)
	refunds := journalOf(t, ledger, metering.EntryRefund)
	if len(debits) != 2 || len(refunds) != 1 {
		t.Fatalf("journal: got %d debits and %d refunds, want 2 and 1",
			len(debits), len(refunds))
	}
	base := debits[0].IdempotencyKey
	if refunds[0].IdempotencyKey != base || debits[1].IdempotencyKey != base+" retry 1" {
		t.Errorf("keys: debits %q and %q, refund %q; want the retry's key derived",
			base, debits[1].IdempotencyKey, refunds[0].IdempotencyKey)
	}
}

// TestMeterSameKeyInFlightRefused: while a charged call is in flight, its
// debit may still be refunded, so a second call with its key is refused
// with 409 (busy) until the first settles; after a refund it pays anew.
func TestMeterSameKeyInFlightRefused(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int32
	app := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			close(arrived)
			<-release
			httpx.Error(w, http.StatusInternalServerError, "boom")
			return
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"app": "ok"})
	}))
	ledger := openBolt(t, map[int64]int64{42: 10})
	_, front := newFront(t, app, Options{Ledger: ledger, Routes: refundRoutes()})

	first := make(chan int, 1)
	go func() {
		req := newReq(t, "GET", front.URL+"/h/x", nil)
		req.Header.Set("X-Tenant", "42")
		req.Header.Set(IdempotencyKeyHeader, "k1")
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			first <- 0
			return
		}
		_ = resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-arrived

	// The same key while the first call is in flight: refused, not
	// forwarded, not charged. Another key is not held up.
	code, body := sendMetered(t, front.URL, "k1")
	if code != http.StatusConflict || !strings.Contains(body, msgKeyBusy) {
		t.Errorf("same key in flight: got %d %s, want 409 %q", code, body, msgKeyBusy)
	}
	if code, _ := sendMetered(t, front.URL, "k2"); code != http.StatusOK {
		t.Errorf("another key: got %d, want 200", code)
	}
	if got := demoOf(t, ledger, 42); got != 6 {
		t.Errorf("balance with two charges: got %d, want 6", got)
	}

	close(release)
	if code := <-first; code != http.StatusInternalServerError {
		t.Fatalf("first call: got %d, want 500", code)
	}
	if got := demoOf(t, ledger, 42); got != 8 {
		t.Errorf("balance after the refund: got %d, want 8", got)
	}

	// Now the retry goes through and pays.
	if code, _ := sendMetered(t, front.URL, "k1"); code != http.StatusOK {
		t.Errorf("retry: got %d, want 200", code)
	}
	if got := demoOf(t, ledger, 42); got != 6 {
		t.Errorf("balance after the paid retry: got %d, want 6", got)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("the app saw %d calls, want 3", n)
	}
}

func TestMeterRefundFailureReported(t *testing.T) {
	t.Parallel()
	app := &statusApp{}
	app.code.Store(http.StatusServiceUnavailable)
	srv := newApp(t, app)
	var refunds []metering.RefundRequest
	ledger := &fakeLedger{
		consume: func(_ context.Context,
			req metering.ConsumeRequest) (metering.ConsumeResult, error) {
			return metering.ConsumeResult{Accepted: true, DemoDebited: req.Units}, nil
		},
		refund: func(_ context.Context, req metering.RefundRequest) (metering.Account, error) {
			refunds = append(refunds, req)
			return metering.Account{}, errors.New("disk gone")
		},
	}
	sink := &errorSink{}
	_, front := newFront(t, srv, Options{Ledger: ledger, Routes: refundRoutes(),
		OnError: sink.on})

	code, body := sendMetered(t, front.URL, "")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"app":503`) {
		t.Errorf("got %d %s, want the app's own 503", code, body)
	}
	if containsFold(body, "disk") || containsFold(body, "refund") {
		t.Errorf("answer %s shows the refund failure", body)
	}
	if len(refunds) != 1 || refunds[0].UserAutomationID != 42 ||
		refunds[0].IdempotencyKey == "" {
		t.Errorf("refunds asked: got %+v, want one for 42 with a key", refunds)
	}
	errs := refundFailures(sink)
	if len(errs) != 1 || !containsFold(errs[0].Error(), "disk gone") {
		t.Errorf("OnError: got %v, want one ErrRefundFailed with its cause", sink.get())
	}
}

// TestMeterKeySpent: a client key whose every charge was refunded is
// charged again under derived keys at most maxCharges times, then
// refused; the keys stay valid ledger keys.
func TestMeterKeySpent(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	app := newApp(t, rec)
	var keys []string
	ledger := &fakeLedger{consume: func(_ context.Context,
		req metering.ConsumeRequest) (metering.ConsumeResult, error) {
		keys = append(keys, req.IdempotencyKey)
		return metering.ConsumeResult{Accepted: true, Replayed: true, Refunded: true}, nil
	}}
	_, front := newFront(t, app, Options{Ledger: ledger, Routes: refundRoutes()})

	code, body := sendMetered(t, front.URL,
		strings.Repeat("k", metering.MaxIdempotencyKeyLen))
	if code != http.StatusConflict || !strings.Contains(body, msgKeySpent) {
		t.Errorf("got %d %s, want 409 %q", code, body, msgKeySpent)
	}
	if rec.count() != 0 {
		t.Errorf("a spent key was forwarded")
	}
	if len(keys) != maxCharges {
		t.Fatalf("ledger keys tried: got %d, want %d", len(keys), maxCharges)
	}
	seen := map[string]bool{}
	for i, k := range keys {
		if err := metering.CheckIdempotencyKey(k); err != nil || seen[k] {
			t.Errorf("key %d %q: valid %v, seen before %v", i, k, err, seen[k])
		}
		if i > 0 && k != keys[0]+retrySuffix+fmt.Sprint(i) {
			t.Errorf("key %d: got %q, want the first with a retry suffix", i, k)
		}
		seen[k] = true
	}
}

// TestMeterLedgerKeys: a call without a client key gets a fresh key (so
// it can be refunded); a client key of the longest allowed length still
// makes a valid ledger key, scoped to route and user.
func TestMeterLedgerKeys(t *testing.T) {
	t.Parallel()
	app := newApp(t, &recorder{})
	ledger := openBolt(t, map[int64]int64{42: 100})
	_, front := newFront(t, app, Options{Ledger: ledger, Routes: refundRoutes()})

	long := strings.Repeat("x", metering.MaxIdempotencyKeyLen)
	calls := []struct {
		key  string
		want int
	}{{"", 200}, {"", 200}, {long, 200}, {long, http.StatusConflict}}
	for _, c := range calls {
		if code, body := sendMetered(t, front.URL, c.key); code != c.want {
			t.Fatalf("key of %d bytes: got %d %s, want %d", len(c.key), code, body,
				c.want)
		}
	}
	debits := journalOf(t, ledger, metering.EntryDebit)
	if len(debits) != 3 {
		t.Fatalf("debits: got %d, want 3 (two unkeyed, one long key)", len(debits))
	}
	if debits[0].IdempotencyKey == debits[1].IdempotencyKey {
		t.Errorf("two unkeyed calls share the ledger key %q", debits[0].IdempotencyKey)
	}
	for _, d := range debits[:2] {
		if !strings.HasPrefix(d.IdempotencyKey, "route /h/* user 42 call ") {
			t.Errorf("generated key %q is not scoped to route and user", d.IdempotencyKey)
		}
	}
	if k := debits[2].IdempotencyKey; strings.Contains(k, long) || len(k) > maxBaseKey {
		t.Errorf("long client key used as is: %q", k)
	}
}

// FuzzLedgerKey checks ledgerKey for any client key and route pattern:
// what it accepts makes a valid ledger key with room for a retry suffix,
// the same input gives the same key, and two client keys never share one.
func FuzzLedgerKey(f *testing.F) {
	for _, s := range []string{"k1", "", "\x00", strings.Repeat("z", 300), "a b"} {
		f.Add(s, "/chat/*")
	}
	f.Add("k", strings.Repeat("/p", 200))
	f.Fuzz(func(t *testing.T, key, pattern string) {
		mk := func(k string) (string, bool) {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set(IdempotencyKeyHeader, k)
			got, client, ok := ledgerKey(r, pattern, 42)
			if ok && !client {
				t.Fatalf("a client key %q was not taken as the client's", k)
			}
			return got, ok
		}
		got, ok := mk(key)
		if !ok {
			if key != "" && metering.CheckIdempotencyKey(key) == nil {
				t.Fatalf("key %q the ledger accepts was refused", key)
			}
			return
		}
		if len(got) > maxBaseKey || metering.CheckIdempotencyKey(got) != nil {
			t.Fatalf("ledger key %q is not a valid base key", got)
		}
		if again, _ := mk(key); again != got {
			t.Fatalf("same key gave %q and %q", got, again)
		}
		if other, ok := mk(key + "x"); ok && other == got {
			t.Fatalf("client keys %q and %q share ledger key %q", key, key+"x", got)
		}
	})
}
