package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// fakeLedger is a metering.Ledger whose methods are function fields; a
// nil field fails the test's call with an error.
type fakeLedger struct {
	consume func(context.Context, metering.ConsumeRequest) (metering.ConsumeResult, error)
	refund  func(context.Context, metering.RefundRequest) (metering.Account, error)
}

var _ metering.Ledger = (*fakeLedger)(nil)

var errNotFaked = errors.New("not faked")

func (f *fakeLedger) Consume(ctx context.Context,
	req metering.ConsumeRequest) (metering.ConsumeResult, error) {
	if f.consume == nil {
		return metering.ConsumeResult{}, errNotFaked
	}
	return f.consume(ctx, req)
}

func (f *fakeLedger) Provision(context.Context,
	metering.ProvisionRequest) (metering.ProvisionResult, error) {
	return metering.ProvisionResult{}, errNotFaked
}

func (f *fakeLedger) Credit(context.Context, metering.CreditRequest) (metering.Account, error) {
	return metering.Account{}, errNotFaked
}

func (f *fakeLedger) Account(context.Context, int64) (metering.Account, error) {
	return metering.Account{}, errNotFaked
}

func (f *fakeLedger) Journal(context.Context, uint64, int,
	func(metering.Entry) error) error {
	return errNotFaked
}

func (f *fakeLedger) Refund(ctx context.Context,
	req metering.RefundRequest) (metering.Account, error) {
	if f.refund == nil {
		// What a real ledger says when the charge never committed.
		return metering.Account{}, metering.ErrUnknownDebit
	}
	return f.refund(ctx, req)
}

func (f *fakeLedger) Settle(context.Context,
	metering.SettleRequest) (metering.SettleResult, error) {
	return metering.SettleResult{}, errNotFaked
}

func (f *fakeLedger) Reconcile(context.Context,
	metering.ReconcileRequest) (metering.Account, error) {
	return metering.Account{}, errNotFaked
}

func (f *fakeLedger) Close() error { return nil }

// memLedger fakes a ledger with demo balances per account, replaying
// idempotency keys; it records every consume it is asked for.
type memLedgerState struct {
	mu       sync.Mutex
	balances map[int64]int64
	seen     map[string]metering.ConsumeResult
	calls    []metering.ConsumeRequest
}

func newMemLedger(balances map[int64]int64) (*fakeLedger, *memLedgerState) {
	st := &memLedgerState{balances: balances, seen: map[string]metering.ConsumeResult{}}
	return &fakeLedger{consume: st.consume}, st
}

func memLedger(balances map[int64]int64) *fakeLedger {
	f, _ := newMemLedger(balances)
	return f
}

func (s *memLedgerState) consume(_ context.Context,
	req metering.ConsumeRequest) (metering.ConsumeResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, req)
	if r, ok := s.seen[req.IdempotencyKey]; ok && req.IdempotencyKey != "" {
		r.Replayed = true
		return r, nil
	}
	bal, ok := s.balances[req.UserAutomationID]
	if !ok {
		return metering.ConsumeResult{}, fmt.Errorf("account %d: %w",
			req.UserAutomationID, metering.ErrUnknownAccount)
	}
	res := metering.ConsumeResult{RemainingDemo: bal}
	if bal >= req.Units {
		bal -= req.Units
		s.balances[req.UserAutomationID] = bal
		res = metering.ConsumeResult{Accepted: true, RemainingDemo: bal,
			DemoDebited: req.Units}
	}
	if req.IdempotencyKey != "" {
		s.seen[req.IdempotencyKey] = res
	}
	return res, nil
}

func (s *memLedgerState) balance(id int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.balances[id]
}

func (s *memLedgerState) requests() []metering.ConsumeRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]metering.ConsumeRequest(nil), s.calls...)
}

func meteredRoutes() []Route {
	return []Route{
		{Path: "/h/*", Meter: &Meter{Units: 2, UsageType: "chat",
			User: UserSource{FromHeader, "X-Tenant"}}},
		{Path: "/q", Meter: &Meter{Units: 2, UsageType: "chat",
			User: UserSource{FromQuery, "uaid"}}},
		{Path: "/u/{uaid}/chat", Meter: &Meter{Units: 2, UsageType: "chat",
			User: UserSource{FromPath, "uaid"}}},
	}
}

