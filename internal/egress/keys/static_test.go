package keys

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestStaticLeastUsedFirst(t *testing.T) {
	p, clk, _ := newStatic(t, 3, Limits{})

	// Fresh keys are used in order; each call adds tokens to its key.
	use(t, p, 1, Outcome{Status: 200, Tokens: 100})
	clk.Advance(time.Second)
	use(t, p, 2, Outcome{Status: 200, Tokens: 50})
	clk.Advance(time.Second)
	use(t, p, 3, Outcome{Status: 200, Tokens: 10})

	// Within the minute, each key has one call: the fewest tokens wins.
	clk.Advance(time.Second)
	use(t, p, 3, Outcome{Status: 200, Tokens: 100}) // now 110 tokens, 2 calls

	// Calls in the last minute come before tokens: key 3 has two.
	use(t, p, 2, Outcome{Status: 200})

	// A minute later only tokens today count: 100, 50, 110.
	clk.Advance(2 * time.Minute)
	use(t, p, 2, Outcome{Status: 200})
}

func TestStaticTiesGoToTheKeyUsedLongestAgo(t *testing.T) {
	p, clk, _ := newStatic(t, 3, Limits{})
	for _, want := range []int64{1, 2, 3} {
		use(t, p, want, Outcome{Status: 200})
		clk.Advance(time.Second)
	}
	clk.Advance(time.Minute)
	use(t, p, 1, Outcome{Status: 200})
	use(t, p, 2, Outcome{Status: 200})
}

func TestStaticRPMLimit(t *testing.T) {
	p, clk, _ := newStatic(t, 2, Limits{RPM: 2})

	var got []int64
	for range 4 {
		l := mustAcquire(t, p, 0)
		got = append(got, l.KeyID)
		p.Report(l, Outcome{Status: 200})
		clk.Advance(10 * time.Second)
	}
	slices.Sort(got)
	if want := []int64{1, 1, 2, 2}; !slices.Equal(got, want) {
		t.Fatalf("keys used: got %v, want %v", got, want)
	}

	// Both keys are at their limit: the first frees when its oldest call
	// leaves the minute (started 40 s ago).
	nk := noKey(t, p, 0)
	if nk.RateLimited != 2 || nk.RetryAfter != 20*time.Second {
		t.Fatalf("got %+v, want 2 rate limited, retry after 20s", *nk)
	}
	clk.Advance(20 * time.Second)
	mustAcquire(t, p, 0)
}

func TestStaticDailyTokenLimit(t *testing.T) {
	p, clk, log := newStatic(t, 1, Limits{DailyTokens: 1000})

	// max_tokens is held against the limit while the call runs.
	l := mustAcquire(t, p, 600)
	nk := noKey(t, p, 600)
	if nk.TokenLimited != 1 {
		t.Fatalf("got %+v, want 1 token limited", *nk)
	}
	small := mustAcquire(t, p, 400)
	p.Report(small, Outcome{Status: 200, Tokens: 300})

	// The call used less than it reserved: the rest is free again.
	p.Report(l, Outcome{Status: 200, Tokens: 500})
	l = mustAcquire(t, p, 200)

	// Reaching the limit exhausts the key until the next UTC midnight.
	p.Report(l, Outcome{Status: 200, Tokens: 200})
	if got := log.kinds(1); !slices.Equal(got, []EventKind{EventExhausted}) {
		t.Fatalf("events: got %v, want [exhausted]", got)
	}
	nk = noKey(t, p, 0)
	midnight := time.Date(2025, 3, 15, 0, 0, 0, 0, time.UTC)
	if want := midnight.Sub(clk.Now()); nk.RetryAfter != want || nk.Exhausted != 1 {
		t.Fatalf("got %+v, want exhausted, retry after %s", *nk, want)
	}
	clk.Set(midnight)
	mustAcquire(t, p, 1000)
}

func TestStaticCallLargerThanDailyLimitNeverFits(t *testing.T) {
	p, _, _ := newStatic(t, 1, Limits{DailyTokens: 100})
	nk := noKey(t, p, 101)
	if nk.TokenLimited != 1 || nk.RetryAfter != 0 {
		t.Fatalf("got %+v, want token limited with no retry time", *nk)
	}
}

