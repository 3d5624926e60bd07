package outbox

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
)

// DefaultMax is a store's bound when its options name none.
const DefaultMax = 100_000

// Bucket names of the bbolt file.
var (
	bucketItems = []byte("items") // item id -> stored item (JSON)
	bucketDue   = []byte("due")   // due time (8 bytes) + item id -> nothing; pending items only
	bucketMeta  = []byte("meta")  // keyCount -> number of items (8 bytes)
	keyCount    = []byte("count")
)

// stopNote is the LastError of a consume found sent but unanswered when a
// store is reopened.
const stopNote = "the sidecar stopped while the consume was in flight: outcome unknown"

// lapseNote is the LastError of a consume whose claim lapsed after it
// was sent.
const lapseNote = "the deliverer's claim lapsed while the consume was in flight: outcome unknown"

// BoltOptions configure a BoltStore.
type BoltOptions struct {
	// Max bounds the items stored; zero means DefaultMax.
	Max int
	// LockTimeout is how long Open waits for another process to release
	// the file; zero means one second.
	LockTimeout time.Duration
	// Now is the clock Open uses to requeue claimed items; nil means
	// time.Now.
	Now func() time.Time
}

// BoltStore is a Store in a bbolt file of its own, for one sidecar
// process (the file is locked while open). Concurrent Adds are committed
// together: one fsync for many, with no timer delaying a lone Add. Full
// reads a counter kept in memory.
type BoltStore struct {
	db     *bbolt.DB
	max    int
	count  atomic.Int64
	closed atomic.Bool

	// addMu guards sends on adds against Close closing it.
	addMu     sync.RWMutex
	adds      chan *addRequest
	adderDone chan struct{}
	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*BoltStore)(nil)

// stored is an item as the bbolt file keeps it, with its claim.
type stored struct {
	Item
	// Owner holds the claim; empty when unclaimed.
	Owner string `json:"owner,omitempty"`
	// Sent: a consume's request may have been sent under the claim.
	Sent bool `json:"sent,omitempty"`
}