func TestMeterChargesBeforeForwarding(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	app := newApp(t, rec)
	ledger, state := newMemLedger(map[int64]int64{42: 5, 43: 0})
	_, front := newFront(t, app, Options{Ledger: ledger, Routes: meteredRoutes()})

	tests := []struct {
		name       string
		path       string
		header     http.Header
		wantCode   int
		wantDetail string
		wantLeft   int64 // balance of 42 afterwards
		forwarded  bool
	}{
		{"header", "/h/x", http.Header{"X-Tenant": {"42"}}, 200, "", 3, true},
		{"query", "/q?uaid=42", nil, 200, "", 1, true},
		{"insufficient", "/u/42/chat", nil, 402, "Insufficient tokens", 1, false},
		{"path other user", "/u/43/chat", nil, 402, "Insufficient tokens", 1, false},
		{"unknown", "/h/x", http.Header{"X-Tenant": {"77"}}, 404,
			"Unknown user_automation_id", 1, false},
		{"missing", "/h/x", nil, 400, msgBadUser, 1, false},
		{"zero", "/h/x", http.Header{"X-Tenant": {"0"}}, 400, msgBadUser, 1, false},
		{"negative", "/q?uaid=-4", nil, 400, msgBadUser, 1, false},
		{"signed", "/q?uaid=%2B42", nil, 400, msgBadUser, 1, false},
		{"not a number", "/u/abc/chat", nil, 400, msgBadUser, 1, false},
		{"two values", "/q?uaid=42&uaid=43", nil, 400, msgBadUser, 1, false},
		{"two headers", "/h/x", http.Header{"X-Tenant": {"42", "43"}}, 400,
			msgBadUser, 1, false},
		{"overflow", "/q?uaid=99999999999999999999", nil, 400, msgBadUser, 1, false},
		{"empty key", "/h/x", http.Header{"X-Tenant": {"42"},
			"Idempotency-Key": {""}}, 400, msgBadKey, 1, false},
	}
	for _, tt := range tests {
		before := rec.count()
		req := newReq(t, "GET", front.URL+tt.path, nil)
		for k, vs := range tt.header {
			req.Header[k] = vs
		}
		code, body, _ := do(t, req)
		if code != tt.wantCode {
			t.Fatalf("%s: got %d %s, want %d", tt.name, code, body, tt.wantCode)
		}
		if tt.wantDetail != "" {
			var got struct{ Detail string }
			if err := json.Unmarshal([]byte(body), &got); err != nil ||
				got.Detail != tt.wantDetail {
				t.Errorf("%s: got body %s, want detail %q", tt.name, body, tt.wantDetail)
			}
		}
		if left := state.balance(42); left != tt.wantLeft {
			t.Errorf("%s: balance got %d, want %d", tt.name, left, tt.wantLeft)
		}
		if fwd := rec.count() > before; fwd != tt.forwarded {
			t.Errorf("%s: forwarded %v, want %v", tt.name, fwd, tt.forwarded)
		}
	}
	if got := rec.last(t).Header.Get(UserHeader); got != "42" {
		t.Errorf("%s: got %q, want 42", UserHeader, got)
	}
	for _, req := range state.requests() {
		if req.Units != 2 || req.UsageType != "chat" {
			t.Errorf("consume: got %+v, want 2 units of chat", req)
		}
	}
}

func TestMeter402Body(t *testing.T) {
	t.Parallel()
	app := newApp(t, &recorder{})
	ledger := &fakeLedger{consume: func(context.Context,
		metering.ConsumeRequest) (metering.ConsumeResult, error) {
		return metering.ConsumeResult{RemainingDemo: 1, RemainingPaid: 0}, nil
	}}
	_, front := newFront(t, app, Options{Ledger: ledger, Routes: meteredRoutes()})
	code, body, _ := do(t, newReq(t, "GET", front.URL+"/q?uaid=9", nil))
	want := `{"detail":"Insufficient tokens","remaining_demo_tokens":1,` +
		`"remaining_paid_tokens":0}` + "\n"
	if code != http.StatusPaymentRequired || body != want {
		t.Errorf("got %d %s, want 402 %s", code, body, want)
	}
}

// TestMeterIdempotentRetryChargedOnce: a retry under a key whose charge
// stands is neither charged nor forwarded (the app would redo the work
// for free); it gets 409, since the sidecar cannot replay the app's answer.
func TestMeterIdempotentRetryChargedOnce(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	app := newApp(t, rec)
	ledger, state := newMemLedger(map[int64]int64{42: 10, 43: 10})
	_, front := newFront(t, app, Options{Ledger: ledger, Routes: meteredRoutes()})

	send := func(user, key string) (int, string) {
		t.Helper()
		req := newReq(t, "POST", front.URL+"/u/"+user+"/chat", strings.NewReader("{}"))
		req.Header.Set(IdempotencyKeyHeader, key)
		code, body, _ := do(t, req)
		return code, body
	}
	if code, body := send("42", "k1"); code != 200 {
		t.Fatalf("first call: got %d %s, want 200", code, body)
	}
	code, body := send("42", "k1") // the retry
	want := `{"detail":"` + msgKeyUsed + `"}` + "\n"
	if code != http.StatusConflict || body != want {
		t.Errorf("retry: got %d %s, want 409 %s", code, body, want)
	}
	if got := state.balance(42); got != 8 {
		t.Errorf("balance after retry: got %d, want 8 (charged once)", got)
	}
	if n := rec.count(); n != 1 {
		t.Errorf("the app saw %d requests, want 1 (a retry is not forwarded)", n)
	}

	// The same client key for another user is another charge.
	if code, body := send("43", "k1"); code != 200 {
		t.Fatalf("other user: got %d %s, want 200", code, body)
	}
	if got := state.balance(43); got != 8 {
		t.Errorf("other user: got %d, want 8", got)
	}
	reqs := state.requests()
	if k := reqs[0].IdempotencyKey; k == "k1" || !strings.Contains(k, "/u/{uaid}/chat") {
		t.Errorf("ledger key %q is not scoped by route", k)
	}
	if reqs[0].IdempotencyKey == reqs[2].IdempotencyKey {
		t.Errorf("users 42 and 43 share ledger key %q", reqs[0].IdempotencyKey)
	}
}

