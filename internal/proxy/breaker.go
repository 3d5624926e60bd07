package proxy

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// BreakerState is the state of the app's circuit breaker.
type BreakerState string

// Breaker states.
const (
	// BreakerClosed: calls go to the app; failures are counted.
	BreakerClosed BreakerState = "closed"
	// BreakerHalfOpen: the open time is over; up to HalfOpenRequests
	// calls probe the app, and the rest are refused until they succeed
	// (closed) or one fails (open again).
	BreakerHalfOpen BreakerState = "half-open"
	// BreakerOpen: calls are refused without contacting the app.
	BreakerOpen BreakerState = "open"
)

// Defaults applied by NewBreaker for zero BreakerOptions fields.
const (
	DefaultOpenFor          = 10 * time.Second
	DefaultHalfOpenRequests = 1
)

// ErrCircuitOpen is matched (errors.Is) by every *OpenError: a call the
// breaker refused without contacting the app.
var ErrCircuitOpen = errors.New("app circuit open")

// OpenError is a call refused by the breaker. The app was not contacted.
type OpenError struct {
	// Wait is how long the breaker stays open, at least one second; a
	// client may retry after it.
	Wait time.Duration
}

func (e *OpenError) Error() string {
	return fmt.Sprintf("%v: retry after %s", ErrCircuitOpen, e.Wait)
}

// Is makes an OpenError match ErrCircuitOpen.
func (e *OpenError) Is(target error) bool { return target == ErrCircuitOpen }

// RetryAfter returns Wait, for callers that look for the method rather
// than the type.
func (e *OpenError) RetryAfter() time.Duration { return e.Wait }

// BreakerOptions configure a Breaker. The breaker trips on either rule
// that is set; NewBreaker refuses options that set neither.
type BreakerOptions struct {
	// ConsecutiveFailures trips the breaker after this many failed calls
	// in a row. Zero: this rule is off.
	ConsecutiveFailures int
	// FailureRatio trips the breaker when at least this share (0 < r <=
	// 1) of the calls counted in the current Interval failed, once
	// MinRequests calls were counted. Zero: this rule is off.
	FailureRatio float64
	// MinRequests is the number of calls the ratio rule waits for
	// (at least 1 when FailureRatio is set).
	MinRequests int
	// Interval is the rolling window in which closed-state calls are
	// counted. Zero: counts reset only when the state changes.
	Interval time.Duration
	// OpenFor is how long the breaker refuses calls before it lets a
	// probe through. Zero: DefaultOpenFor.
	OpenFor time.Duration
	// HalfOpenRequests is how many probe calls a half-open breaker lets
	// through; that many successes in a row close it. Zero:
	// DefaultHalfOpenRequests.
	HalfOpenRequests int
	// OnStateChange, when not nil, learns every state change. It is
	// called after the breaker's locks are released, on the goroutine of
	// the call (or State query) that noticed the change; it must not
	// block. Two changes in quick succession may be reported from two
	// goroutines.
	OnStateChange func(from, to BreakerState)
	// Now is the clock for Retry-After values; nil means time.Now. The
	// open time itself runs on the real clock (gobreaker has no other).
	Now func() time.Time
}

// Breaker is the app's circuit breaker, shared by the reverse proxy and
// the app hooks. A call fails when the app gives no answer (a transport
// error or a timeout) or answers 5xx; any other answer, 4xx included, is
// a success; a call whose client went away first counts as neither. It
// is safe for concurrent use and may outlive the Proxy that uses it (a
// reload keeps its state by passing the same Breaker to the new Proxy).
type Breaker struct {
	cb       *gobreaker.TwoStepCircuitBreaker[struct{}]
	openFor  time.Duration
	now      func() time.Time
	openedAt atomic.Int64 // b.now() in Unix nanoseconds when it last opened

	// mu guards changes: transitions noted under gobreaker's lock and
	// delivered by flush once that lock is released. pending is set with
	// changes and cleared with them, so that the calls of a quiet breaker
	// (nearly all of them) never take mu.
	mu       sync.Mutex
	changes  []change
	pending  atomic.Bool
	onChange func(from, to BreakerState)
}

// change is one state transition waiting to be delivered.
type change struct{ from, to BreakerState }

// outcome values reported to gobreaker; only errFailed and errExcluded
// are compared.
var (
	errFailed   = errors.New("app call failed")
	errExcluded = errors.New("client went away")
)

