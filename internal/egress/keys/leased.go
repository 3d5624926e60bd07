package keys

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/sony/gobreaker/v2"
)

// Defaults applied to zero LeaseOptions fields.
const (
	DefaultCallTimeout      = 5 * time.Second
	DefaultRefreshMargin    = time.Minute
	DefaultMaxLeases        = 32
	DefaultMinFetchInterval = time.Second
	DefaultBreakerFailures  = 5
	DefaultBreakerOpenFor   = 30 * time.Second
)

// LeaseOptions configure a Leased pool.
type LeaseOptions struct {
	// Options are the rotation rules, the clock and the event hook.
	Options
	// PlatformURL is the platform's base URL (scheme and host, and a
	// path prefix if it has one); the lease endpoint is
	// {PlatformURL}/api/automations/{AutomationID}/openai-key.
	PlatformURL string
	// AutomationID is the platform's id of this automation.
	AutomationID int64
	// Token is the service token sent as X-Zimmer-Service-Token, for a
	// caller whose token never changes. Exactly one of Token and
	// TokenFunc must be set.
	Token Secret
	// TokenFunc returns the service token, asked before each platform
	// call, for a caller whose token may rotate (a configuration
	// reload). What it returns is sent and never kept or put in an
	// error. An empty token fails the call before anything is sent.
	TokenFunc func() string
	// Client sends the platform calls; nil means a client of its own
	// (a clone of the default transport). Its redirects are not followed.
	Client *http.Client
	// CallTimeout bounds one platform call.
	CallTimeout time.Duration
	// RefreshMargin: a lease this close to its expiry is renewed by the
	// next Acquire (which still uses it; the renewal serves later calls).
	RefreshMargin time.Duration
	// MaxLeases bounds the lease cache (an LRU keyed by key_id and
	// expiry).
	MaxLeases int
	// MinFetchInterval: after the platform answered, it is not asked
	// again sooner than this, however busy the keys it gave are.
	MinFetchInterval time.Duration
	// BreakerFailures is the number of failed platform calls in a row
	// (no answer, 5xx, 429, a malformed lease) that opens the breaker.
	BreakerFailures int
	// BreakerOpenFor is how long the open breaker refuses platform calls
	// before letting one through to test it.
	BreakerOpenFor time.Duration
}

// Leased is a Pool of keys leased from the Zimmer platform. Acquire uses
// the least-used valid cached lease; it asks the platform only when no
// cached lease can serve (one call at a time, shared by every waiting
// Acquire) or to renew a lease within RefreshMargin of its expiry. While
// the platform is down, valid cached leases keep serving until they
// expire; then Acquire fails with a *NoKeyError matching
// ErrPlatformUnavailable.
//
// A key the upstream rejects (401/403) or reports out of quota is evicted
// from the cache; its state is kept by key_id, so a new lease of the same
// rejected key (same key_id and value) is not used, and an exhausted key
// waits for the next UTC day.
//
// Close stops the pool's platform calls, renewals included.
type Leased struct {
	opts     LeaseOptions
	endpoint string
	token    func() string // Token.Reveal or TokenFunc
	client   *http.Client
	breaker  *gobreaker.CircuitBreaker[leaseAnswer]
	fetching chan struct{} // a one-slot semaphore held during a fetch
	// life ends at Close; renewals and fetches run under it.
	life context.Context
	stop context.CancelFunc // called with mu held, so no renewal starts after it
	// renewals counts running background renewals; Add under mu.
	renewals sync.WaitGroup

	mu         sync.Mutex
	cache      *lru.Cache[leaseVersion, *leaseEntry]
	states     map[int64]*keyState // by key_id
	lastAnswer time.Time           // when the platform last answered
	lastErr    error               // the last fetch's error, nil if it leased
}

var (
	_ Pool   = (*Leased)(nil)
	_ closer = (*Leased)(nil)
)

// leaseVersion identifies one lease: a key and the expiry it was leased
// until. A renewal of the same key is a new version.
type leaseVersion struct {
	keyID   int64
	expires int64 // Unix nanoseconds
}

// leaseEntry is a cached lease.
type leaseEntry struct {
	version leaseVersion
	secret  Secret
	model   string
	expires time.Time
}

