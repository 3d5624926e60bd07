package keys

import (
	"fmt"
	"time"
)

// EventKind names a change of a key's state.
type EventKind string

// Event kinds.
const (
	// EventDisabled: the upstream rejected the key (401/403). A static key
	// stays disabled for the pool's life; a leased key's leases are
	// evicted and a lease carrying the same key again is not used.
	EventDisabled EventKind = "disabled"
	// EventExhausted: the key is out of quota (insufficient_quota, or its
	// daily token limit reached) until Until, the next UTC midnight.
	EventExhausted EventKind = "exhausted"
	// EventCooldown: a 429 set or extended the key's cooldown to Until.
	EventCooldown EventKind = "cooldown"
	// EventLeased: the platform leased a key (or a new version of one)
	// valid until Until.
	EventLeased EventKind = "leased"
)

// Reasons carried by events.
const (
	ReasonAuth              = "upstream_auth"
	ReasonInsufficientQuota = "insufficient_quota"
	ReasonDailyTokenLimit   = "daily_token_limit"
	ReasonRateLimited       = "rate_limited"
)

// Event is a change of one key's state, passed to Options.OnEvent. It
// names the key by its id and label, never by its value.
type Event struct {
	Kind EventKind
	// KeyID is the platform's key_id, or the 1-based position of a
	// static key.
	KeyID int64
	// Name is the key's secret-free label ("platform:123",
	// "env:OPENAI_API_KEY").
	Name string
	// Status is the upstream status that caused the event, 0 if none.
	Status int
	// Reason is one of the Reason constants, "" for EventLeased.
	Reason string
	// Until is when the state ends; zero when it does not end by itself.
	Until time.Time
}

func (e Event) String() string {
	s := fmt.Sprintf("key %d (%s) %s", e.KeyID, e.Name, e.Kind)
	if e.Reason != "" {
		s += " reason=" + e.Reason
	}
	if e.Status != 0 {
		s += fmt.Sprintf(" status=%d", e.Status)
	}
	if !e.Until.IsZero() {
		s += " until=" + e.Until.UTC().Format(time.RFC3339)
	}
	return s
}