func TestMeterLedgerErrors(t *testing.T) {
	t.Parallel()
	app := newApp(t, &recorder{})
	tests := []struct {
		name     string
		err      error
		wantCode int
		reported bool
	}{
		{"closed", metering.ErrClosed, 503, true},
		{"io", errors.New("disk on fire"), 503, true},
		{"units", metering.ErrInvalidUnits, 500, true},
		{"conflict", metering.ErrIdempotencyConflict, 409, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &errorSink{}
			ledger := &fakeLedger{consume: func(context.Context,
				metering.ConsumeRequest) (metering.ConsumeResult, error) {
				return metering.ConsumeResult{}, fmt.Errorf("consume: %w", tt.err)
			}}
			_, front := newFront(t, app, Options{Ledger: ledger,
				Routes: meteredRoutes(), OnError: sink.on})
			code, body, _ := do(t, newReq(t, "GET", front.URL+"/q?uaid=9", nil))
			if code != tt.wantCode {
				t.Fatalf("got %d %s, want %d", code, body, tt.wantCode)
			}
			if containsFold(body, "fire") || containsFold(body, "consume") {
				t.Errorf("answer %s shows the cause", body)
			}
			errs := sink.get()
			if got := len(errs) == 1 && errors.Is(errs[0], tt.err); got != tt.reported {
				t.Errorf("OnError got %v, want reported=%v", errs, tt.reported)
			}
		})
	}
}

func TestMeterAfterAuth(t *testing.T) {
	t.Parallel()
	app := newApp(t, &recorder{})
	ledger, state := newMemLedger(map[int64]int64{42: 10})
	routes := meteredRoutes()
	for i := range routes {
		routes[i].Protect = true
	}
	_, front := newFront(t, app, Options{Ledger: ledger, Routes: routes, Auth: fakeAuth})
	if code, _, _ := do(t, newReq(t, "GET", front.URL+"/q?uaid=42", nil)); code != 401 {
		t.Fatalf("no token: got %d, want 401", code)
	}
	if n := len(state.requests()); n != 0 {
		t.Errorf("an unauthenticated request reached the ledger %d times", n)
	}
}

// TestSettleRefundsCallsCutByShutdown: a drain that runs out of time
// cancels requests with ErrShutdown; the sidecar cut those calls, so the
// charge goes back even though the request context is cancelled.
func TestSettleRefundsCallsCutByShutdown(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		cause error
		want  bool
	}{
		{"client gone", context.Canceled, false},
		{"sidecar shut down", ErrShutdown, true},
	} {
		var refunds []metering.RefundRequest
		p := &Proxy{ledger: &fakeLedger{refund: func(_ context.Context,
			req metering.RefundRequest) (metering.Account, error) {
			refunds = append(refunds, req)
			return metering.Account{}, nil
		}}}
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(tt.cause)
		r := httptest.NewRequest("POST", "/chat", nil).WithContext(ctx)
		p.settle(r, &reqState{charged: true, user: 7, debit: "k"}, 0)
		if got := len(refunds) == 1; got != tt.want {
			t.Errorf("%s: refunded %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestUncertainChargeIsRefunded: a charge that failed in a way that may
// have committed (a lost database reply) is refunded, since nothing was
// forwarded; a definite refusal is not.
func TestUncertainChargeIsRefunded(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"lost reply", errors.New("conn closed during commit"), true},
		{"unknown account", metering.ErrUnknownAccount, false},
		{"closed", metering.ErrClosed, false},
	} {
		var refunds []metering.RefundRequest
		l := &fakeLedger{
			consume: func(context.Context,
				metering.ConsumeRequest) (metering.ConsumeResult, error) {
				return metering.ConsumeResult{}, tt.err
			},
			refund: func(_ context.Context, req metering.RefundRequest) (metering.Account, error) {
				refunds = append(refunds, req)
				return metering.Account{}, metering.ErrUnknownDebit
			},
		}
		app := newApp(t, &sequenceApp{codes: []int{200}})
		_, front := newFront(t, app, Options{Ledger: l, Routes: []Route{{Path: "/chat",
			Meter: &Meter{Units: 1, UsageType: "chat",
				User: UserSource{From: FromHeader, Name: "X-Tenant"}}}}})
		req := newReq(t, "POST", front.URL+"/chat", nil)
		req.Header.Set("X-Tenant", "7")
		if code, _, _ := do(t, req); code < 400 {
			t.Fatalf("%s: got %d, want a failure", tt.name, code)
		}
		if got := len(refunds) == 1; got != tt.want {
			t.Errorf("%s: refund tried %v, want %v (%+v)", tt.name, got, tt.want, refunds)
		}
	}
}
