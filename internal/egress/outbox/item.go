package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Kind is what an item asks of the platform.
type Kind string

// The item kinds.
const (
	// KindReport is an openai-usage report of a call made with a leased
	// key. The platform dedupes it on its Idempotency-Key, so it is
	// retried until it is answered 2xx.
	KindReport Kind = "report"
	// KindConsume is a consume forwarded to the platform's ledger. The
	// platform has no idempotency: it is retried only when the request
	// surely never reached the platform.
	KindConsume Kind = "consume"
)

// State is where an item stands. A delivered item is removed, so it has
// no state.
type State string

// The item states.
const (
	// StatePending: waiting for a delivery attempt, or being attempted.
	StatePending State = "pending"
	// StateUnknown: a consume whose outcome cannot be known (the request
	// may have been applied). Never retried automatically: an admin
	// requeues or drops it.
	StateUnknown State = "unknown"
	// StateFailed: the platform refused the item for good (a 4xx that a
	// retry cannot change). Not retried automatically.
	StateFailed State = "failed"
)

// Action is an admin's decision on a parked (unknown or failed) item.
type Action string

// The admin actions.
const (
	// ActionRequeue makes the item pending again, due now.
	ActionRequeue Action = "requeue"
	// ActionDrop deletes the item.
	ActionDrop Action = "drop"
)

// Item is one delivery to make for a Record.
type Item struct {
	// ID is "<kind>:<record id>": a record has at most one item of each
	// kind.
	ID    string `json:"id"`
	Kind  Kind   `json:"kind"`
	State State  `json:"state"`
	// Attempts counts the delivery attempts that ended.
	Attempts int `json:"attempts"`
	// LastError says why the last attempt did not deliver the item. It
	// never holds a secret or a platform answer's body.
	LastError string `json:"last_error,omitempty"`
	// NextAttempt is when a pending item is due; while a deliverer holds
	// it (Claimed), when that claim lapses.
	NextAttempt time.Time `json:"next_attempt"`
	// Claimed is true while a deliverer holds the item.
	Claimed bool `json:"claimed,omitempty"`
	// CreatedAt is when the item was added.
	CreatedAt time.Time `json:"created_at"`
	// Record is the call the item is about.
	Record Record `json:"record"`
}

// ItemID names the item of kind for the record with id recordID.
func ItemID(kind Kind, recordID string) string { return string(kind) + ":" + recordID }

// newItem returns a pending item due at now.
func newItem(kind Kind, r Record, now time.Time) Item {
	return Item{
		ID: ItemID(kind, r.ID), Kind: kind, State: StatePending,
		NextAttempt: now, CreatedAt: now, Record: r,
	}
}

// Claim is a deliverer's request for due items.
type Claim struct {
	// Owner names the deliverer; it must be unique among the deliverers
	// that share a store.
	Owner string
	// Now is the deliverer's clock: items due at or before it are taken.
	Now time.Time
	// Until is when the claim lapses: the items then come back to any
	// deliverer, except a consume whose request may have been sent
	// (Begin), which becomes unknown.
	Until time.Time
	// Limit is how many items to take at most.
	Limit int
}

// Outcome is the end of one claimed item's delivery attempt.
type Outcome struct {
	// ID is the item's.
	ID string
	// Done: the platform took the item; it is removed.
	Done bool
	// State, when not Done: StatePending to retry at Next, or
	// StateUnknown or StateFailed to park the item.
	State State
	// Next is when a retried item is due.
	Next time.Time
	// Error is why the item was not delivered (secret-free).
	Error string
}

// Counts are the items of one kind by state.
type Counts struct {
	Pending int `json:"pending"`
	Unknown int `json:"unknown"`
	Failed  int `json:"failed"`
}

// Total is the number of items counted.
func (c Counts) Total() int { return c.Pending + c.Unknown + c.Failed }

// add counts one item in state s.
func (c *Counts) add(s State, n int) {
	switch s {
	case StatePending:
		c.Pending += n
	case StateUnknown:
		c.Unknown += n
	case StateFailed:
		c.Failed += n
	}
}

// Stats describe a store's backlog.
type Stats struct {
	Report  Counts `json:"report"`
	Consume Counts `json:"consume"`
	// Total is the number of items stored.
	Total int `json:"total"`
	// Max is the store's bound.
	Max int `json:"max"`
	// OldestPending is when the oldest pending item was added; zero
	// when none is pending.
	OldestPending time.Time `json:"oldest_pending,omitzero"`
}

// counts returns the Counts of kind k.
func (s *Stats) counts(k Kind) *Counts {
	if k == KindConsume {
		return &s.Consume
	}
	return &s.Report
}

// Filter selects items to list.
type Filter struct {
	// Kind and State select; empty selects all.
	Kind  Kind
	State State
	// Limit bounds the list; zero or less means DefaultListLimit.
	Limit int
}

// DefaultListLimit is the number of items List returns when the filter
// names no limit.
const DefaultListLimit = 100

