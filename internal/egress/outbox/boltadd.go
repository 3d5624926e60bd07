package outbox

import (
	"context"
	"fmt"

	"go.etcd.io/bbolt"
)

// maxAddBatch bounds the Adds committed in one transaction.
const maxAddBatch = 256

// addRequest is one queued Add and, once done is closed, its outcome.
type addRequest struct {
	items []Item
	added int
	err   error
	done  chan struct{}
}

// submitAdd queues items for the adder and waits for the commit. It
// returns ctx.Err() when ctx ends before the Add is queued; once queued,
// it waits for the commit whatever ctx does, so a stored Add is never
// reported as failed.
func (s *BoltStore) submitAdd(ctx context.Context, items []Item) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &addRequest{items: items, done: make(chan struct{})}
	s.addMu.RLock()
	if s.closed.Load() {
		s.addMu.RUnlock()
		return ErrClosed
	}
	select {
	case s.adds <- r:
		s.addMu.RUnlock()
	case <-ctx.Done():
		s.addMu.RUnlock()
		return ctx.Err()
	}
	<-r.done
	return r.err
}

// runAdder commits Adds. It takes the first queued Add, adds whatever else
// is already queued, and commits them in one transaction; Adds arriving
// during a commit form the next batch, so batches grow with load. It
// returns once Close has closed adds and every queued Add is answered.
func (s *BoltStore) runAdder() {
	defer close(s.adderDone)
	batch := make([]*addRequest, 0, maxAddBatch)
	for first := range s.adds {
		batch = append(batch[:0], first)
	fill:
		for len(batch) < maxAddBatch {
			select {
			case r, ok := <-s.adds:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		s.commitAdds(batch)
		clear(batch)
	}
}

// commitAdds stores a batch of Adds in one transaction, in order. An Add
// that would pass the bound gets ErrFull and writes nothing; the others
// are answered once the commit is durable, or all get its error.
func (s *BoltStore) commitAdds(batch []*addRequest) {
	err := s.db.Update(func(tx *bbolt.Tx) error {
		n := getCount(tx)
		for _, r := range batch {
			r.added, r.err = 0, nil
			fresh := freshItems(tx, r.items)
			if n+len(fresh) > s.max {
				r.err = ErrFull
				continue
			}
			for _, it := range fresh {
				if err := put(tx, stored{Item: it}); err != nil {
					return err
				}
			}
			r.added = len(fresh)
			n += r.added
		}
		return setCount(tx, n)
	})
	for _, r := range batch {
		switch {
		case err != nil:
			r.err = fmt.Errorf("outbox: add items: %w", err)
		case r.err == nil:
			s.count.Add(int64(r.added))
		}
		close(r.done)
	}
}

// freshItems returns the items not stored yet (in tx or earlier in
// items).
func freshItems(tx *bbolt.Tx, items []Item) []Item {
	b := tx.Bucket(bucketItems)
	var fresh []Item
	for _, it := range items {
		if b.Get([]byte(it.ID)) == nil && !containsID(fresh, it.ID) {
			fresh = append(fresh, it)
		}
	}
	return fresh
}