// OpenBolt opens (creating it if needed) the outbox file at path. Items
// claimed when the file was last closed are released: a consume that may
// have been sent becomes unknown, anything else is due at once.
func OpenBolt(path string, opts BoltOptions) (*BoltStore, error) {
	if opts.Max < 0 {
		return nil, errors.New("open outbox: max must not be negative")
	}
	if opts.Max == 0 {
		opts.Max = DefaultMax
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	s := &BoltStore{db: db, max: opts.Max}
	var n int
	err = db.Update(func(tx *bbolt.Tx) error {
		var err error
		n, err = recoverBolt(tx, opts.Now())
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open outbox %s: %w", path, err)
	}
	s.count.Store(int64(n))
	s.adds = make(chan *addRequest)
	s.adderDone = make(chan struct{})
	go s.runAdder()
	return s, nil
}

// recoverBolt creates the buckets, releases every claim and recounts the
// items. It returns the count.
func recoverBolt(tx *bbolt.Tx, now time.Time) (int, error) {
	for _, name := range [][]byte{bucketItems, bucketDue, bucketMeta} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return 0, fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	items := tx.Bucket(bucketItems)
	var claimed []stored
	n := 0
	err := items.ForEach(func(_, v []byte) error {
		n++
		var it stored
		if err := json.Unmarshal(v, &it); err != nil {
			return fmt.Errorf("decode item: %w", err)
		}
		if it.Owner != "" {
			claimed = append(claimed, it)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, it := range claimed {
		if err := unindex(tx, it); err != nil {
			return 0, err
		}
		if it.Sent {
			it.State, it.LastError = StateUnknown, stopNote
		}
		it.Owner, it.Sent, it.NextAttempt = "", false, now
		if err := put(tx, it); err != nil {
			return 0, err
		}
	}
	return n, setCount(tx, n)
}

// Add implements Store. Concurrent Adds share one transaction (see
// runAdder).
func (s *BoltStore) Add(ctx context.Context, items []Item) error {
	if err := checkNew(items); err != nil {
		return err
	}
	if len(items) == 0 {
		return nil
	}
	return s.submitAdd(ctx, items)
}

// Full implements Store.
func (s *BoltStore) Full() bool { return s.count.Load() >= int64(s.max) }

// Count implements Store.
func (s *BoltStore) Count() int { return int(s.count.Load()) }

// Claim implements Store.
func (s *BoltStore) Claim(_ context.Context, c Claim) ([]Item, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if c.Limit <= 0 || c.Owner == "" {
		return nil, errors.New("claim: owner and a positive limit are required")
	}
	// A read first: most polls find nothing due and need no write.
	due := false
	err := s.db.View(func(tx *bbolt.Tx) error {
		k, _ := tx.Bucket(bucketDue).Cursor().First()
		due = k != nil && !dueTime(k).After(c.Now)
		return nil
	})
	if err != nil || !due {
		return nil, s.wrap("claim items", err)
	}
	var out []Item
	err = s.db.Update(func(tx *bbolt.Tx) error {
		out = out[:0]
		lapsed, ready, err := scanDue(tx, c.Now, c.Limit)
		if err != nil {
			return err
		}
		for _, it := range lapsed {
			if err := unindex(tx, it); err != nil {
				return err
			}
			it.State, it.LastError, it.Owner, it.Sent = StateUnknown, lapseNote, "", false
			it.NextAttempt = c.Now
			if err := put(tx, it); err != nil {
				return err
			}
		}
		for _, it := range ready {
			if err := unindex(tx, it); err != nil {
				return err
			}
			it.Owner, it.NextAttempt = c.Owner, c.Until
			if err := put(tx, it); err != nil {
				return err
			}
			out = append(out, it.public())
		}
		return nil
	})
	if err != nil {
		return nil, s.wrap("claim items", err)
	}
	return out, nil
}

// scanDue reads the pending items due at now, oldest due first: consumes
// whose claim lapsed after Begin (lapsed), and up to limit others (ready).
func scanDue(tx *bbolt.Tx, now time.Time, limit int) (lapsed, ready []stored, err error) {
	items := tx.Bucket(bucketItems)
	c := tx.Bucket(bucketDue).Cursor()
	for k, _ := c.First(); k != nil && len(ready) < limit; k, _ = c.Next() {
		if dueTime(k).After(now) {
			break
		}
		it, ok, err := decode(items.Get(k[8:]))
		if err != nil {
			return nil, nil, err
		}
		switch {
		case !ok:
			continue
		case it.Sent:
			lapsed = append(lapsed, it)
		default:
			ready = append(ready, it)
		}
	}
	return lapsed, ready, nil
}

// Begin implements Store.
func (s *BoltStore) Begin(_ context.Context, c Claim, ids []string) ([]string, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	var held []string
	err := s.db.Update(func(tx *bbolt.Tx) error {
		held = held[:0]
		for _, id := range ids {
			it, ok, err := decode(tx.Bucket(bucketItems).Get([]byte(id)))
			if err != nil {
				return err
			}
			if !ok || it.Kind != KindConsume || !holds(it, c.Owner, c.Now) {
				continue
			}
			if err := unindex(tx, it); err != nil {
				return err
			}
			it.Sent, it.NextAttempt = true, c.Until
			if err := put(tx, it); err != nil {
				return err
			}
			held = append(held, id)
		}
		return nil
	})
	if err != nil {
		return nil, s.wrap("begin items", err)
	}
	return held, nil
}

// holds reports whether owner's claim on a pending item is current at now.
func holds(it stored, owner string, now time.Time) bool {
	return it.State == StatePending && it.Owner == owner && it.NextAttempt.After(now)
}

// Finish implements Store.
func (s *BoltStore) Finish(_ context.Context, owner string, outcomes []Outcome) error {
	if s.closed.Load() {
		return ErrClosed
	}
	for _, o := range outcomes {
		if err := checkOutcome(o); err != nil {
			return err
		}
	}
	var removed int
	err := s.db.Update(func(tx *bbolt.Tx) error {
		removed = 0
		for _, o := range outcomes {
			done, err := finishOne(tx, owner, o)
			if err != nil {
				return err
			}
			if done {
				removed++
			}
		}
		return setCount(tx, getCount(tx)-removed)
	})
	if err != nil {
		return s.wrap("finish items", err)
	}
	s.count.Add(-int64(removed))
	return nil
}

// finishOne applies one outcome and reports whether it removed the item.
func finishOne(tx *bbolt.Tx, owner string, o Outcome) (bool, error) {
	it, ok, err := decode(tx.Bucket(bucketItems).Get([]byte(o.ID)))
	if err != nil || !ok {
		return false, err
	}
	if o.Done {
		return true, remove(tx, it)
	}
	if it.State != StatePending || it.Owner != owner {
		return false, nil
	}
	if err := unindex(tx, it); err != nil {
		return false, err
	}
	it.Owner, it.Sent = "", false
	it.Attempts++
	it.State, it.LastError, it.NextAttempt = o.State, clampError(o.Error), o.Next
	return false, put(tx, it)
}

// List implements Store.
func (s *BoltStore) List(_ context.Context, f Filter) ([]Item, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	var out []Item
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketItems).ForEach(func(_, v []byte) error {
			it, _, err := decode(v)
			if err == nil && matches(it.Item, f) {
				out = append(out, it.public())
			}
			return err
		})
	})
	if err != nil {
		return nil, s.wrap("list items", err)
	}
	slices.SortFunc(out, func(a, b Item) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out[:min(len(out), listLimit(f))], nil
}

// Stats implements Store.
func (s *BoltStore) Stats(_ context.Context) (Stats, error) {
	if s.closed.Load() {
		return Stats{}, ErrClosed
	}
	st := Stats{Max: s.max}
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketItems).ForEach(func(_, v []byte) error {
			it, _, err := decode(v)
			if err != nil {
				return err
			}
			st.tally(it.Item)
			return nil
		})
	})
	if err != nil {
		return Stats{}, s.wrap("count items", err)
	}
	return st, nil
}

