package keys

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// Pool hands out keys for upstream calls and learns from their outcomes.
// Implementations are safe for concurrent use.
type Pool interface {
	// Acquire picks a key for one call to model that may produce up to
	// maxTokens completion tokens (0: unknown). The call is counted
	// against the key's requests-per-minute limit at once, and maxTokens
	// is held against its daily token limit until Report. An error is a
	// *NoKeyError (errors.Is ErrNoKey) or the context's error.
	Acquire(ctx context.Context, model string, maxTokens int64) (Lease, error)
	// Report returns the lease with the call's outcome. Every Lease
	// from Acquire must be reported exactly once; later reports of the
	// same lease are ignored, as is the zero Lease.
	Report(l Lease, o Outcome)
}

// Limits are a key's local limits. Zero means unlimited.
type Limits struct {
	// RPM is the most calls the key may start in any minute.
	RPM int
	// DailyTokens is the most tokens the key may use in one UTC day.
	DailyTokens int64
}

// Defaults applied to zero Options fields.
const (
	DefaultCooldown           = 2 * time.Second
	DefaultMaxCooldown        = 15 * time.Minute
	DefaultServerErrorPenalty = 5 * time.Second
)

// Options are the rotation rules and hooks shared by every Pool.
type Options struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OnEvent, if set, is called for every change of a key's state,
	// without any lock of the pool held, on the goroutine that caused
	// it. It must not block for long.
	OnEvent func(Event)
	// DefaultCooldown is a key's cooldown after a 429 that says neither
	// Retry-After nor a rate-limit reset.
	DefaultCooldown time.Duration
	// MaxCooldown caps the cooldown one 429 may set; a longer upstream
	// hint is cut to it. A cooldown already set is never shortened.
	MaxCooldown time.Duration
	// ServerErrorPenalty is how long a key that got a 5xx is picked only
	// when no other key is eligible. It never makes a key ineligible.
	ServerErrorPenalty time.Duration
}

// withDefaults returns o with zero fields filled in.
func (o Options) withDefaults() Options {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DefaultCooldown <= 0 {
		o.DefaultCooldown = DefaultCooldown
	}
	if o.MaxCooldown <= 0 {
		o.MaxCooldown = DefaultMaxCooldown
	}
	if o.ServerErrorPenalty <= 0 {
		o.ServerErrorPenalty = DefaultServerErrorPenalty
	}
	return o
}

// emit calls the hook for each event; callers hold no lock.
func (o Options) emit(events []Event) {
	if o.OnEvent == nil {
		return
	}
	for _, e := range events {
		o.OnEvent(e)
	}
}

// Lease is one key handed out for one call. Its String and every fmt verb
// show the key only in redacted form.
type Lease struct {
	// KeyID is the platform's key_id, or the 1-based position of a
	// static key.
	KeyID int64
	// Name is the key's secret-free label.
	Name string
	// Key is the key to send upstream.
	Key Secret
	// Model is the model the platform leased the key for ("" for static
	// keys); the key is used for every model.
	Model string
	// ExpiresAt is when a platform lease ends; zero for static keys.
	ExpiresAt time.Time
	// Platform is true for a key leased from the platform, whose usage
	// is to be reported there under KeyID.
	Platform bool

	t      *ticket
	origin Pool // the pool that issued it, when a Swappable handed it out
}

func (l Lease) String() string {
	return fmt.Sprintf("key %d (%s) %s", l.KeyID, l.Name, l.Key.Redacted())
}

// ticket ties a Lease to the state it was drawn from.
type ticket struct {
	st        *keyState
	maxTokens int64
	reported  atomic.Bool
}

// claim reports whether this is the lease's first report.
func (l Lease) claim() (*ticket, bool) {
	if l.t == nil || !l.t.reported.CompareAndSwap(false, true) {
		return nil, false
	}
	return l.t, true
}

// KeyState summarises a key for status pages.
type KeyState string

// Key states, in the order a key is checked.
const (
	StateActive    KeyState = "active"
	StateDisabled  KeyState = "disabled"
	StateExhausted KeyState = "exhausted"
	StateCooling   KeyState = "cooling"
)

// KeyStatus is a secret-free snapshot of one key.
type KeyStatus struct {
	KeyID              int64
	Name               string
	Redacted           string
	State              KeyState
	Until              time.Time
	Limits             Limits
	RequestsLastMinute int
	TokensToday        int64
	InFlight           int
	ExpiresAt          time.Time
}

// contextErr wraps a cancelled context for Acquire.
func contextErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("acquire key: %w", err)
	}
	return nil
}
