package keys

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/testclock"
)

// fakeClock is the tests' settable clock.
type fakeClock = testclock.Clock

func newClock() *fakeClock {
	return testclock.New(time.Date(2025, 3, 14, 10, 0, 0, 0, time.UTC))
}

// eventLog collects events from Options.OnEvent.
type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

func (l *eventLog) all() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.events...)
}

// kinds returns the kinds of the events for key id.
func (l *eventLog) kinds(id int64) []EventKind {
	var out []EventKind
	for _, e := range l.all() {
		if e.KeyID == id {
			out = append(out, e.Kind)
		}
	}
	return out
}

// testKey returns a realistic, distinct key.
func testKey(i int) Secret {
	return NewSecret("sk-test" + string(rune('A'+i)) + "0123456789abcdefghij" + string(rune('a'+i)))
}

// newStatic builds a static pool of n keys with the same limits.
func newStatic(t *testing.T, n int, lim Limits) (*Static, *fakeClock, *eventLog) {
	t.Helper()
	clk, log := newClock(), &eventLog{}
	ks := make([]StaticKey, n)
	for i := range ks {
		ks[i] = StaticKey{Source: "env:KEY_" + string(rune('A'+i)), Key: testKey(i), Limits: lim}
	}
	p, err := NewStatic(ks, Options{Now: clk.Now, OnEvent: log.add})
	if err != nil {
		t.Fatalf("NewStatic: %v", err)
	}
	return p, clk, log
}

// mustAcquire acquires or fails the test.
func mustAcquire(t *testing.T, p Pool, maxTokens int64) Lease {
	t.Helper()
	l, err := p.Acquire(context.Background(), "gpt-4o-mini", maxTokens)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	return l
}

// noKey acquires expecting a *NoKeyError and returns it.
func noKey(t *testing.T, p Pool, maxTokens int64) *NoKeyError {
	t.Helper()
	l, err := p.Acquire(context.Background(), "gpt-4o-mini", maxTokens)
	if err == nil {
		t.Fatalf("Acquire: got key %d, want ErrNoKey", l.KeyID)
	}
	var nk *NoKeyError
	if !errors.As(err, &nk) || !errors.Is(err, ErrNoKey) {
		t.Fatalf("Acquire: got %v, want a *NoKeyError", err)
	}
	return nk
}

// use acquires a key, checks it is want, and reports o.
func use(t *testing.T, p Pool, want int64, o Outcome) {
	t.Helper()
	l := mustAcquire(t, p, 0)
	if l.KeyID != want {
		t.Fatalf("Acquire: got key %d, want %d", l.KeyID, want)
	}
	p.Report(l, o)
}
