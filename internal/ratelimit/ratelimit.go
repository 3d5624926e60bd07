package ratelimit

import (
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
)

// DefaultMaxClients is the number of buckets a Limiter keeps when
// Options.MaxClients is zero.
const DefaultMaxClients = 10000

// Options configures a Limiter. The zero value limits nothing.
type Options struct {
	// Rate is how many tokens a bucket regains a second. Zero or less
	// turns limiting off: every request passes and no bucket is kept. A
	// rate under one token a year counts as one a year.
	Rate float64

	// Burst is how many tokens a bucket holds, the number of requests a
	// rested client may send at once. Below one means one second's worth
	// of Rate, rounded up, and at least one.
	Burst int

	// MaxClients bounds the buckets kept (client and bucket name pairs).
	// Zero or less means DefaultMaxClients.
	MaxClients int

	// Now is the clock. Nil means time.Now.
	Now func() time.Time

	// Classify names the bucket a request draws from, so one client has
	// one bucket per name ("" is the default bucket), and reports whether
	// the request is limited at all; false lets it pass without taking a
	// token. Nil puts every request in the default bucket. It must not
	// read the body.
	Classify func(r *http.Request) (bucket string, limited bool)

	// OnLimit, when set, is called for each refused request with the
	// wait it was told, after the bucket lock is released (for metrics
	// and logs). It must not write to the response.
	OnLimit func(r *http.Request, retryAfter time.Duration)
}

// Limiter holds one token bucket per client address and bucket name. It
// is safe for concurrent use. A nil *Limiter limits nothing.
//
// A bucket is kept as the time it will be full again, so the arithmetic
// is exact integer time: with one token worth interval, a bucket full at
// time f holds burst - (f-now)/interval tokens at now.
type Limiter struct {
	now      func() time.Time
	classify func(*http.Request) (string, bool)
	onLimit  func(*http.Request, time.Duration)

	// limits is read without the lock on every request; nil means off.
	limits atomic.Pointer[limits]

	mu sync.Mutex
	// buckets maps a bucket to the time it will be full again; an absent
	// bucket is full. Guarded by mu.
	buckets *simplelru.LRU[bucketKey, time.Time]
}

// maxInterval bounds the time one token takes to refill, so that the
// arithmetic stays far from overflow for any rate.
const maxInterval = 365 * 24 * time.Hour

// limits are the bucket parameters in force.
type limits struct {
	interval time.Duration // refill time of one token, >= 1ns
	// slack is how far in the future a bucket's full time may lie while
	// it still holds a token: (burst-1) intervals.
	slack time.Duration
}

// bucketKey identifies one bucket.
type bucketKey struct {
	name   string
	client string
}

// New returns a Limiter configured by opts.
func New(opts Options) *Limiter {
	l := &Limiter{
		now:      opts.Now,
		classify: opts.Classify,
		onLimit:  opts.OnLimit,
	}
	if l.now == nil {
		l.now = time.Now
	}
	size := opts.MaxClients
	if size <= 0 {
		size = DefaultMaxClients
	}
	// NewLRU fails only for a size below one.
	l.buckets, _ = simplelru.NewLRU[bucketKey, time.Time](size, nil)
	l.SetLimits(opts.Rate, opts.Burst)
	return l
}

// SetLimits changes the rate and burst, with the meaning they have in
// Options, for every bucket from now on; a configuration reload calls it.
// A bucket keeps what it spent, but holds no more than the new burst and
// is never less than empty. A rate of zero
// or less turns limiting off and forgets every bucket.
func (l *Limiter) SetLimits(rate float64, burst int) {
	if !(rate > 0) || math.IsInf(rate, 0) {
		l.limits.Store(nil)
		l.mu.Lock()
		l.buckets.Purge()
		l.mu.Unlock()
		return
	}
	size := int64(burst)
	if burst < 1 {
		size = int64(max(1, math.Ceil(rate)))
	}
	perToken := min(float64(maxInterval), math.Round(float64(time.Second)/rate))
	interval := time.Duration(max(1, perToken))
	slack := time.Duration(math.MaxInt64 / 4)
	if size-1 < int64(slack/interval) {
		slack = interval * time.Duration(size-1)
	}
	l.limits.Store(&limits{interval: interval, slack: slack})
}

// Enabled reports whether the Limiter refuses anything at all.
func (l *Limiter) Enabled() bool {
	return l != nil && l.limits.Load() != nil
}

// Allow takes a token from addr's bucket named name (addr is a peer
// address as httpx.ClientAddr returns it). When the bucket is empty it
// takes nothing and returns how long until a token is there.
func (l *Limiter) Allow(name, addr string) (retryAfter time.Duration, ok bool) {
	if l == nil {
		return 0, true
	}
	lim := l.limits.Load()
	if lim == nil {
		return 0, true
	}
	key := bucketKey{name: name, client: httpx.ClientKey(addr)}
	now := l.now()

	l.mu.Lock()
	defer l.mu.Unlock()
	full, found := l.buckets.Get(key)
	if !found || full.Before(now) {
		full = now
	}
	// A bucket is never less than empty, whatever a smaller burst or a
	// clock stepping back makes of it.
	if empty := now.Add(lim.slack + lim.interval); full.After(empty) {
		full = empty
	}

	// Refused while less than one token is left.
	if wait := full.Sub(now) - lim.slack; wait > 0 {
		return wait, false
	}
	l.buckets.Add(key, full.Add(lim.interval))
	return 0, true
}

// Len returns the number of buckets kept.
func (l *Limiter) Len() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buckets.Len()
}
