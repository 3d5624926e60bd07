package keys

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeplatform"
)

const (
	testAutomation = 7
	testToken      = "3f9a6c1e0b7d4a2f8e5c9b1d0a6f3e7c2b8d4a1f9e6c3b0d7a5f2e8c1b9d6a4f"
)

// leasedEnv is a Leased pool talking to a fake platform on loopback.
type leasedEnv struct {
	clk      *fakeClock
	platform *fakeplatform.Platform
	pool     *Leased
	events   *eventLog
}

// newLeased starts a fake platform holding keys and a pool leasing from
// it. tweak may change the options before the pool is built.
func newLeased(t *testing.T, keys []fakeplatform.Key, tweak func(*LeaseOptions)) *leasedEnv {
	t.Helper()
	env := &leasedEnv{clk: newClock(), events: &eventLog{}}
	env.platform = fakeplatform.New(fakeplatform.Options{
		Now: env.clk.Now, LeaseTTL: 10 * time.Minute,
	})
	env.platform.AddAutomation(testAutomation, testToken)
	for _, k := range keys {
		k.AutomationID = testAutomation
		env.platform.AddKey(k)
	}
	srv := httptest.NewServer(env.platform.Handler())
	t.Cleanup(srv.Close)

	opts := LeaseOptions{
		Options:      Options{Now: env.clk.Now, OnEvent: env.events.add},
		PlatformURL:  srv.URL,
		AutomationID: testAutomation,
		Token:        NewSecret(testToken),
		Client:       srv.Client(),
	}
	if tweak != nil {
		tweak(&opts)
	}
	p, err := NewLeased(opts)
	if err != nil {
		t.Fatalf("NewLeased: %v", err)
	}
	env.pool = p
	return env
}

// platformKey is a fake platform key with a realistic value.
func platformKey(id int64) fakeplatform.Key {
	return fakeplatform.Key{ID: id, APIKey: testKey(int(id)).Reveal()}
}

func (e *leasedEnv) leaseCalls() int { return e.platform.Calls(fakeplatform.EndpointLease) }

// waitRenewal waits until no fetch holds the pool's fetch slot: a
// background renewal started by Acquire has finished.
func (e *leasedEnv) waitRenewal() {
	e.pool.fetching <- struct{}{}
	<-e.pool.fetching
}

// roundTripFunc is an http.RoundTripper from a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestLeasedRenewalNeverDelaysACall: a call that finds its lease inside
// the refresh margin goes on with it while the platform is still
// answering the renewal.
func TestLeasedRenewalNeverDelaysACall(t *testing.T) {
	release := make(chan struct{})
	var hang atomic.Bool
	env := newLeased(t, []fakeplatform.Key{platformKey(12)}, func(o *LeaseOptions) {
		o.RefreshMargin = time.Minute
		base := o.Client.Transport
		hanging := func(r *http.Request) (*http.Response, error) {
			if hang.Load() {
				select { // a platform that hangs (bounded, so a regression fails below)
				case <-release:
				case <-time.After(10 * time.Second):
				}
			}
			return base.RoundTrip(r)
		}
		o.Client = &http.Client{Transport: roundTripFunc(hanging)}
	})
	first := mustAcquire(t, env.pool, 0)
	env.pool.Report(first, Outcome{Status: 200})

	env.clk.Advance(9*time.Minute + 30*time.Second)
	hang.Store(true)
	l := mustAcquire(t, env.pool, 0)
	select {
	case env.pool.fetching <- struct{}{}:
		<-env.pool.fetching
		t.Fatal("Acquire returned after the renewal ended: the call waited for the platform")
	default: // the renewal is still waiting for the platform
	}
	if l.KeyID != 12 || !l.ExpiresAt.Equal(first.ExpiresAt) {
		t.Errorf("got %v until %s, want the cached lease", l, l.ExpiresAt)
	}
	env.pool.Report(l, Outcome{Status: 200})
	close(release)
	env.waitRenewal()
	if next := mustAcquire(t, env.pool, 0); !next.ExpiresAt.After(first.ExpiresAt) {
		t.Errorf("after the renewal: expiry %s, want later than %s",
			next.ExpiresAt, first.ExpiresAt)
	}
}