// NewLeased returns a pool that leases keys from the platform. It checks
// the options and contacts nobody.
func NewLeased(opts LeaseOptions) (*Leased, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("leased keys: %w", err)
	}
	endpoint, err := url.JoinPath(opts.PlatformURL, "api", "automations",
		strconv.FormatInt(opts.AutomationID, 10), "openai-key")
	if err != nil {
		return nil, fmt.Errorf("leased keys: platform url: %w", err)
	}
	cache, err := lru.New[leaseVersion, *leaseEntry](opts.MaxLeases)
	if err != nil {
		return nil, fmt.Errorf("leased keys: %w", err)
	}
	token := opts.TokenFunc
	if token == nil {
		token = opts.Token.Reveal
	}
	life, stop := context.WithCancel(context.Background())
	p := &Leased{
		life:     life,
		stop:     stop,
		opts:     opts,
		endpoint: endpoint,
		token:    token,
		client:   opts.Client,
		fetching: make(chan struct{}, 1),
		cache:    cache,
		states:   make(map[int64]*keyState),
	}
	p.breaker = gobreaker.NewCircuitBreaker[leaseAnswer](gobreaker.Settings{
		Name:    "lease-platform",
		Timeout: opts.BreakerOpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= uint32(opts.BreakerFailures)
		},
		// The platform answered: it is up, whatever it said.
		IsSuccessful: func(err error) bool {
			return err == nil || errors.Is(err, ErrPlatformRefused)
		},
		// The caller gave up, or we had no token: that says nothing
		// about the platform.
		IsExcluded: func(err error) bool {
			return errors.Is(err, context.Canceled) || errors.Is(err, errNoToken)
		},
	})
	return p, nil
}

// withDefaults fills zero fields and checks the rest.
func (o LeaseOptions) withDefaults() (LeaseOptions, error) {
	o.Options = o.Options.withDefaults()
	u, err := url.Parse(o.PlatformURL)
	switch {
	case err != nil:
		return o, errors.New("platform url does not parse")
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return o, errors.New("platform url needs an http or https scheme and a host")
	case u.User != nil:
		return o, errors.New("platform url must not carry credentials")
	case o.AutomationID <= 0:
		return o, errors.New("automation id must be positive")
	case o.Token.IsZero() && o.TokenFunc == nil:
		return o, errors.New("service token is empty")
	case !o.Token.IsZero() && o.TokenFunc != nil:
		return o, errors.New("both a service token and a token function are set")
	case o.MaxLeases < 0 || o.BreakerFailures < 0:
		return o, errors.New("negative lease cache size or breaker threshold")
	}
	if o.Client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		o.Client = &http.Client{Transport: tr}
	}
	client := *o.Client
	client.CheckRedirect = func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}
	o.Client = &client
	o.CallTimeout = orDefault(o.CallTimeout, DefaultCallTimeout)
	o.RefreshMargin = orDefault(o.RefreshMargin, DefaultRefreshMargin)
	o.MinFetchInterval = orDefault(o.MinFetchInterval, DefaultMinFetchInterval)
	o.BreakerOpenFor = orDefault(o.BreakerOpenFor, DefaultBreakerOpenFor)
	o.MaxLeases = orDefault(o.MaxLeases, DefaultMaxLeases)
	o.BreakerFailures = orDefault(o.BreakerFailures, DefaultBreakerFailures)
	return o, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Acquire implements Pool.
func (p *Leased) Acquire(ctx context.Context, model string, maxTokens int64) (Lease, error) {
	if err := contextErr(ctx); err != nil {
		return Lease{}, err
	}
	if p.life.Err() != nil {
		return Lease{}, closedErr()
	}
	l, renew, why := p.tryPick(maxTokens)
	if why == nil {
		if renew {
			p.renew(model, maxTokens)
		}
		return l, nil
	}
	return p.acquireSlow(ctx, model, maxTokens)
}

