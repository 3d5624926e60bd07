package keys

import (
	"net/http"
	"sync/atomic"
	"testing"
)

// TestSwappableReportsToTheIssuingPool: after a swap, new calls draw from
// the new pool, and a lease issued before it is reported to the old pool
// (its key disabled there), leaving the new pool's keys alone.
func TestSwappableReportsToTheIssuingPool(t *testing.T) {
	t.Parallel()
	oldPool, _, _ := newStatic(t, 1, Limits{})
	newPool, _, _ := newStatic(t, 2, Limits{})
	s := NewSwappable(oldPool)

	before, err := s.Acquire(t.Context(), "m", 0)
	if err != nil {
		t.Fatal(err)
	}
	s.Swap(newPool)
	after, err := s.Acquire(t.Context(), "m", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(s.Status()); got != 2 {
		t.Errorf("status lists %d keys, want the new pool's 2", got)
	}

	s.Report(before, Outcome{Status: http.StatusUnauthorized})
	s.Report(after, Outcome{Status: http.StatusOK, Tokens: 10})
	if st := oldPool.Status()[0]; st.State != StateDisabled || st.InFlight != 0 {
		t.Errorf("old pool's key: %+v, want disabled and nothing in flight", st)
	}
	for _, st := range newPool.Status() {
		if st.State != StateActive || st.InFlight != 0 {
			t.Errorf("new pool's key %d: %+v, want active and nothing in flight", st.KeyID, st)
		}
	}
	if got := newPool.Status()[after.KeyID-1].TokensToday; got != 10 {
		t.Errorf("new pool's key used %d tokens, want 10", got)
	}

	// A lease another pool issued, or the zero Lease, is ignored.
	stray, err := newPool.Acquire(t.Context(), "m", 0)
	if err != nil {
		t.Fatal(err)
	}
	s.Report(stray, Outcome{Status: http.StatusUnauthorized})
	s.Report(Lease{}, Outcome{Status: http.StatusUnauthorized})
	if st := newPool.Status()[stray.KeyID-1]; st.State != StateActive || st.InFlight != 1 {
		t.Errorf("a stray report changed the new pool: %+v", st)
	}
}

// closingPool is a Static pool that counts its Close calls.
type closingPool struct {
	*Static
	closed atomic.Int32
}

func (p *closingPool) Close() { p.closed.Add(1) }

// TestSwappableCloseClosesEveryPool: Close closes the current pool and
// the pools swapped out, once each, and skips pools without Close; a pool
// swapped in after Close is closed at once.
func TestSwappableCloseClosesEveryPool(t *testing.T) {
	t.Parallel()
	first, _, _ := newStatic(t, 1, Limits{})
	second, _, _ := newStatic(t, 1, Limits{})
	a, b := &closingPool{Static: first}, &closingPool{Static: second}
	plain, _, _ := newStatic(t, 1, Limits{})
	s := NewSwappable(a)
	s.Swap(plain)
	s.Swap(b)

	s.Close()
	s.Close()
	if na, nb := a.closed.Load(), b.closed.Load(); na != 1 || nb != 1 {
		t.Fatalf("Close calls: swapped out %d, current %d; want 1 and 1", na, nb)
	}

	late, _, _ := newStatic(t, 1, Limits{})
	c := &closingPool{Static: late}
	s.Swap(c)
	if n := c.closed.Load(); n != 1 {
		t.Fatalf("a pool swapped in after Close: %d Close calls, want 1", n)
	}
}