func TestLeasedCachesOneLeaseForManyCalls(t *testing.T) {
	env := newLeased(t, []fakeplatform.Key{platformKey(12)}, nil)

	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := env.pool.Acquire(context.Background(), "gpt-4o", 100)
			if err != nil {
				errs <- err
				return
			}
			if l.KeyID != 12 || !l.Platform || l.Key.Reveal() != testKey(12).Reveal() {
				errs <- errors.New("wrong lease: " + l.String())
			}
			env.pool.Report(l, Outcome{Status: 200, Tokens: 10})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := env.leaseCalls(); n != 1 {
		t.Fatalf("platform lease calls: got %d, want 1", n)
	}
	recs := env.platform.Leases()
	if recs[0].Model != "gpt-4o" || recs[0].MaxTokens != 100 || recs[0].KeyID != 12 {
		t.Fatalf("lease request: got %+v, want model gpt-4o, max_tokens 100", recs[0])
	}
	if st := env.pool.Status(); len(st) != 1 || st[0].TokensToday != 500 {
		t.Fatalf("status: got %+v, want one key with 500 tokens", st)
	}
}

func TestLeasedRefreshesBeforeExpiry(t *testing.T) {
	env := newLeased(t, []fakeplatform.Key{platformKey(12)}, func(o *LeaseOptions) {
		o.RefreshMargin = time.Minute
	})
	first := mustAcquire(t, env.pool, 0)
	env.pool.Report(first, Outcome{Status: 200})

	// Well before the margin: served from the cache.
	env.clk.Advance(8 * time.Minute)
	use(t, env.pool, 12, Outcome{Status: 200})
	if n := env.leaseCalls(); n != 1 {
		t.Fatalf("lease calls before the margin: got %d, want 1", n)
	}

	// Inside the margin: the call is served at once and the lease renewed
	// in the background.
	env.clk.Advance(90 * time.Second)
	l := mustAcquire(t, env.pool, 0)
	env.pool.Report(l, Outcome{Status: 200})
	env.waitRenewal()
	if n := env.leaseCalls(); n != 2 {
		t.Fatalf("lease calls inside the margin: got %d, want 2", n)
	}
	if !l.ExpiresAt.Equal(first.ExpiresAt) {
		t.Fatalf("renewing call: got expiry %s, want the old lease's %s",
			l.ExpiresAt, first.ExpiresAt)
	}
	next := mustAcquire(t, env.pool, 0)
	if !next.ExpiresAt.After(first.ExpiresAt) {
		t.Fatalf("after renewal: got expiry %s, want later than %s",
			next.ExpiresAt, first.ExpiresAt)
	}
	env.pool.Report(next, Outcome{Status: 200})

	// The renewal is the same key: its usage carried over.
	if st := env.pool.Status(); len(st) != 1 || st[0].RequestsLastMinute != 2 {
		t.Fatalf("status: got %+v, want one key with 2 calls this minute", st)
	}
}

func TestLeasedExpiryIsHonoured(t *testing.T) {
	env := newLeased(t, []fakeplatform.Key{platformKey(12)}, func(o *LeaseOptions) {
		o.RefreshMargin = time.Nanosecond
	})
	first := mustAcquire(t, env.pool, 0)
	env.pool.Report(first, Outcome{Status: 200})

	env.clk.Set(first.ExpiresAt)
	l := mustAcquire(t, env.pool, 0)
	if !l.ExpiresAt.After(env.clk.Now()) {
		t.Fatalf("after expiry: got a lease expiring %s, want a new one", l.ExpiresAt)
	}
	if n := env.leaseCalls(); n != 2 {
		t.Fatalf("lease calls: got %d, want 2", n)
	}
}