// Resolve implements Store.
func (s *BoltStore) Resolve(_ context.Context, id string, a Action, now time.Time) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if a != ActionRequeue && a != ActionDrop {
		return fmt.Errorf("resolve %s: unknown action %q", id, a)
	}
	removed := false
	err := s.db.Update(func(tx *bbolt.Tx) error {
		removed = false
		it, ok, err := decode(tx.Bucket(bucketItems).Get([]byte(id)))
		switch {
		case err != nil:
			return err
		case !ok:
			return ErrNotFound
		case it.State == StatePending:
			return ErrNotParked
		case a == ActionDrop:
			removed = true
			if err := remove(tx, it); err != nil {
				return err
			}
			return setCount(tx, getCount(tx)-1)
		}
		it.State, it.NextAttempt, it.Owner, it.Sent = StatePending, now, "", false
		return put(tx, it)
	})
	if err != nil {
		return s.wrap("resolve "+id, err)
	}
	if removed {
		s.count.Add(-1)
	}
	return nil
}

// Close implements Store. It waits for the Adds already queued to be
// committed.
func (s *BoltStore) Close() error {
	s.closeOnce.Do(func() {
		s.addMu.Lock()
		s.closed.Store(true)
		close(s.adds)
		s.addMu.Unlock()
		<-s.adderDone
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("close outbox: %w", err)
		}
	})
	return s.closeErr
}

// wrap adds context to a store error, keeping the sentinels bare.
func (s *BoltStore) wrap(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrFull), errors.Is(err, ErrNotFound), errors.Is(err, ErrNotParked):
		return err
	case errors.Is(err, bbolt.ErrDatabaseNotOpen):
		return ErrClosed
	}
	return fmt.Errorf("outbox: %s: %w", what, err)
}

// put writes an item and, when it is pending, its due key.
func put(tx *bbolt.Tx, it stored) error {
	v, err := json.Marshal(it)
	if err != nil {
		return fmt.Errorf("encode item: %w", err)
	}
	if err := tx.Bucket(bucketItems).Put([]byte(it.ID), v); err != nil {
		return fmt.Errorf("put item: %w", err)
	}
	if it.State != StatePending {
		return nil
	}
	if err := tx.Bucket(bucketDue).Put(dueKey(it), nil); err != nil {
		return fmt.Errorf("put due key: %w", err)
	}
	return nil
}

// unindex removes an item's due key, if it has one.
func unindex(tx *bbolt.Tx, it stored) error {
	if it.State != StatePending {
		return nil
	}
	if err := tx.Bucket(bucketDue).Delete(dueKey(it)); err != nil {
		return fmt.Errorf("delete due key: %w", err)
	}
	return nil
}

// remove deletes an item and its due key.
func remove(tx *bbolt.Tx, it stored) error {
	if err := unindex(tx, it); err != nil {
		return err
	}
	if err := tx.Bucket(bucketItems).Delete([]byte(it.ID)); err != nil {
		return fmt.Errorf("delete item: %w", err)
	}
	return nil
}

// decode reads a stored item; ok is false for a missing one.
func decode(v []byte) (stored, bool, error) {
	if v == nil {
		return stored{}, false, nil
	}
	var it stored
	if err := json.Unmarshal(v, &it); err != nil {
		return stored{}, false, fmt.Errorf("decode item: %w", err)
	}
	return it, true, nil
}

// dueKey orders pending items by due time: the time's Unix nanoseconds
// (zero before 1970) big-endian, then the id.
func dueKey(it stored) []byte {
	k := make([]byte, 8, 8+len(it.ID))
	binary.BigEndian.PutUint64(k, uint64(max(it.NextAttempt.UnixNano(), 0)))
	return append(k, it.ID...)
}

// dueTime reads a due key's time.
func dueTime(k []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(k[:8])))
}

// getCount reads the item counter.
func getCount(tx *bbolt.Tx) int {
	v := tx.Bucket(bucketMeta).Get(keyCount)
	if len(v) != 8 {
		return 0
	}
	return int(binary.BigEndian.Uint64(v))
}

// setCount writes the item counter.
func setCount(tx *bbolt.Tx, n int) error {
	v := binary.BigEndian.AppendUint64(nil, uint64(max(n, 0)))
	if err := tx.Bucket(bucketMeta).Put(keyCount, v); err != nil {
		return fmt.Errorf("put count: %w", err)
	}
	return nil
}

// public is the item as callers see it.
func (it stored) public() Item {
	out := it.Item
	out.Claimed = it.Owner != ""
	return out
}

// containsID reports whether items hold id.
func containsID(items []Item, id string) bool {
	return slices.ContainsFunc(items, func(it Item) bool { return it.ID == id })
}
