package ratelimit

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
)

// FuzzBucket drives one client with arbitrary gaps between requests and
// checks the token bucket's promises: never more requests than the burst
// plus what the elapsed time refilled, and a refusal's wait is exactly
// long enough.
func FuzzBucket(f *testing.F) {
	f.Add(uint16(1000), uint8(3), []byte{0, 0, 0, 0, 1, 200, 0, 0})
	f.Add(uint16(1), uint8(1), []byte{255, 255, 0, 0, 0})
	f.Add(uint16(65535), uint8(0), []byte{1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Fuzz(func(t *testing.T, milliRate uint16, burst uint8, gaps []byte) {
		if milliRate == 0 {
			return // rate zero means off, tested elsewhere
		}
		rate := float64(milliRate) / 1000
		clock := newFakeClock()
		l := New(Options{Rate: rate, Burst: int(burst), Now: clock.Now})
		lim := l.limits.Load()
		size := int64(burst)
		if burst < 1 {
			size = int64(max(1, math.Ceil(rate)))
		}
		start := clock.Now()
		var allowed int64
		for _, g := range gaps {
			clock.Advance(time.Duration(g) * 7 * time.Millisecond)
			wait, ok := l.Allow("", "192.0.2.1")
			if !ok {
				checkWait(t, l, clock, wait)
			}
			allowed++ // checkWait spent the token the wait promised
			refilled := int64(clock.Now().Sub(start) / lim.interval)
			if limit := size + refilled; allowed > limit {
				t.Fatalf("rate %v burst %d: %d allowed within %v, limit %d",
					rate, size, allowed, clock.Now().Sub(start), limit)
			}
		}
	})
}

// checkWait checks that a refusal's wait is positive, that a moment less
// is not enough, and that the full wait is; it spends that token.
func checkWait(t *testing.T, l *Limiter, clock *fakeClock, wait time.Duration) {
	t.Helper()
	if wait <= 0 {
		t.Fatalf("refused with wait %v, want positive", wait)
	}
	clock.Advance(wait - 1)
	if _, ok := l.Allow("", "192.0.2.1"); ok {
		t.Fatalf("allowed 1ns before the promised wait %v", wait)
	}
	clock.Advance(1)
	if again, ok := l.Allow("", "192.0.2.1"); !ok {
		t.Fatalf("refused again (wait %v) after waiting the promised %v", again, wait)
	}
}

// FuzzClientKey checks the address grouping on arbitrary input: IPv4
// addresses stand alone in canonical form, IPv6 addresses map to the /64
// that holds them, and the key never depends on a zone.
func FuzzClientKey(f *testing.F) {
	for _, s := range []string{
		"192.0.2.1", "::ffff:192.0.2.1", "2001:db8::1", "fe80::1%eth0",
		"", "not-an-ip", "[::1]", "1.2.3.4:80", "::",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		key := httpx.ClientKey(addr)
		ip, err := netip.ParseAddr(addr)
		if err != nil {
			if key != addr {
				t.Fatalf("ClientKey(%q) = %q, want the input unchanged", addr, key)
			}
			return
		}
		ip = ip.WithZone("").Unmap()
		if ip.Is4() {
			if key != ip.String() {
				t.Fatalf("ClientKey(%q) = %q, want %q", addr, key, ip)
			}
			return
		}
		p, err := netip.ParsePrefix(key)
		if err != nil || p.Bits() != 64 || !p.Contains(ip) || p != p.Masked() {
			t.Fatalf("ClientKey(%q) = %q, want the masked /64 holding it", addr, key)
		}
	})
}