// acquireSlow waits its turn to ask the platform, unless another caller's
// fetch has meanwhile produced a usable lease.
func (p *Leased) acquireSlow(ctx context.Context, model string, maxTokens int64) (Lease, error) {
	select {
	case p.fetching <- struct{}{}:
		defer func() { <-p.fetching }()
	case <-ctx.Done():
		return Lease{}, contextErr(ctx)
	case <-p.life.Done():
		return Lease{}, closedErr()
	}
	if p.life.Err() != nil {
		return Lease{}, closedErr()
	}
	if l, _, why := p.tryPick(maxTokens); why == nil {
		return l, nil
	}
	if p.answeredRecently() {
		_, _, why := p.tryPick(maxTokens)
		p.mu.Lock()
		last := p.lastErr
		p.mu.Unlock()
		return p.noKey(why, last)
	}
	// The fetch ends with the caller's context or at Close.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopCut := context.AfterFunc(p.life, cancel)
	defer stopCut()
	ferr := p.fetch(fctx, model, maxTokens)
	if p.life.Err() != nil {
		return Lease{}, closedErr()
	}
	l, _, why := p.tryPick(maxTokens)
	if why == nil {
		return l, nil
	}
	return p.noKey(why, ferr)
}

// closedErr is Acquire's error after Close.
func closedErr() error { return &NoKeyError{Cause: ErrClosed} }

// noKey builds Acquire's error when nothing can serve.
func (p *Leased) noKey(why *tally, ferr error) (Lease, error) {
	if ferr != nil && why.err.Keys == 0 {
		ferr = fmt.Errorf("no valid lease: %w", ferr)
	}
	return Lease{}, why.result(p.opts.Now(), ferr)
}

// renew asks the platform for a fresh lease in the background, unless a
// fetch is already running or the platform answered within
// MinFetchInterval: the call that noticed the lease ageing goes on with
// it at once, whatever the platform's speed. A failure is ignored: the
// current leases serve until they expire. The fetch is bounded by
// CallTimeout and ends at Close, which waits for it.
func (p *Leased) renew(model string, maxTokens int64) {
	select {
	case p.fetching <- struct{}{}:
	default:
		return
	}
	if p.answeredRecently() || !p.startRenewal() {
		<-p.fetching
		return
	}
	go func() {
		defer p.renewals.Done()
		defer func() { <-p.fetching }()
		_ = p.fetch(p.life, model, maxTokens)
	}()
}

// startRenewal counts a renewal about to start, unless the pool is
// closed. Close cancels under the same lock, so it waits for every
// renewal counted.
func (p *Leased) startRenewal() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.life.Err() != nil {
		return false
	}
	p.renewals.Add(1)
	return true
}

// answeredRecently reports whether the platform answered within
// MinFetchInterval.
func (p *Leased) answeredRecently() bool {
	now := p.opts.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.lastAnswer.IsZero() && now.Sub(p.lastAnswer) < p.opts.MinFetchInterval
}

// fetch asks the platform for a lease through the breaker and caches it.
func (p *Leased) fetch(ctx context.Context, model string, maxTokens int64) error {
	a, err := p.breaker.Execute(func() (leaseAnswer, error) {
		return p.callPlatform(ctx, model, maxTokens)
	})
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		err = fmt.Errorf("%w: circuit breaker open", ErrPlatformUnavailable)
	}
	now := p.opts.Now()
	var events []Event
	p.mu.Lock()
	if err == nil || errors.Is(err, ErrPlatformRefused) {
		p.lastAnswer = now
	}
	if err == nil {
		events, err = p.addLocked(a, now)
	}
	if err != nil {
		err = fmt.Errorf("lease key: %w", err)
	}
	p.lastErr = err
	p.mu.Unlock()
	p.opts.emit(events)
	return err
}

