package zimmer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

const testToken = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// fixedNow is the injected clock of every test API.
var fixedNow = time.Date(2025, 1, 10, 16, 54, 49, 650619000, time.UTC)

// memLedger is a small in-memory ledger with the platform's whole-demo
// rule and idempotency keys committed with the debit. fail, when set,
// makes the next writes fail before anything changes.
type memLedger struct {
	mu          sync.Mutex
	accounts    map[int64]metering.Account
	keys        map[string]keyRecord
	defaultDemo int64
	now         func() time.Time
	fail        error
	provisions  []metering.ProvisionRequest
	consumes    []metering.ConsumeRequest
	debits      int
}

type keyRecord struct {
	req metering.ConsumeRequest
	res metering.ConsumeResult
}

var _ metering.Ledger = (*memLedger)(nil)

func newMemLedger() *memLedger {
	return &memLedger{
		accounts:    make(map[int64]metering.Account),
		keys:        make(map[string]keyRecord),
		defaultDemo: 5,
		now:         func() time.Time { return fixedNow.Add(-time.Hour) },
	}
}

func (l *memLedger) Provision(
	_ context.Context, req metering.ProvisionRequest,
) (metering.ProvisionResult, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.provisions = append(l.provisions, req)
	if l.fail != nil {
		return metering.ProvisionResult{}, l.fail
	}
	acc, ok := l.accounts[req.UserAutomationID]
	if !ok {
		acc = metering.Account{
			UserAutomationID: req.UserAutomationID,
			DemoTokens:       l.defaultDemo,
			ProvisionedAt:    l.now(),
		}
		if req.DemoTokens != nil {
			acc.DemoTokens = *req.DemoTokens
		}
	}
	acc.UserID, acc.BotTokenGiven = req.UserID, req.BotTokenGiven
	l.accounts[req.UserAutomationID] = acc
	return metering.ProvisionResult{Account: acc, Created: !ok}, nil
}

func (l *memLedger) Consume(
	_ context.Context, req metering.ConsumeRequest,
) (metering.ConsumeResult, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.consumes = append(l.consumes, req)
	if rec, ok := l.keys[req.IdempotencyKey]; ok && req.IdempotencyKey != "" {
		if rec.req != req {
			return metering.ConsumeResult{}, fmt.Errorf("key %q: %w",
				req.IdempotencyKey, metering.ErrIdempotencyConflict)
		}
		res := rec.res
		res.Replayed = true
		return res, nil
	}
	if l.fail != nil {
		return metering.ConsumeResult{}, l.fail
	}
	acc, ok := l.accounts[req.UserAutomationID]
	if !ok {
		return metering.ConsumeResult{}, metering.ErrUnknownAccount
	}
	res := metering.ConsumeResult{Message: "Insufficient tokens"}
	switch {
	case acc.DemoTokens > 0 && acc.DemoTokens >= req.Units:
		acc.DemoTokens -= req.Units
		res.Accepted, res.DemoDebited = true, req.Units
	case acc.DemoTokens == 0 && acc.PaidTokens >= req.Units:
		acc.PaidTokens -= req.Units
		res.Accepted, res.PaidDebited = true, req.Units
	}
	if res.Accepted {
		res.Message = ""
		l.debits++
	}
	res.RemainingDemo, res.RemainingPaid = acc.DemoTokens, acc.PaidTokens
	l.accounts[req.UserAutomationID] = acc
	if req.IdempotencyKey != "" {
		l.keys[req.IdempotencyKey] = keyRecord{req: req, res: res}
	}
	return res, nil
}

func (l *memLedger) Credit(
	_ context.Context, req metering.CreditRequest,
) (metering.Account, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	acc, ok := l.accounts[req.UserAutomationID]
	if !ok {
		return metering.Account{}, metering.ErrUnknownAccount
	}
	acc.PaidTokens += req.Units
	l.accounts[req.UserAutomationID] = acc
	return acc, nil
}

func (l *memLedger) Account(_ context.Context, id int64) (metering.Account, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	acc, ok := l.accounts[id]
	if !ok {
		return metering.Account{}, metering.ErrUnknownAccount
	}
	return acc, nil
}

func (l *memLedger) Journal(context.Context, uint64, int, func(metering.Entry) error) error {
	return errors.New("memLedger: no journal")
}

// Refund is not used by the zimmer package; it refuses.
func (l *memLedger) Refund(context.Context, metering.RefundRequest) (metering.Account, error) {
	return metering.Account{}, errors.New("memLedger: no refund")
}

// Settle is not used by the zimmer package; it refuses.
func (l *memLedger) Settle(context.Context, metering.SettleRequest) (metering.SettleResult, error) {
	return metering.SettleResult{}, errors.New("memLedger: no settle")
}