// NewBreaker checks o and returns a closed breaker.
func NewBreaker(o BreakerOptions) (*Breaker, error) {
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("breaker: %w", err)
	}
	b := &Breaker{
		openFor:  orDefault(o.OpenFor, DefaultOpenFor),
		now:      o.Now,
		onChange: o.OnStateChange,
	}
	if b.now == nil {
		b.now = time.Now
	}
	st := gobreaker.Settings{
		Name:          "app",
		MaxRequests:   uint32(orDefault(o.HalfOpenRequests, DefaultHalfOpenRequests)),
		Interval:      o.Interval,
		Timeout:       b.openFor,
		ReadyToTrip:   tripRule(o),
		OnStateChange: b.noteChange,
		IsExcluded:    func(err error) bool { return err == errExcluded },
	}
	if o.Interval > 0 {
		// A rolling window of ten buckets rather than fixed windows, so
		// a burst of failures is not forgotten at a window's edge.
		st.BucketPeriod = o.Interval / 10
	}
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](st)
	return b, nil
}

// validate reports every malformed option.
func (o BreakerOptions) validate() error {
	var errs []error
	if o.ConsecutiveFailures < 0 {
		errs = append(errs, errors.New("consecutive failures must not be negative"))
	}
	if o.FailureRatio < 0 || o.FailureRatio > 1 || math.IsNaN(o.FailureRatio) {
		errs = append(errs, errors.New("failure ratio must be in [0, 1]"))
	}
	if o.FailureRatio > 0 && o.MinRequests < 1 {
		errs = append(errs, errors.New("a failure ratio needs min requests >= 1"))
	}
	if o.ConsecutiveFailures == 0 && o.FailureRatio == 0 {
		errs = append(errs, errors.New("set consecutive failures or a failure ratio"))
	}
	if o.Interval < 0 || o.OpenFor < 0 || o.HalfOpenRequests < 0 {
		errs = append(errs, errors.New("interval, open time and half-open "+
			"requests must not be negative"))
	}
	return errors.Join(errs...)
}

// tripRule returns gobreaker's ReadyToTrip for o's two rules.
func tripRule(o BreakerOptions) func(gobreaker.Counts) bool {
	return func(c gobreaker.Counts) bool {
		if o.ConsecutiveFailures > 0 &&
			c.ConsecutiveFailures >= uint32(o.ConsecutiveFailures) {
			return true
		}
		counted := c.TotalSuccesses + c.TotalFailures
		return o.FailureRatio > 0 && counted >= uint32(o.MinRequests) &&
			float64(c.TotalFailures) >= o.FailureRatio*float64(counted)
	}
}

// State returns the breaker's state now. An open breaker whose open time
// is over reads as half-open.
func (b *Breaker) State() BreakerState {
	s := b.cb.State()
	b.flush()
	return breakerState(s)
}

// breakerState names a gobreaker state.
func breakerState(s gobreaker.State) BreakerState {
	switch s {
	case gobreaker.StateOpen:
		return BreakerOpen
	case gobreaker.StateHalfOpen:
		return BreakerHalfOpen
	}
	return BreakerClosed
}

// allow asks to make one call. It returns the function that reports the
// call's outcome (exactly once), or an *OpenError when the breaker
// refuses: open, or half-open with its probes already out.
func (b *Breaker) allow() (report func(outcome error), err error) {
	report, err = b.cb.Allow()
	b.flush()
	if err != nil {
		return nil, &OpenError{Wait: b.wait()}
	}
	return report, nil
}

// done hands the outcome of a call allow let through to its report.
func (b *Breaker) done(report func(outcome error), outcome error) {
	report(outcome)
	b.flush()
}

// rejecting reports whether a call now would be refused without a probe
// slot being taken, and how long to wait: true only while open.
func (b *Breaker) rejecting() (time.Duration, bool) {
	if b.State() != BreakerOpen {
		return 0, false
	}
	return b.wait(), true
}

// wait returns how long the breaker stays open from now, at least one
// second: a half-open breaker whose probes are out is expected to decide
// within about that.
func (b *Breaker) wait() time.Duration {
	left := time.Unix(0, b.openedAt.Load()).Add(b.openFor).Sub(b.now())
	return max(left, time.Second)
}

// noteChange is gobreaker's OnStateChange. gobreaker calls it holding its
// own lock, so it only records the change; flush delivers it.
func (b *Breaker) noteChange(_ string, from, to gobreaker.State) {
	if to == gobreaker.StateOpen {
		b.openedAt.Store(b.now().UnixNano())
	}
	if b.onChange == nil {
		return
	}
	b.mu.Lock()
	b.changes = append(b.changes, change{breakerState(from), breakerState(to)})
	b.pending.Store(true)
	b.mu.Unlock()
}

// flush delivers the recorded changes with no lock held.
func (b *Breaker) flush() {
	if b.onChange == nil || !b.pending.Load() {
		return
	}
	b.mu.Lock()
	pending := b.changes
	b.changes = nil
	b.pending.Store(false)
	b.mu.Unlock()
	for _, c := range pending {
		b.onChange(c.from, c.to)
	}
}