// addLocked caches a lease, replacing older versions of the same key, and
// returns the event it caused. A lease of a key the upstream rejected is
// dropped with an error, unless the key's value changed.
func (p *Leased) addLocked(a leaseAnswer, now time.Time) ([]Event, error) {
	st := p.states[a.keyID]
	if st == nil {
		st = &keyState{id: a.keyID, name: "platform:" + strconv.FormatInt(a.keyID, 10)}
		p.states[a.keyID] = st
	}
	if st.disabled {
		if st.secret.Reveal() == a.secret.Reveal() {
			return nil, fmt.Errorf("platform leased key %d, which the upstream rejected", a.keyID)
		}
		st.disabled = false
	}
	v := leaseVersion{keyID: a.keyID, expires: a.expiresAt.UnixNano()}
	_, known := p.cache.Peek(v)
	p.evictLocked(a.keyID)
	st.secret, st.limits = a.secret, a.limits
	p.cache.Add(v, &leaseEntry{version: v, secret: a.secret, model: a.model, expires: a.expiresAt})
	p.pruneLocked(now)
	if known {
		return nil, nil
	}
	return []Event{{Kind: EventLeased, KeyID: a.keyID, Name: st.name, Until: a.expiresAt}}, nil
}

// evictLocked removes every cached version of a key.
func (p *Leased) evictLocked(keyID int64) {
	for _, v := range p.cache.Keys() {
		if v.keyID == keyID {
			p.cache.Remove(v)
		}
	}
}

// pruneLocked forgets the state of keys that have no cached lease, no call
// in flight and nothing to remember (disabled, exhausted, cooling).
func (p *Leased) pruneLocked(now time.Time) {
	held := make(map[int64]bool, p.cache.Len())
	for _, v := range p.cache.Keys() {
		held[v.keyID] = true
	}
	for id, st := range p.states {
		restricted := st.disabled || now.Before(st.exhaustedUntil) || now.Before(st.coolUntil)
		if !held[id] && st.inflight == 0 && !restricted {
			delete(p.states, id)
		}
	}
}

// tryPick draws the least-used valid lease. renew is set when the lease
// drawn is within RefreshMargin of its expiry. Expired leases are dropped.
func (p *Leased) tryPick(maxTokens int64) (l Lease, renew bool, why *tally) {
	now := p.opts.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	entries := make(map[int64]*leaseEntry, p.cache.Len())
	cands := make([]*keyState, 0, p.cache.Len())
	for _, e := range p.cache.Values() {
		if !now.Before(e.expires) {
			p.cache.Remove(e.version)
			continue
		}
		entries[e.version.keyID] = e
		cands = append(cands, p.states[e.version.keyID])
	}
	k, why := pick(cands, now, maxTokens)
	if k == nil {
		return Lease{}, false, why
	}
	e := entries[k.id]
	l = Lease{
		KeyID: k.id, Name: k.name, Key: e.secret, Model: e.model,
		ExpiresAt: e.expires, Platform: true, t: k.admit(now, maxTokens),
	}
	return l, e.expires.Sub(now) <= p.opts.RefreshMargin, nil
}

// Report implements Pool. A rejected or exhausted key is evicted.
func (p *Leased) Report(l Lease, o Outcome) {
	t, ok := l.claim()
	if !ok {
		return
	}
	now := p.opts.Now()
	p.mu.Lock()
	events := t.st.settle(t, o, now, p.opts.Options)
	if t.st.disabled || now.Before(t.st.exhaustedUntil) {
		p.evictLocked(t.st.id)
	}
	p.mu.Unlock()
	p.opts.emit(events)
}

// Status returns a snapshot of every cached lease, by key_id.
func (p *Leased) Status() []KeyStatus {
	now := p.opts.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []KeyStatus
	for _, e := range p.cache.Values() {
		if st := p.states[e.version.keyID]; st != nil && now.Before(e.expires) {
			s := st.status(now)
			s.ExpiresAt = e.expires
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b KeyStatus) int { return cmp.Compare(a.KeyID, b.KeyID) })
	return out
}

// Close stops the pool's platform calls: it cancels a background
// renewal and any fetch under way, and waits for the renewal to end.
// Afterwards Acquire fails with a *NoKeyError matching ErrClosed and
// contacts nobody; Report still takes back leases handed out before, and
// Status still reads. Close is idempotent and safe for concurrent use.
func (p *Leased) Close() {
	p.mu.Lock()
	p.stop()
	p.mu.Unlock()
	p.renewals.Wait()
}

// BreakerState returns the platform breaker's state: "closed",
// "half-open" or "open".
func (p *Leased) BreakerState() string { return p.breaker.State().String() }