// Store keeps items durably. Implementations are safe for concurrent use;
// several stores may share one backing (PostgreSQL) when every deliverer
// has its own Claim.Owner. Every write is durable when it returns nil.
type Store interface {
	// Add stores items in one durable write, all or none. An item whose
	// ID is already stored is left as it is (Add is idempotent). It
	// returns ErrFull, storing nothing, when the items would take the
	// store past its bound.
	Add(ctx context.Context, items []Item) error
	// Full reports that the store holds its bound of items. It is cheap
	// and never blocks on I/O.
	Full() bool
	// Count is the number of items stored, as kept in memory (for a
	// shared PostgreSQL table, as last counted and adjusted since). It is
	// cheap and never blocks on I/O; Stats counts exactly.
	Count() int
	// Claim takes up to c.Limit pending items due at c.Now for c.Owner
	// until c.Until, oldest due first. Consumes whose earlier claim
	// lapsed after Begin are first parked as unknown.
	Claim(ctx context.Context, c Claim) ([]Item, error)
	// Begin records, durably, that consumes ids are about to be sent,
	// and extends their claim to c.Until. It returns the ids of consumes
	// still held by c.Owner (at c.Now): only those may be sent.
	Begin(ctx context.Context, c Claim, ids []string) ([]string, error)
	// Finish applies outcomes in one durable write. A Done item is
	// removed whoever holds it; any other outcome applies only to an item
	// owner still holds, and counts an attempt.
	Finish(ctx context.Context, owner string, outcomes []Outcome) error
	// List returns items that f selects, oldest first.
	List(ctx context.Context, f Filter) ([]Item, error)
	// Stats counts the items.
	Stats(ctx context.Context) (Stats, error)
	// Resolve applies an admin action to a parked item: ErrNotFound when
	// id is not stored, ErrNotParked when it is pending.
	Resolve(ctx context.Context, id string, a Action, now time.Time) error
	// Close releases the store; calls after it fail with ErrClosed.
	Close() error
}

// Errors callers branch on.
var (
	// ErrFull: the store is at its bound.
	ErrFull = errors.New("outbox is full")
	// ErrNotFound: no item has the id.
	ErrNotFound = errors.New("outbox item not found")
	// ErrNotParked: the item is pending; only unknown or failed items
	// can be resolved.
	ErrNotParked = errors.New("outbox item is not unknown or failed")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("outbox store is closed")
)

// maxRecordID bounds a record id (the egress makes 32 characters).
const maxRecordID = 64

// checkRecordID accepts a non-empty id of at most maxRecordID letters,
// digits, '-' and '_'.
func checkRecordID(id string) error {
	if id == "" || len(id) > maxRecordID {
		return fmt.Errorf("record id must have 1 to %d characters", maxRecordID)
	}
	for _, c := range id {
		ok := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' ||
			c == '-' || c == '_'
		if !ok {
			return errors.New("record id may hold only letters, digits, '-' and '_'")
		}
	}
	return nil
}

// splitID returns the kind of an item id.
func splitID(id string) (Kind, bool) {
	k, rest, ok := strings.Cut(id, ":")
	if !ok || checkRecordID(rest) != nil {
		return "", false
	}
	switch Kind(k) {
	case KindReport, KindConsume:
		return Kind(k), true
	}
	return "", false
}

// checkOutcome validates an outcome's state.
func checkOutcome(o Outcome) error {
	if o.Done {
		return nil
	}
	switch o.State {
	case StatePending, StateUnknown, StateFailed:
		return nil
	}
	return fmt.Errorf("outcome of %s: invalid state %q", o.ID, o.State)
}

// clampError bounds an error text kept with an item (cutting at a byte
// may split a character: the broken end is dropped).
func clampError(s string) string {
	const maxErr = 300
	if len(s) <= maxErr {
		return s
	}
	return strings.ToValidUTF8(s[:maxErr], "")
}

// tally counts it.
func (s *Stats) tally(it Item) {
	s.counts(it.Kind).add(it.State, 1)
	s.Total++
	if it.State == StatePending &&
		(s.OldestPending.IsZero() || it.CreatedAt.Before(s.OldestPending)) {
		s.OldestPending = it.CreatedAt
	}
}

// matches reports whether f selects it.
func matches(it Item, f Filter) bool {
	return (f.Kind == "" || it.Kind == f.Kind) && (f.State == "" || it.State == f.State)
}

// listLimit is f's limit with the default applied.
func listLimit(f Filter) int {
	if f.Limit <= 0 {
		return DefaultListLimit
	}
	return f.Limit
}

// checkNew validates items given to Add: well-formed ids that match their
// kind and record, pending.
func checkNew(items []Item) error {
	for _, it := range items {
		k, ok := splitID(it.ID)
		switch {
		case !ok || k != it.Kind || it.ID != ItemID(it.Kind, it.Record.ID):
			return fmt.Errorf("add item %q: id does not match its kind and record", it.ID)
		case it.State != StatePending:
			return fmt.Errorf("add item %s: state %q, want pending", it.ID, it.State)
		}
	}
	return nil
}
