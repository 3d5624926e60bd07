package auth

import (
	"fmt"
	"testing"
	"time"
)

func TestLimiterBudgetAndRefill(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := NewLimiter(3, 0, clock.Now) // one attempt refills every 20 s
	const a = "198.51.100.7"

	// Three failures are allowed, the fourth attempt is not.
	for i := range 3 {
		if wait, ok := l.Allow(a); !ok {
			t.Fatalf("attempt %d: refused (retry after %v), want allowed", i+1, wait)
		}
		l.Fail(a)
	}
	wait, ok := l.Allow(a)
	if ok || wait != 20*time.Second {
		t.Fatalf("attempt 4: got ok %v wait %v, want refused for 20s", ok, wait)
	}

	// Just before the refill it is still refused, with the rest to wait.
	clock.Advance(19*time.Second + 500*time.Millisecond)
	if wait, ok := l.Allow(a); ok || wait != 500*time.Millisecond {
		t.Fatalf("at 19.5s: got ok %v wait %v, want refused for 500ms", ok, wait)
	}

	// One attempt's worth has refilled: one more try, then refused again.
	clock.Advance(500 * time.Millisecond)
	if _, ok := l.Allow(a); !ok {
		t.Fatalf("at 20s: refused, want allowed")
	}
	l.Fail(a)
	if _, ok := l.Allow(a); ok {
		t.Fatalf("after the refilled attempt failed: allowed, want refused")
	}

	// A full minute of quiet restores the whole budget and forgets a.
	clock.Advance(time.Minute)
	for i := range 3 {
		if _, ok := l.Allow(a); !ok {
			t.Fatalf("after a minute, attempt %d: refused, want allowed", i+1)
		}
		l.Fail(a)
	}
	if _, ok := l.Allow(a); ok {
		t.Fatalf("after a minute, attempt 4: allowed, want refused")
	}
}

func TestLimiterForgetsRecoveredClients(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := NewLimiter(60, 0, clock.Now)
	l.Fail("198.51.100.7")
	if got := l.Len(); got != 1 {
		t.Fatalf("got %d clients, want 1", got)
	}
	clock.Advance(time.Second)
	l.Allow("198.51.100.7")
	if got := l.Len(); got != 0 {
		t.Errorf("got %d clients after the bucket refilled, want 0", got)
	}
}

func TestLimiterClientsIndependent(t *testing.T) {
	t.Parallel()
	l := NewLimiter(1, 0, newFakeClock().Now)
	l.Fail("198.51.100.7")
	if _, ok := l.Allow("198.51.100.7"); ok {
		t.Errorf("failing client allowed, want refused")
	}
	for _, other := range []string{"198.51.100.8", "2001:db8:1::1", "unix-peer"} {
		if _, ok := l.Allow(other); !ok {
			t.Errorf("%s refused for another client's failure", other)
		}
	}
}

func TestLimiterAddressGrouping(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		fail, try  string
		wantShared bool
	}{
		{"same IPv6 /64", "2001:db8:1:2::1", "2001:db8:1:2:ffff::9", true},
		{"other IPv6 /64", "2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"IPv6 zone ignored", "fe80::1%eth0", "fe80::2", true},
		{"IPv4-mapped is IPv4", "::ffff:198.51.100.7", "198.51.100.7", true},
		{"IPv4 neighbours apart", "198.51.100.7", "198.51.100.8", false},
		{"not an IP stands alone", "@", "@", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := NewLimiter(1, 0, newFakeClock().Now)
			l.Fail(tt.fail)
			if _, ok := l.Allow(tt.try); ok == tt.wantShared {
				t.Errorf("got allowed %v, want %v", ok, !tt.wantShared)
			}
		})
	}
}

func TestLimiterBounded(t *testing.T) {
	t.Parallel()
	l := NewLimiter(1, 4, newFakeClock().Now)
	for i := range 10 {
		l.Fail(fmt.Sprintf("198.51.100.%d", i))
	}
	if got := l.Len(); got != 4 {
		t.Errorf("got %d clients, want the bound 4", got)
	}
	// The oldest were forgotten, the newest are remembered.
	if _, ok := l.Allow("198.51.100.0"); !ok {
		t.Errorf("evicted client refused, want allowed")
	}
	if _, ok := l.Allow("198.51.100.9"); ok {
		t.Errorf("recent client allowed, want refused")
	}
}

func TestLimiterOff(t *testing.T) {
	t.Parallel()
	for name, l := range map[string]*Limiter{
		"nil":  nil,
		"zero": NewLimiter(0, 0, nil),
	} {
		for range 100 {
			l.Fail("198.51.100.7")
		}
		if _, ok := l.Allow("198.51.100.7"); !ok {
			t.Errorf("%s limiter refused, want it to limit nothing", name)
		}
		if got := l.Len(); got != 0 {
			t.Errorf("%s limiter holds %d clients, want 0", name, got)
		}
	}
}