func TestStaticAuthFailureDisables(t *testing.T) {
	for _, status := range []int{http.StatusUnauthorized, http.StatusForbidden} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			p, clk, log := newStatic(t, 2, Limits{})
			use(t, p, 1, Outcome{Status: status})

			if got := log.all(); len(got) != 1 || got[0].Kind != EventDisabled ||
				got[0].Status != status || got[0].Name != "env:KEY_A" {
				t.Fatalf("events: got %v, want one disabled event for key 1", got)
			}
			for range 3 {
				use(t, p, 2, Outcome{Status: 200})
				clk.Advance(24 * time.Hour) // disabled for good
			}
			if st := p.Status()[0].State; st != StateDisabled {
				t.Fatalf("state: got %s, want disabled", st)
			}

			use(t, p, 2, Outcome{Status: status})
			nk := noKey(t, p, 0)
			if nk.Disabled != 2 || nk.RetryAfter != 0 {
				t.Fatalf("got %+v, want 2 disabled, no retry time", *nk)
			}
		})
	}
}

func TestStaticRateLimitCooldown(t *testing.T) {
	now := newClock().Now()
	tests := []struct {
		name   string
		header http.Header
		want   time.Duration
	}{
		{"retry-after seconds", http.Header{"Retry-After": {"7"}}, 7 * time.Second},
		{"retry-after date", http.Header{
			"Retry-After": {now.Add(90 * time.Second).Format(http.TimeFormat)},
		}, 90 * time.Second},
		{"retry-after-ms", http.Header{"Retry-After-Ms": {"1500"}}, 1500 * time.Millisecond},
		{"spent requests budget", http.Header{
			"X-Ratelimit-Remaining-Requests": {"0"},
			"X-Ratelimit-Reset-Requests":     {"6m0s"},
			"X-Ratelimit-Remaining-Tokens":   {"1500"},
			"X-Ratelimit-Reset-Tokens":       {"1s"},
		}, 6 * time.Minute},
		{"burst, no budget spent", http.Header{
			"X-Ratelimit-Reset-Requests": {"20ms"},
			"X-Ratelimit-Reset-Tokens":   {"3s"},
		}, 20 * time.Millisecond},
		{"both hints: the later", http.Header{
			"Retry-After":                    {"2"},
			"X-Ratelimit-Remaining-Tokens":   {"0"},
			"X-Ratelimit-Reset-Tokens":       {"1m30.5s"},
			"X-Ratelimit-Remaining-Requests": {"9"},
		}, 90500 * time.Millisecond},
		{"no hint", http.Header{}, DefaultCooldown},
		{"hint above the cap", http.Header{"Retry-After": {"86400"}}, DefaultMaxCooldown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, clk, log := newStatic(t, 1, Limits{})
			l := mustAcquire(t, p, 0)
			p.Report(l, OutcomeFromResponse(429, tt.header, nil, clk.Now()))

			if ev := log.all(); len(ev) != 1 || ev[0].Kind != EventCooldown ||
				!ev[0].Until.Equal(clk.Now().Add(tt.want)) {
				t.Fatalf("events: got %v, want a cooldown for %s", ev, tt.want)
			}
			nk := noKey(t, p, 0)
			if nk.Cooling != 1 || nk.RetryAfter != max(tt.want, time.Second) {
				t.Fatalf("got %+v, want cooling, retry after %s", *nk, tt.want)
			}
			clk.Advance(tt.want - time.Millisecond)
			noKey(t, p, 0)
			clk.Advance(time.Millisecond)
			mustAcquire(t, p, 0)
		})
	}
}

func TestStaticCooldownIsOnlyExtended(t *testing.T) {
	p, clk, log := newStatic(t, 1, Limits{})
	a, b, c := mustAcquire(t, p, 0), mustAcquire(t, p, 0), mustAcquire(t, p, 0)
	start := clk.Now()

	p.Report(a, Outcome{Status: 429, RetryAfter: time.Minute})
	// A shorter hint answered later does not shorten it.
	clk.Advance(time.Second)
	p.Report(b, Outcome{Status: 429, RetryAfter: time.Second})
	clk.Advance(10 * time.Second)
	if nk := noKey(t, p, 0); nk.RetryAfter != 49*time.Second {
		t.Fatalf("retry after: got %s, want 49s", nk.RetryAfter)
	}

	// A longer one extends it.
	p.Report(c, Outcome{Status: 429, ResetAt: start.Add(2 * time.Minute)})
	clk.Set(start.Add(2*time.Minute - time.Millisecond))
	noKey(t, p, 0)
	clk.Set(start.Add(2 * time.Minute))
	mustAcquire(t, p, 0)

	want := []EventKind{EventCooldown, EventCooldown}
	if got := log.kinds(1); !slices.Equal(got, want) {
		t.Fatalf("events: got %v, want %v (no event for the shorter hint)", got, want)
	}
}