func TestLeasedPlatformDown(t *testing.T) {
	env := newLeased(t, []fakeplatform.Key{platformKey(12)}, nil)
	first := mustAcquire(t, env.pool, 0)
	env.pool.Report(first, Outcome{Status: 200})
	env.platform.SetFault(fakeplatform.EndpointLease, fakeplatform.Fault{Down: true})

	// Valid cached leases keep working, through the renewal window too.
	for _, at := range []time.Duration{time.Minute, 9 * time.Minute, 10*time.Minute - time.Second} {
		env.clk.Set(first.ExpiresAt.Add(at - 10*time.Minute))
		use(t, env.pool, 12, Outcome{Status: 200})
	}

	// Once the lease expired, the error says why.
	env.clk.Set(first.ExpiresAt)
	_, err := env.pool.Acquire(context.Background(), "gpt-4o", 0)
	if !errors.Is(err, ErrNoKey) || !errors.Is(err, ErrPlatformUnavailable) ||
		!strings.Contains(err.Error(), "no valid lease") {
		t.Fatalf("got %v, want ErrNoKey and ErrPlatformUnavailable saying no valid lease", err)
	}

	// The platform is back: so are the keys.
	env.platform.ClearFault(fakeplatform.EndpointLease)
	env.clk.Advance(time.Second)
	use(t, env.pool, 12, Outcome{Status: 200})
}

func TestLeasedBreakerOpens(t *testing.T) {
	env := newLeased(t, []fakeplatform.Key{platformKey(12)}, func(o *LeaseOptions) {
		o.BreakerFailures = 3
		o.BreakerOpenFor = time.Hour
	})
	env.platform.SetFault(fakeplatform.EndpointLease, fakeplatform.Fault{Status: 500})
	for i := range 3 {
		_, err := env.pool.Acquire(context.Background(), "m", 0)
		if !errors.Is(err, ErrPlatformUnavailable) || !strings.Contains(err.Error(), "status 500") {
			t.Fatalf("call %d: got %v, want the platform's 500", i, err)
		}
	}
	_, err := env.pool.Acquire(context.Background(), "m", 0)
	if !errors.Is(err, ErrPlatformUnavailable) || !strings.Contains(err.Error(), "breaker open") {
		t.Fatalf("got %v, want the open breaker", err)
	}
	if n := env.leaseCalls(); n != 3 {
		t.Fatalf("lease calls: got %d, want 3 (none once open)", n)
	}
	if s := env.pool.BreakerState(); s != "open" {
		t.Fatalf("breaker: got %s, want open", s)
	}
}

func TestLeasedRefusalsDoNotOpenTheBreaker(t *testing.T) {
	env := newLeased(t, nil, func(o *LeaseOptions) {
		o.BreakerFailures = 2
		o.Token = NewSecret("wrong-token-value-0123456789")
	})
	for range 4 {
		_, err := env.pool.Acquire(context.Background(), "m", 0)
		if !errors.Is(err, ErrPlatformRefused) || !strings.Contains(err.Error(), "status 401") {
			t.Fatalf("got %v, want the platform's 401", err)
		}
		env.clk.Advance(2 * time.Second)
	}
	if s := env.pool.BreakerState(); s != "closed" {
		t.Fatalf("breaker: got %s, want closed", s)
	}
}

func TestLeasedNoKeyOnPlatform(t *testing.T) {
	env := newLeased(t, nil, nil)
	_, err := env.pool.Acquire(context.Background(), "m", 0)
	if !errors.Is(err, ErrNoKey) || !errors.Is(err, ErrPlatformRefused) ||
		!strings.Contains(err.Error(), "success false") {
		t.Fatalf("got %v, want ErrNoKey from the platform's refusal", err)
	}
	// Asked again at once: the platform is not asked again.
	_, err = env.pool.Acquire(context.Background(), "m", 0)
	if !errors.Is(err, ErrPlatformRefused) {
		t.Fatalf("second call: got %v, want the remembered refusal", err)
	}
	if n := env.leaseCalls(); n != 1 {
		t.Fatalf("lease calls: got %d, want 1 within MinFetchInterval", n)
	}
}