// Reconcile is not used by the zimmer package; it refuses.
func (l *memLedger) Reconcile(context.Context,
	metering.ReconcileRequest) (metering.Account, error) {
	return metering.Account{}, errors.New("memLedger: no reconcile")
}

func (l *memLedger) Close() error { return nil }

// setFail makes writes fail with err (nil: succeed again).
func (l *memLedger) setFail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fail = err
}

// counts returns how many provision and consume calls the ledger saw.
func (l *memLedger) counts() (provisions, consumes int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.provisions), len(l.consumes)
}

// funcLedger is a memLedger whose Consume is a function field.
type funcLedger struct {
	*memLedger
	consume func(context.Context, metering.ConsumeRequest) (metering.ConsumeResult, error)
}

var _ metering.Ledger = (*funcLedger)(nil)

func (l *funcLedger) Consume(
	ctx context.Context, req metering.ConsumeRequest,
) (metering.ConsumeResult, error) {
	return l.consume(ctx, req)
}

// authFake is the injected auth middleware: it counts its runs and lets a
// request through only with the test token.
type authFake struct {
	runs atomic.Int32
}

func (a *authFake) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.runs.Add(1)
		switch r.Header.Get("X-Zimmer-Service-Token") {
		case "":
			httpx.Error(w, http.StatusUnauthorized, "Missing service token")
		case testToken:
			next.ServeHTTP(w, r)
		default:
			httpx.Error(w, http.StatusUnauthorized, "Invalid service token")
		}
	})
}

// hookFunc is a ProvisionHook made of a function.
type hookFunc func(context.Context, ProvisionCall) (ProvisionReply, error)

func (f hookFunc) Provision(ctx context.Context, c ProvisionCall) (ProvisionReply, error) {
	return f(ctx, c)
}

var _ ProvisionHook = hookFunc(nil)

// kbFake is a KBBackend of function fields.
type kbFake struct {
	status   func(ctx context.Context, uaID, userID int64) (KBInfo, error)
	reset    func(ctx context.Context, uaID int64) error
	canReset bool
}

var _ KBBackend = (*kbFake)(nil)

func (k *kbFake) Status(ctx context.Context, uaID, userID int64) (KBInfo, error) {
	return k.status(ctx, uaID, userID)
}

func (k *kbFake) Reset(ctx context.Context, uaID int64) error { return k.reset(ctx, uaID) }

func (k *kbFake) SupportsReset() bool { return k.canReset }

// healthOK is the injected health handler.
var healthOK = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	httpx.WriteJSON(w, http.StatusOK, map[string]any{
		"status": "ok", "version": "1.0.0", "uptime": 1,
	})
})

// recordedError is one OnError call.
type recordedError struct {
	ep     Endpoint
	status int
	err    error
}

// harness is a test API with its fakes.
type harness struct {
	api    *API
	ledger *memLedger
	auth   *authFake
	mu     sync.Mutex
	errs   []recordedError
}

// newHarness builds an API over a memLedger; edit adjusts the options.
func newHarness(t *testing.T, edit func(*Options)) *harness {
	t.Helper()
	h := &harness{ledger: newMemLedger(), auth: &authFake{}}
	opts := Options{
		Prefixes: []string{"/"},
		Ledger:   h.ledger,
		Auth:     h.auth.middleware,
		Health:   healthOK,
		Now:      func() time.Time { return fixedNow },
		OnError: func(_ *http.Request, ep Endpoint, status int, err error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.errs = append(h.errs, recordedError{ep, status, err})
		},
	}
	if edit != nil {
		edit(&opts)
	}
	api, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.api = api
	return h
}

// lastError returns the last OnError call.
func (h *harness) lastError(t *testing.T) recordedError {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.errs) == 0 {
		t.Fatal("OnError was not called")
	}
	return h.errs[len(h.errs)-1]
}

// do sends one request with the test token and returns the recorder.
func (h *harness) do(
	t *testing.T, method, target, body string, hdr ...string,
) *httptest.ResponseRecorder {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rd)
	r.Header.Set("X-Zimmer-Service-Token", testToken)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.api.ServeHTTP(w, r)
	return w
}

// decodeAs decodes a JSON answer into T, failing on anything but an object.
func decodeAs[T any](t *testing.T, w *httptest.ResponseRecorder) T {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type: got %q, want application/json", ct)
	}
	var v T
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %s: %v", w.Body.String(), err)
	}
	return v
}

// wantStatus fails unless the answer has the status.
func wantStatus(t *testing.T, w *httptest.ResponseRecorder, status int) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status: got %d, want %d; body %s", w.Code, status, w.Body.String())
	}
}

// wantDetail fails unless the answer is {"detail": detail, ...}.
func wantDetail(t *testing.T, w *httptest.ResponseRecorder, detail string) {
	t.Helper()
	got := decodeAs[ErrorAnswer](t, w)
	if got.Detail != detail {
		t.Fatalf("detail: got %q, want %q", got.Detail, detail)
	}
}
