package outbox

import (
	"context"
	"fmt"
	"time"
)

// Options configure an Outbox.
type Options struct {
	// Consume turns on the forwarding to the platform's ledger: a record
	// with Units > 0 and a UserAutomationID > 0 then also yields a
	// consume item.
	Consume bool
	// SkipReports stores no usage report for leased keys (the platform
	// is not told about their usage).
	SkipReports bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Outbox turns each egress call's Record into the items it needs (a
// report for a leased key, a consume when forwarding is on) and stores
// them. It is the egress Sink. It does not own its store: close the store
// after the Outbox and its Deliverers are done.
type Outbox struct {
	store Store
	opts  Options
	// wake is signalled (without blocking) after each Enqueue that
	// stored something, so a Deliverer starts at once.
	wake chan struct{}
}

// New returns an Outbox on store.
func New(store Store, opts Options) *Outbox {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Outbox{store: store, opts: opts, wake: make(chan struct{}, 1)}
}

// Store returns the outbox's store.
func (o *Outbox) Store() Store { return o.store }

// Enqueue stores the items r needs in one durable write before it
// returns nil; a record that needs none stores nothing. It fails with
// ErrFull when the store is at its bound, and for a record id that is
// empty, longer than 64 characters or not made of letters, digits, '-'
// and '_'. Enqueueing one record twice stores its items once.
func (o *Outbox) Enqueue(ctx context.Context, r Record) error {
	if err := checkRecordID(r.ID); err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	items := o.Items(r)
	if len(items) == 0 {
		return nil
	}
	if err := o.store.Add(ctx, items); err != nil {
		return fmt.Errorf("enqueue %s: %w", r.ID, err)
	}
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return nil
}

// Items returns the pending items r needs, due now: a report when the
// key was leased (unless SkipReports), a consume when forwarding is on and
// the call charged a user.
func (o *Outbox) Items(r Record) []Item {
	now := o.opts.Now()
	var items []Item
	if r.Leased && !o.opts.SkipReports {
		items = append(items, newItem(KindReport, r, now))
	}
	if o.opts.Consume && r.Units > 0 && r.UserAutomationID > 0 {
		items = append(items, newItem(KindConsume, r, now))
	}
	return items
}

// Full reports that the store is at its bound: the egress then refuses
// new calls. It never blocks on I/O.
func (o *Outbox) Full() bool { return o.store.Full() }

// Stats counts the stored items.
func (o *Outbox) Stats(ctx context.Context) (Stats, error) { return o.store.Stats(ctx) }

// OldestPendingAge is how long the oldest pending item has waited at
// now; zero when none is pending.
func (s Stats) OldestPendingAge(now time.Time) time.Duration {
	if s.OldestPending.IsZero() {
		return 0
	}
	return max(now.Sub(s.OldestPending), 0)
}