func TestLeasedAuthFailureEvictsAndDisables(t *testing.T) {
	env := newLeased(t, []fakeplatform.Key{platformKey(12), platformKey(13)}, nil)
	use(t, env.pool, 12, Outcome{Status: 401})
	if got := env.events.kinds(12); len(got) != 2 || got[1] != EventDisabled {
		t.Fatalf("events of key 12: got %v, want leased then disabled", got)
	}
	if st := env.pool.Status(); len(st) != 0 {
		t.Fatalf("status: got %+v, want the lease evicted", st)
	}

	// The platform hands the same key again: it is not used.
	env.clk.Advance(2 * time.Second)
	_, err := env.pool.Acquire(context.Background(), "m", 0)
	rejected := "key 12, which the upstream rejected"
	if !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), rejected) {
		t.Fatalf("got %v, want the rejected key refused", err)
	}

	// The platform learns of it and leases another key.
	env.platform.SetKeyDisabled(12, true)
	env.clk.Advance(2 * time.Second)
	use(t, env.pool, 13, Outcome{Status: 200})
}

func TestLeasedCooldownKeepsTheLease(t *testing.T) {
	env := newLeased(t, []fakeplatform.Key{platformKey(12)}, nil)
	use(t, env.pool, 12, Outcome{Status: 429, RetryAfter: 30 * time.Second})

	// The pool asks for another key; the platform has only this one.
	env.clk.Advance(2 * time.Second)
	nk := noKey(t, env.pool, 0)
	if nk.Cooling != 1 || nk.RetryAfter != 28*time.Second {
		t.Fatalf("got %+v, want 1 cooling, retry after 28s", *nk)
	}
	if n := env.leaseCalls(); n != 2 {
		t.Fatalf("lease calls: got %d, want 2", n)
	}

	// Asked again at once, the platform that just answered is left alone.
	noKey(t, env.pool, 0)
	if n := env.leaseCalls(); n != 2 {
		t.Fatalf("lease calls: got %d, want still 2 within MinFetchInterval", n)
	}
	env.clk.Advance(28 * time.Second)
	use(t, env.pool, 12, Outcome{Status: 200})
}

func TestLeasedUsageLimitsFromTheLease(t *testing.T) {
	k := platformKey(12)
	k.RPMLimit, k.DailyTokenLimit = 2, 1000
	env := newLeased(t, []fakeplatform.Key{k}, nil)
	use(t, env.pool, 12, Outcome{Status: 200})
	use(t, env.pool, 12, Outcome{Status: 200})
	if nk := noKey(t, env.pool, 0); nk.RateLimited != 1 {
		t.Fatalf("got %+v, want the rpm limit from usage_limits", *nk)
	}
	env.clk.Advance(time.Minute)
	if nk := noKey(t, env.pool, 1001); nk.TokenLimited != 1 {
		t.Fatalf("got %+v, want the daily token limit from usage_limits", *nk)
	}
}

func TestNewLeasedRefuses(t *testing.T) {
	good := LeaseOptions{
		PlatformURL: "http://127.0.0.1:1", AutomationID: 1, Token: NewSecret("t"),
	}
	tests := []struct {
		name  string
		tweak func(*LeaseOptions)
	}{
		{"no scheme", func(o *LeaseOptions) { o.PlatformURL = "127.0.0.1:8000" }},
		{"ftp", func(o *LeaseOptions) { o.PlatformURL = "ftp://127.0.0.1" }},
		{"credentials", func(o *LeaseOptions) { o.PlatformURL = "http://u:p@127.0.0.1" }},
		{"no automation", func(o *LeaseOptions) { o.AutomationID = 0 }},
		{"no token", func(o *LeaseOptions) { o.Token = Secret{} }},
		{"two tokens", func(o *LeaseOptions) { o.TokenFunc = func() string { return "t" } }},
	}
	if _, err := NewLeased(good); err != nil {
		t.Fatalf("good options: %v", err)
	}
	byFunc := good
	byFunc.Token, byFunc.TokenFunc = Secret{}, func() string { return "t" }
	if _, err := NewLeased(byFunc); err != nil {
		t.Fatalf("good options with TokenFunc: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good
			tt.tweak(&o)
			if _, err := NewLeased(o); err == nil {
				t.Fatal("got no error")
			}
		})
	}
}

