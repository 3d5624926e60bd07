package keys

import (
	"context"
	"sync"
	"sync/atomic"
)

// StatusPool is a Pool that can describe its keys.
type StatusPool interface {
	Pool
	// Status returns a secret-free snapshot of every key.
	Status() []KeyStatus
}

// Swappable is a Pool whose keys can be replaced while calls are in
// flight, as a configuration reload does: new calls draw from the new
// pool, and each lease is reported to the pool that issued it, so its
// outcome never touches the other pool's state. Close closes the pools it
// has held.
type Swappable struct {
	cur atomic.Pointer[poolBox]

	mu      sync.Mutex
	closers []closer // pools held that have Close, until Close
	closed  bool
}

// poolBox lets an interface value live behind an atomic pointer.
type poolBox struct{ p StatusPool }

var _ StatusPool = (*Swappable)(nil)

// NewSwappable returns a Swappable drawing from p.
func NewSwappable(p StatusPool) *Swappable {
	s := &Swappable{}
	s.Swap(p)
	return s
}

// Swap makes p the pool of new calls. The pool it replaces still takes
// back its leases; Close closes it.
func (s *Swappable) Swap(p StatusPool) {
	s.cur.Store(&poolBox{p: p})
	c, ok := p.(closer)
	if !ok {
		return
	}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.closers = append(s.closers, c)
	}
	s.mu.Unlock()
	if closed {
		c.Close()
	}
}

// Current returns the pool new calls draw from.
func (s *Swappable) Current() StatusPool { return s.cur.Load().p }

// Acquire implements Pool with the current pool.
func (s *Swappable) Acquire(ctx context.Context, model string, maxTokens int64) (Lease, error) {
	p := s.Current()
	l, err := p.Acquire(ctx, model, maxTokens)
	if err == nil {
		l.origin = p
	}
	return l, err
}

// Report implements Pool: the lease goes back to the pool that issued it.
// A lease this Swappable did not issue is ignored.
func (s *Swappable) Report(l Lease, o Outcome) {
	if l.origin != nil {
		l.origin.Report(l, o)
	}
}

// Status implements StatusPool with the current pool.
func (s *Swappable) Status() []KeyStatus { return s.Current().Status() }

// closer is a pool with a stop path, such as Leased.
type closer interface{ Close() }

// Close closes every pool this Swappable has held that has a Close method
// (the current one and those swapped out), once for each Swap that
// installed it, and outside any lock. A pool swapped in after Close is
// closed at once. Close is idempotent.
func (s *Swappable) Close() {
	s.mu.Lock()
	pools := s.closers
	s.closers, s.closed = nil, true
	s.mu.Unlock()
	for _, c := range pools {
		c.Close()
	}
}
