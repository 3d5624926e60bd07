package auth

import (
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
)

// DefaultMaxClients is the number of client addresses a Limiter remembers
// when NewLimiter is given zero.
const DefaultMaxClients = 10000

// Limiter counts failed authentication attempts per client address and
// refuses a client that has spent its budget. Each client has a bucket of
// perMinute attempts that refills continuously at perMinute a minute; a
// failure (Fail) takes one, nothing else does. It is safe for concurrent use;
// a nil *Limiter limits nothing.
//
// Addresses are the connection peer (httpx.ClientAddr), never a forwarding
// header. IPv6 clients are grouped by /64, the block one subscriber
// usually holds. Memory is bounded: past maxClients addresses the least
// recently seen is forgotten, so an attacker with that many addresses can
// make the Limiter forget one of them.
type Limiter struct {
	interval time.Duration // one attempt's worth of refill
	window   time.Duration // time to refill a whole bucket
	now      func() time.Time

	mu sync.Mutex
	// clients maps a client key to the time its bucket will be full again
	// (the generic cell rate algorithm's theoretical arrival time); a
	// client absent or in the past has a full bucket. Guarded by mu; nil
	// when limiting is off.
	clients *simplelru.LRU[string, time.Time]
}

// NewLimiter returns a Limiter allowing perMinute failed attempts a minute
// per client, remembering at most maxClients clients (zero or less means
// DefaultMaxClients). perMinute zero or less turns limiting off. now is
// the clock; nil means time.Now.
func NewLimiter(perMinute, maxClients int, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	l := &Limiter{now: now}
	if perMinute <= 0 {
		return l
	}
	if maxClients <= 0 {
		maxClients = DefaultMaxClients
	}
	l.window = time.Minute
	l.interval = time.Minute / time.Duration(perMinute)
	// NewLRU fails only for a size below one.
	l.clients, _ = simplelru.NewLRU[string, time.Time](maxClients, nil)
	return l
}

// Allow reports whether addr may attempt authentication now; when not, it
// also returns how long until it may.
func (l *Limiter) Allow(addr string) (retryAfter time.Duration, ok bool) {
	if l == nil || l.clients == nil {
		return 0, true
	}
	key, now := httpx.ClientKey(addr), l.now()

	l.mu.Lock()
	defer l.mu.Unlock()
	full, found := l.clients.Get(key)
	if !found {
		return 0, true
	}
	if !full.After(now) {
		l.clients.Remove(key) // a full bucket needs no entry
		return 0, true
	}

	// Blocked while less than one attempt's worth is left in the bucket.
	wait := full.Sub(now) - (l.window - l.interval)
	if wait <= 0 {
		return 0, true
	}
	return wait, false
}

// Fail records a failed attempt by addr.
func (l *Limiter) Fail(addr string) {
	if l == nil || l.clients == nil {
		return
	}
	key, now := httpx.ClientKey(addr), l.now()

	l.mu.Lock()
	defer l.mu.Unlock()
	full, found := l.clients.Get(key)
	if !found || full.Before(now) {
		full = now
	}
	l.clients.Add(key, full.Add(l.interval))
}

// Len returns the number of clients with a failure history.
func (l *Limiter) Len() int {
	if l == nil || l.clients == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.clients.Len()
}