func TestLeasedBreakerClosesAfterRecovery(t *testing.T) {
	env := newLeased(t, []fakeplatform.Key{platformKey(12)}, func(o *LeaseOptions) {
		o.BreakerFailures = 1
		o.BreakerOpenFor = 10 * time.Millisecond // gobreaker keeps wall time
	})
	env.platform.SetFault(fakeplatform.EndpointLease, fakeplatform.Fault{Status: 503})
	_, err := env.pool.Acquire(context.Background(), "m", 0)
	if !errors.Is(err, ErrPlatformUnavailable) {
		t.Fatalf("got %v, want the platform's 503", err)
	}
	env.platform.ClearFault(fakeplatform.EndpointLease)

	// Poll until the open time is over; the half-open trial then succeeds.
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := env.pool.Acquire(context.Background(), "m", 0)
		if err == nil {
			env.pool.Report(l, Outcome{Status: 200})
			break
		}
		if !strings.Contains(err.Error(), "breaker open") || time.Now().After(deadline) {
			t.Fatalf("got %v, want the breaker to let a trial through", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := env.pool.BreakerState(); s != "closed" {
		t.Fatalf("breaker: got %s, want closed", s)
	}
}

// TestLeasedTokenFuncFollowsRotation: with TokenFunc, each lease call
// sends the token in effect, so a rotated token keeps leases coming; the
// token never shows in an error.
func TestLeasedTokenFuncFollowsRotation(t *testing.T) {
	const rotated = "9c2e7b4a1f6d3e8c0b5a2f7e4d1c9b6a3f0e8d5c2b7a4f1e6d3c0b9a8f5e2d7c"
	var token atomic.Value
	token.Store(testToken)
	env := newLeased(t, []fakeplatform.Key{platformKey(12)}, func(o *LeaseOptions) {
		o.Token = Secret{}
		o.TokenFunc = func() string { return token.Load().(string) }
		o.RefreshMargin = time.Nanosecond
	})
	first := mustAcquire(t, env.pool, 0)
	env.pool.Report(first, Outcome{Status: 200})

	// The platform rotates the token; until the sidecar follows, leases
	// are refused, and no error shows either token.
	env.platform.AddAutomation(testAutomation, rotated)
	env.clk.Set(first.ExpiresAt)
	_, err := env.pool.Acquire(t.Context(), "m", 0)
	if !errors.Is(err, ErrPlatformRefused) || !strings.Contains(err.Error(), "status 401") {
		t.Fatalf("stale token: got %v, want the platform's 401", err)
	}
	if leaks(err.Error(), testToken, rotated) {
		t.Fatalf("the error shows a token: %v", err)
	}

	// The configuration reload brings the new token: the next call uses it.
	token.Store(rotated)
	env.clk.Advance(2 * time.Second)
	l := mustAcquire(t, env.pool, 0)
	env.pool.Report(l, Outcome{Status: 200})
	if l.KeyID != 12 || !l.ExpiresAt.After(first.ExpiresAt) {
		t.Fatalf("after the rotation: got %v until %s, want a new lease of key 12",
			l, l.ExpiresAt)
	}

	// An empty token fails the call before anything is sent.
	token.Store("")
	env.clk.Set(l.ExpiresAt)
	calls := env.leaseCalls()
	_, err = env.pool.Acquire(t.Context(), "m", 0)
	if !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), "service token is empty") {
		t.Fatalf("empty token: got %v, want ErrNoKey naming the empty token", err)
	}
	if n := env.leaseCalls(); n != calls {
		t.Fatalf("lease calls with an empty token: got %d, want %d", n, calls)
	}
	if s := env.pool.BreakerState(); s != "closed" {
		t.Fatalf("breaker after an empty token: got %s, want closed", s)
	}
}

