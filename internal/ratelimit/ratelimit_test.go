package ratelimit

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/testclock"
)

// fakeClock is the tests' settable clock.
type fakeClock = testclock.Clock

func newFakeClock() *fakeClock {
	return testclock.New(time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC))
}

// spend calls Allow n times and fails t unless every call is allowed.
func spend(t *testing.T, l *Limiter, name, addr string, n int) {
	t.Helper()
	for i := range n {
		if wait, ok := l.Allow(name, addr); !ok {
			t.Fatalf("%s %q call %d: refused (retry after %v), want allowed",
				addr, name, i+1, wait)
		}
	}
}

// refused fails t unless Allow refuses and returns want as the wait.
func refused(t *testing.T, l *Limiter, name, addr string, want time.Duration) {
	t.Helper()
	wait, ok := l.Allow(name, addr)
	if ok {
		t.Fatalf("%s %q: allowed, want refused", addr, name)
	}
	if wait != want {
		t.Fatalf("%s %q: got retry after %v, want %v", addr, name, wait, want)
	}
}

func TestBurstThenRefill(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := New(Options{Rate: 2, Burst: 3, Now: clock.Now}) // a token every 500 ms
	const a = "198.51.100.7"

	// A rested client may send the whole burst at once, then no more.
	spend(t, l, "", a, 3)
	refused(t, l, "", a, 500*time.Millisecond)

	// A refusal takes nothing: the wait shrinks with time alone.
	clock.Advance(200 * time.Millisecond)
	refused(t, l, "", a, 300*time.Millisecond)
	clock.Advance(300 * time.Millisecond)
	spend(t, l, "", a, 1)
	refused(t, l, "", a, 500*time.Millisecond)

	// A long rest refills the bucket up to the burst, not beyond.
	clock.Advance(time.Hour)
	spend(t, l, "", a, 3)
	refused(t, l, "", a, 500*time.Millisecond)
}

func TestDefaultBurst(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		rate  float64
		burst int
		want  int
	}{
		{"one second of a whole rate", 4, 0, 4},
		{"one second of a fractional rate, rounded up", 2.5, 0, 3},
		{"at least one", 0.2, 0, 1},
		{"negative burst is the default", 4, -7, 4},
		{"explicit burst", 4, 9, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := New(Options{Rate: tt.rate, Burst: tt.burst, Now: newFakeClock().Now})
			spend(t, l, "", "192.0.2.1", tt.want)
			if _, ok := l.Allow("", "192.0.2.1"); ok {
				t.Errorf("got more than %d requests allowed at once", tt.want)
			}
		})
	}
}

func TestClientsAreIndependent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		spent    string // the address that spends its bucket
		other    string
		separate bool // other still has its own full bucket
	}{
		{"two IPv4 addresses", "192.0.2.1", "192.0.2.2", true},
		{"IPv4 and its mapped IPv6 form", "192.0.2.1", "::ffff:192.0.2.1", false},
		{"one IPv6 /64", "2001:db8:1:2::1", "2001:db8:1:2:ffff::9", false},
		{"two IPv6 /64s", "2001:db8:1:2::1", "2001:db8:1:3::1", true},
		{"IPv6 zone ignored", "fe80::1%eth0", "fe80::2%eth1", false},
		{"not an address", "unix-socket", "other-socket", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := New(Options{Rate: 1, Burst: 2, Now: newFakeClock().Now})
			spend(t, l, "", tt.spent, 2)
			refused(t, l, "", tt.spent, time.Second)
			_, ok := l.Allow("", tt.other)
			if ok != tt.separate {
				t.Errorf("%s after %s spent its bucket: got allowed %v, want %v",
					tt.other, tt.spent, ok, tt.separate)
			}
		})
	}
}

func TestNamedBucketsAreIndependent(t *testing.T) {
	t.Parallel()
	l := New(Options{Rate: 1, Burst: 2, Now: newFakeClock().Now})
	const a = "192.0.2.1"
	spend(t, l, "", a, 2)
	refused(t, l, "", a, time.Second)
	spend(t, l, "health", a, 2)
	refused(t, l, "health", a, time.Second)
	if got := l.Len(); got != 2 {
		t.Errorf("got %d buckets, want 2", got)
	}
}

