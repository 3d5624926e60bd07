package proxy

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// holdingLedger is a fakeLedger that is also a metering.KeyHolder, with
// the hold and release as function fields, and a log of the calls made.
type holdingLedger struct {
	*fakeLedger
	hold    func(key string) (string, bool, error)
	release func(key, token string) error

	mu  sync.Mutex
	log []string // "hold KEY TTL", "release KEY TOKEN", "refund KEY"
}

var _ metering.KeyHolder = (*holdingLedger)(nil)

func (h *holdingLedger) note(s string) {
	h.mu.Lock()
	h.log = append(h.log, s)
	h.mu.Unlock()
}

func (h *holdingLedger) calls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.log...)
}

func (h *holdingLedger) HoldKey(_ context.Context, key string,
	ttl time.Duration) (string, bool, error) {
	h.note("hold " + key + " " + ttl.String())
	return h.hold(key)
}

func (h *holdingLedger) ReleaseKey(_ context.Context, key, token string) error {
	h.note("release " + key + " " + token)
	if h.release == nil {
		return nil
	}
	return h.release(key, token)
}

// newHoldingLedger holds every key with token "tok" unless hold says
// otherwise, over a memLedger with 10 tokens for user 42 whose refunds are
// logged.
func newHoldingLedger() (*holdingLedger, *memLedgerState) {
	f, st := newMemLedger(map[int64]int64{42: 10})
	h := &holdingLedger{fakeLedger: f}
	h.hold = func(string) (string, bool, error) { return "tok", true, nil }
	h.refund = func(_ context.Context, req metering.RefundRequest) (metering.Account, error) {
		h.note("refund " + req.IdempotencyKey)
		return metering.Account{}, nil
	}
	return h, st
}

const wantKey = "route /h/* user 42 key k1"

// TestSharedHoldLifecycle: a client-keyed call on a shared ledger holds
// its ledger key there for keyHoldTTL, and releases it with its token
// after the refund; an unkeyed call holds nothing.
func TestSharedHoldLifecycle(t *testing.T) {
	t.Parallel()
	app := &statusApp{}
	app.code.Store(http.StatusInternalServerError)
	l, _ := newHoldingLedger()
	_, front := newFront(t, newApp(t, app), Options{Ledger: l, Routes: refundRoutes(),
		ConnectTimeout: time.Second, ResponseHeaderTimeout: 30 * time.Second})

	if code, _ := sendMetered(t, front.URL, "k1"); code != http.StatusInternalServerError {
		t.Fatalf("call: got %d, want the app's 500", code)
	}
	ttl := 2*(time.Second+DefaultTLSHandshakeTimeout) + 30*time.Second +
		refundTimeout + holdMargin
	want := []string{
		"hold " + wantKey + " " + ttl.String(),
		"refund " + wantKey,
		"release " + wantKey + " tok",
	}
	if got := l.calls(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("ledger calls:\n got %q\nwant %q", got, want)
	}

	// Without a client key there is nothing to hold.
	before := len(l.calls())
	if code, _ := sendMetered(t, front.URL, ""); code != http.StatusInternalServerError {
		t.Fatalf("unkeyed call: got %d, want 500", code)
	}
	for _, c := range l.calls()[before:] {
		if strings.HasPrefix(c, "hold") || strings.HasPrefix(c, "release") {
			t.Errorf("unkeyed call: got %q, want no hold or release", c)
		}
	}
}

// TestSharedHoldRefusals: a key another replica holds is refused with the
// guard's 409, a ledger that cannot hold answers 503 with the cause for
// OnError; neither charges, forwards or keeps the key in this process.
func TestSharedHoldRefusals(t *testing.T) {
	t.Parallel()
	errDown := errors.New("database down")
	tests := []struct {
		name     string
		held     bool
		err      error
		wantCode int
		wantBody string
	}{
		{"held elsewhere", false, nil, http.StatusConflict, msgKeyBusy},
		{"ledger down", false, errDown, http.StatusServiceUnavailable, msgLedgerDown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			app := &statusApp{}
			l, mem := newHoldingLedger()
			var refuse atomic.Bool
			refuse.Store(true)
			l.hold = func(string) (string, bool, error) {
				if refuse.Load() {
					return "", tt.held, tt.err
				}
				return "tok", true, nil
			}
			var sink errorSink
			_, front := newFront(t, newApp(t, app), Options{Ledger: l,
				Routes: refundRoutes(), OnError: sink.on})

			code, body := sendMetered(t, front.URL, "k1")
			if code != tt.wantCode || !strings.Contains(body, tt.wantBody) {
				t.Errorf("got %d %s, want %d %q", code, body, tt.wantCode, tt.wantBody)
			}
			if n := len(mem.requests()); n != 0 {
				t.Errorf("charged %d times, want 0", n)
			}
			if n := app.rec.count(); n != 0 {
				t.Errorf("forwarded %d calls, want 0", n)
			}
			if got := mem.balance(42); got != 10 {
				t.Errorf("balance: got %d, want 10 (nothing charged)", got)
			}
			switch errs := sink.get(); {
			case tt.err != nil && (len(errs) != 1 || !errors.Is(errs[0], errDown)):
				t.Errorf("OnError: got %v, want the ledger's error", errs)
			case tt.err == nil && len(errs) != 0:
				t.Errorf("OnError: got %v, want nothing", errs)
			}
			for _, c := range l.calls() {
				if strings.HasPrefix(c, "release") {
					t.Errorf("got %q, want no release of a hold not taken", c)
				}
			}

			// The key was not kept in this process: once the ledger
			// holds, the call goes through.
			refuse.Store(false)
			if code, _ := sendMetered(t, front.URL, "k1"); code != http.StatusOK {
				t.Errorf("after the ledger holds: got %d, want 200", code)
			}
		})
	}
}

// TestSharedReleaseFailureReported: a release the ledger fails goes to
// OnError; the client's answer stands and this process frees the key.
func TestSharedReleaseFailureReported(t *testing.T) {
	t.Parallel()
	l, _ := newHoldingLedger()
	errLost := errors.New("connection lost")
	l.release = func(string, string) error { return errLost }
	var sink errorSink
	_, front := newFront(t, newApp(t, &statusApp{}), Options{Ledger: l,
		Routes: refundRoutes(), OnError: sink.on})
	if code, _ := sendMetered(t, front.URL, "k1"); code != http.StatusOK {
		t.Fatalf("call: got %d, want 200", code)
	}
	// Its retry finds the key free here (a held key would answer busy)
	// and the charge standing.
	code, body := sendMetered(t, front.URL, "k1")
	if code != http.StatusConflict || !strings.Contains(body, msgKeyUsed) {
		t.Errorf("retry: got %d %s, want 409 %q", code, body, msgKeyUsed)
	}
	errs := sink.get()
	if len(errs) != 2 || !errors.Is(errs[0], errLost) {
		t.Errorf("OnError: got %v, want two failed releases", errs)
	}
}

func TestKeyHoldTTL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
		want time.Duration
	}{
		// 2 × (2 s + 10 s) + 60 s + 10 s refund + 60 s margin.
		{"defaults", Options{}, 154 * time.Second},
		{"set", Options{ConnectTimeout: time.Second, TLSHandshakeTimeout: 4 * time.Second,
			ResponseHeaderTimeout: 5 * time.Minute}, 10*time.Second + 5*time.Minute +
			refundTimeout + holdMargin},
	}
	for _, tt := range tests {
		if got := keyHoldTTL(tt.opts); got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.name, got, tt.want)
		}
	}
}