// hangingPlatform makes the pool's platform calls hang, once hang is set,
// until their context ends; each hanging call is announced on entered
// and its context's error sent to ended.
type hangingPlatform struct {
	hang    atomic.Bool
	entered chan struct{}
	ended   chan error
}

// install wraps the options' client (before the pool is built) and sets
// a CallTimeout no test waits for.
func (h *hangingPlatform) install(o *LeaseOptions) {
	h.entered, h.ended = make(chan struct{}, 4), make(chan error, 4)
	o.CallTimeout = time.Minute
	base := o.Client.Transport
	o.Client = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if !h.hang.Load() {
			return base.RoundTrip(r)
		}
		h.entered <- struct{}{}
		<-r.Context().Done()
		h.ended <- r.Context().Err()
		return nil, r.Context().Err()
	})}
}

// receive waits for one value of ch, bounded so that a regression fails.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// TestLeasedCloseStopsTheRenewal: Close cancels a renewal waiting for the
// platform and returns once it ended; then Acquire fails with ErrClosed
// and the platform is not called again, while Report still takes back a
// lease handed out before.
func TestLeasedCloseStopsTheRenewal(t *testing.T) {
	hp := &hangingPlatform{}
	env := newLeased(t, []fakeplatform.Key{platformKey(12)}, func(o *LeaseOptions) {
		o.RefreshMargin = time.Minute
		hp.install(o)
	})
	first := mustAcquire(t, env.pool, 0)
	env.pool.Report(first, Outcome{Status: 200})

	// A call inside the refresh margin starts a renewal, which hangs.
	env.clk.Advance(9*time.Minute + 30*time.Second)
	hp.hang.Store(true)
	inFlight := mustAcquire(t, env.pool, 0)
	receive(t, hp.entered, "the renewal to call the platform")

	env.pool.Close()
	select {
	case env.pool.fetching <- struct{}{}:
		<-env.pool.fetching
	default:
		t.Fatal("Close returned while the renewal was still running")
	}
	if err := receive(t, hp.ended, "the renewal to end"); !errors.Is(err, context.Canceled) {
		t.Fatalf("renewal's context: got %v, want context.Canceled", err)
	}

	// Closed: no key, no platform call; a lease handed out before is
	// still taken back.
	calls := env.leaseCalls()
	_, err := env.pool.Acquire(t.Context(), "m", 0)
	if !errors.Is(err, ErrClosed) || !errors.Is(err, ErrNoKey) {
		t.Fatalf("Acquire after Close: got %v, want ErrClosed and ErrNoKey", err)
	}
	if n := env.leaseCalls(); n != calls {
		t.Fatalf("lease calls after Close: got %d, want %d", n, calls)
	}
	env.pool.Report(inFlight, Outcome{Status: 200, Tokens: 5})
	if st := env.pool.Status(); len(st) != 1 || st[0].InFlight != 0 || st[0].TokensToday != 5 {
		t.Fatalf("status after the late report: got %+v, want nothing in flight, 5 tokens", st)
	}
	env.pool.Close() // a second Close is harmless
}

// TestLeasedCloseCutsAWaitingAcquire: an Acquire waiting for the
// platform, and one waiting for its turn, end with ErrClosed at Close.
func TestLeasedCloseCutsAWaitingAcquire(t *testing.T) {
	hp := &hangingPlatform{}
	env := newLeased(t, []fakeplatform.Key{platformKey(12)}, hp.install)
	hp.hang.Store(true)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := env.pool.Acquire(context.Background(), "m", 0)
			errs <- err
		}()
	}
	receive(t, hp.entered, "a fetch to call the platform")

	env.pool.Close()
	for range 2 {
		if err := receive(t, errs, "Acquire to return"); !errors.Is(err, ErrClosed) {
			t.Fatalf("Acquire cut by Close: got %v, want ErrClosed", err)
		}
	}
}