func TestLRUBound(t *testing.T) {
	t.Parallel()
	l := New(Options{Rate: 1, Burst: 1, MaxClients: 2, Now: newFakeClock().Now})
	spend(t, l, "", "192.0.2.1", 1)
	spend(t, l, "", "192.0.2.2", 1)
	refused(t, l, "", "192.0.2.1", time.Second) // .1 is now the most recent
	spend(t, l, "", "192.0.2.3", 1)             // evicts .2, the least recent

	if got := l.Len(); got != 2 {
		t.Fatalf("got %d buckets, want the bound 2", got)
	}
	// .1 was kept and is still limited; .2 was forgotten and starts full.
	refused(t, l, "", "192.0.2.1", time.Second)
	spend(t, l, "", "192.0.2.2", 1)
	for i := range 100 {
		_, _ = l.Allow("", fmt.Sprintf("198.51.100.%d", i))
	}
	if got := l.Len(); got != 2 {
		t.Errorf("after 100 more clients: got %d buckets, want 2", got)
	}
}

func TestDisabled(t *testing.T) {
	t.Parallel()
	var nilLimiter *Limiter
	tests := []struct {
		name string
		l    *Limiter
	}{
		{"nil", nilLimiter},
		{"zero options", New(Options{})},
		{"negative rate", New(Options{Rate: -1, Burst: 5})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.l.Enabled() {
				t.Error("got enabled, want disabled")
			}
			spend(t, tt.l, "", "192.0.2.1", 1000)
			if got := tt.l.Len(); got != 0 {
				t.Errorf("got %d buckets, want none kept", got)
			}
		})
	}
}

func TestSetLimits(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := New(Options{Rate: 1, Burst: 10, Now: clock.Now})
	const a = "192.0.2.1"
	spend(t, l, "", a, 1) // 9 left

	// A smaller burst caps what a bucket holds, and what was spent stays
	// spent: one of the two new tokens is gone.
	l.SetLimits(1, 2)
	spend(t, l, "", a, 1)
	refused(t, l, "", a, time.Second)
	clock.Advance(2 * time.Second)
	spend(t, l, "", a, 2)
	refused(t, l, "", a, time.Second)

	// Turning limiting off forgets every bucket.
	l.SetLimits(0, 0)
	spend(t, l, "", a, 50)
	if got := l.Len(); got != 0 {
		t.Errorf("disabled: got %d buckets, want 0", got)
	}

	// Back on, the client starts with a full bucket at the new rate.
	l.SetLimits(4, 3)
	spend(t, l, "", a, 3)
	refused(t, l, "", a, 250*time.Millisecond)
}

func TestClockBackwards(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := New(Options{Rate: 1, Burst: 1, Now: clock.Now})
	const a = "192.0.2.1"
	spend(t, l, "", a, 1)
	clock.Advance(-time.Hour) // a stepped clock must not mint tokens
	refused(t, l, "", a, time.Second)
	clock.Advance(time.Hour + time.Second)
	spend(t, l, "", a, 1)
}

func TestTinyRateWaitDoesNotOverflow(t *testing.T) {
	t.Parallel()
	l := New(Options{Rate: 1e-300, Burst: 1, Now: newFakeClock().Now})
	spend(t, l, "", "192.0.2.1", 1)
	wait, ok := l.Allow("", "192.0.2.1")
	if ok || wait <= 0 {
		t.Errorf("got wait %v allowed %v, want a positive wait and refused", wait, ok)
	}
}

func TestConcurrentCallersShareOneBucket(t *testing.T) {
	t.Parallel()
	l := New(Options{Rate: 1, Burst: 25, Now: newFakeClock().Now})
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if _, ok := l.Allow("", "192.0.2.1"); ok {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := allowed.Load(); got != 25 {
		t.Errorf("got %d of 400 concurrent calls allowed, want the burst 25", got)
	}
}