func TestStaticInsufficientQuotaExhausts(t *testing.T) {
	p, clk, log := newStatic(t, 2, Limits{})
	body := []byte(`{"error":{"message":"You exceeded your current quota",` +
		`"type":"insufficient_quota","param":null,"code":"insufficient_quota"}}`)
	l := mustAcquire(t, p, 0)
	p.Report(l, OutcomeFromResponse(429, http.Header{"Retry-After": {"1"}}, body, clk.Now()))

	ev := log.all()
	midnight := time.Date(2025, 3, 15, 0, 0, 0, 0, time.UTC)
	if len(ev) != 1 || ev[0].Kind != EventExhausted || ev[0].Reason != ReasonInsufficientQuota ||
		!ev[0].Until.Equal(midnight) {
		t.Fatalf("events: got %v, want exhausted until %s", ev, midnight)
	}
	clk.Advance(time.Hour) // far past the Retry-After
	use(t, p, 2, Outcome{Status: 200})
	use(t, p, 2, Outcome{Status: 200})
	clk.Set(midnight)
	use(t, p, 1, Outcome{Status: 200})
}

func TestStaticServerErrorMovesOn(t *testing.T) {
	p, clk, log := newStatic(t, 2, Limits{})
	use(t, p, 1, Outcome{Status: 200, Tokens: 10})
	clk.Advance(time.Minute)

	// Key 2 is the least used; after its 5xx, key 1 is.
	use(t, p, 2, Outcome{Status: 502})
	use(t, p, 1, Outcome{Status: 200})
	use(t, p, 1, Outcome{Status: 200})

	// A penalized key still serves when it is the only one eligible.
	use(t, p, 1, Outcome{Status: 503})
	clk.Advance(time.Second)
	use(t, p, 2, Outcome{Status: 200})

	// The penalty ends.
	clk.Advance(2 * time.Minute)
	use(t, p, 2, Outcome{Status: 200})
	if ev := log.all(); len(ev) != 0 {
		t.Fatalf("events: got %v, want none for 5xx", ev)
	}
}

func TestStaticPenalizedKeyServesWhenAlone(t *testing.T) {
	p, _, _ := newStatic(t, 1, Limits{})
	use(t, p, 1, Outcome{Status: 500})
	use(t, p, 1, Outcome{Status: 200})
}

func TestStaticNoAnswerChangesNothing(t *testing.T) {
	p, _, log := newStatic(t, 1, Limits{DailyTokens: 100})
	l := mustAcquire(t, p, 100)
	p.Report(l, Outcome{}) // network error: reservation released
	mustAcquire(t, p, 100)
	if ev := log.all(); len(ev) != 0 {
		t.Fatalf("events: got %v, want none", ev)
	}
}

func TestStaticReportIsCountedOnce(t *testing.T) {
	p, _, log := newStatic(t, 1, Limits{})
	l := mustAcquire(t, p, 0)
	p.Report(l, Outcome{Status: 200})
	p.Report(l, Outcome{Status: 401})
	p.Report(Lease{}, Outcome{Status: 401})
	use(t, p, 1, Outcome{Status: 200})
	if ev := log.all(); len(ev) != 0 {
		t.Fatalf("events: got %v, want none", ev)
	}
	if st := p.Status()[0]; st.InFlight != 0 || st.State != StateActive {
		t.Fatalf("status: got %+v, want active with nothing in flight", st)
	}
}

func TestStaticConcurrentUse(t *testing.T) {
	p, _, _ := newStatic(t, 4, Limits{RPM: 50})
	done := make(chan int64)
	for range 8 {
		go func() {
			var n int64
			for {
				l, err := p.Acquire(context.Background(), "m", 10)
				if err != nil {
					done <- n
					return
				}
				n++
				p.Report(l, Outcome{Status: 200, Tokens: 5})
			}
		}()
	}
	var total int64
	for range 8 {
		total += <-done
	}
	if total != 200 {
		t.Fatalf("calls admitted: got %d, want 4 keys x 50 rpm = 200", total)
	}
}

func TestStaticAcquireHonoursContext(t *testing.T) {
	p, _, _ := newStatic(t, 1, Limits{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Acquire(ctx, "m", 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func TestNewStaticRefuses(t *testing.T) {
	k := testKey(0)
	tests := []struct {
		name string
		keys []StaticKey
		want string
	}{
		{"none", nil, "no keys"},
		{"empty key", []StaticKey{{Source: "env:A"}}, "key 1 (env:A): empty key"},
		{"same key twice", []StaticKey{{Source: "env:A", Key: k}, {Source: "file:/k", Key: k}},
			"key 2 (file:/k): same key as key 1"},
		{"negative limit", []StaticKey{{Source: "env:A", Key: k, Limits: Limits{RPM: -1}}},
			"negative limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewStatic(tt.keys, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
