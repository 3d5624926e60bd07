package outbox

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Defaults applied to zero DeliverOptions fields.
const (
	DefaultUsageType       = "openai_tokens"
	DefaultCallTimeout     = 10 * time.Second
	DefaultBackoffMin      = time.Second
	DefaultBackoffMax      = 5 * time.Minute
	DefaultBatch           = 16
	DefaultPollInterval    = time.Second
	DefaultBreakerFailures = 5
	DefaultBreakerOpenFor  = 30 * time.Second
	// storeTimeout bounds the store writes that record a delivery's
	// end; they are made even when the caller's context has ended.
	storeTimeout = 10 * time.Second
)

// DeliverOptions configure a Deliverer.
type DeliverOptions struct {
	// PlatformURL is the platform's base URL (scheme, host and an
	// optional path prefix), without credentials.
	PlatformURL string
	// AutomationID is this automation's platform id (the report path).
	AutomationID int64
	// Token returns the service token sent as X-Zimmer-Service-Token,
	// asked before each call (it may rotate). An empty token fails the
	// attempt before anything is sent. Required.
	Token func() string
	// Client sends the calls; nil means a clone of the default
	// transport. Redirects are never followed.
	Client *http.Client
	// UsageType is the consume's usage_type; empty means
	// DefaultUsageType.
	UsageType string
	// CallTimeout bounds one platform call.
	CallTimeout time.Duration
	// ClaimFor is how long a claim lasts; zero means three CallTimeouts.
	// It must exceed CallTimeout: a claim that lapses mid-call lets
	// another deliverer repeat a report (deduped by the platform) or
	// park a consume as unknown.
	ClaimFor time.Duration
	// BackoffMin and BackoffMax bound the wait before a retry; it
	// doubles with each attempt, with jitter, and honours Retry-After up
	// to BackoffMax.
	BackoffMin, BackoffMax time.Duration
	// Batch is how many items one round claims and sends at once.
	Batch int
	// PollInterval is the wait between rounds when nothing was due; an
	// Enqueue ends it early.
	PollInterval time.Duration
	// BreakerFailures failed calls in a row (no answer, 5xx, 408, 429,
	// and 401 or 403: a refused service token) open the breaker; it then
	// refuses calls for BreakerOpenFor, and Run claims nothing meanwhile.
	BreakerFailures int
	BreakerOpenFor  time.Duration
	// Owner names this deliverer's claims; empty means a random name.
	// Deliverers sharing a store must have distinct owners.
	Owner string
	// Now is the clock of claims and backoff; nil means time.Now.
	Now func() time.Time
	// OnConsumeAnswer receives each consume the platform answered 2xx
	// with a readable body, once the round's outcomes are written (or
	// failed to be: the platform charged either way). It is called from
	// the deliverer's goroutine, without locks held; it should not block
	// long.
	OnConsumeAnswer func(ConsumeAnswer)
	// OnEvent receives each attempt's result and each store error
	// (for logs and metrics). Same calling rules as OnConsumeAnswer.
	OnEvent func(Event)
}

// Result is how a delivery attempt ended.
type Result string

// The attempt results.
const (
	ResultDelivered Result = "delivered"
	ResultRetry     Result = "retry"
	ResultUnknown   Result = "unknown"
	ResultFailed    Result = "failed"
	// ResultStoreError: the store failed (no item named).
	ResultStoreError Result = "store_error"
)

// Event reports one delivery attempt, or a store error.
type Event struct {
	ItemID string
	Kind   Kind
	Result Result
	// Status is the platform's answer status, 0 when none came.
	Status int
	// Err is why the item was not delivered, or an answer that could
	// not be read; it never holds a secret.
	Err error
	// Attempts counts this item's attempts, this one included.
	Attempts int
}

// Deliverer sends an Outbox's items to the platform: reports to
// {PlatformURL}/api/automations/{AutomationID}/openai-usage with the
// record id as Idempotency-Key, consumes to
// {PlatformURL}/api/automation-usage/consume. A gobreaker breaker guards
// the calls.
//
// A 401 or 403 is about the service token, not the item: reports and
// consumes alike are retried with backoff (their error matches
// ErrTokenRefused) and the breaker counts it, so one token mistake opens
// the breaker instead of parking every item.
//
// Reports are retried with backoff until answered 2xx; any other 4xx
// than 401, 403, 408, 409, 425 and 429 (and a 1xx or 3xx) parks them as
// failed. Consumes are never sent twice blindly: an attempt is retried
// only when no byte of it can have reached the platform (no token,
// breaker open, dial failure, a failure before the request was written)
// or the platform refused the token. Once it may have been written, a
// transport failure, a timeout or a 5xx parks it as unknown; another
// non-2xx answer parks it as failed (the platform refused it without
// charging). Each consume is marked durably (Store.Begin) before it is
// sent, so a crash mid-call also leaves it unknown.
//
// Several Deliverers may share a store; each item goes to one of them at
// a time.
type Deliverer struct {
	ob       *Outbox
	store    Store
	opts     DeliverOptions
	client   *http.Client
	breaker  *gobreaker.CircuitBreaker[answer]
	report   string // report endpoint URL
	consume  string // consume endpoint URL
	owner    string
	roundsMu sync.Mutex // one round at a time
}

// NewDeliverer checks opts and returns a Deliverer for ob. It contacts
// nobody.
func NewDeliverer(ob *Outbox, opts DeliverOptions) (*Deliverer, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("outbox deliverer: %w", err)
	}
	report, err := url.JoinPath(opts.PlatformURL, "api", "automations",
		strconv.FormatInt(opts.AutomationID, 10), "openai-usage")
	if err != nil {
		return nil, fmt.Errorf("outbox deliverer: platform url: %w", err)
	}
	consume, err := url.JoinPath(opts.PlatformURL, "api", "automation-usage", "consume")
	if err != nil {
		return nil, fmt.Errorf("outbox deliverer: platform url: %w", err)
	}
	d := &Deliverer{
		ob: ob, store: ob.store, opts: opts, report: report, consume: consume,
		owner: opts.Owner,
	}
	client := *opts.Client
	client.CheckRedirect = func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}
	d.client = &client
	d.breaker = gobreaker.NewCircuitBreaker[answer](gobreaker.Settings{
		Name:    "outbox-platform",
		Timeout: opts.BreakerOpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= uint32(opts.BreakerFailures)
		},
		// Our own missing token or the caller's shutdown says nothing
		// about the platform.
		IsExcluded: func(err error) bool {
			return errors.Is(err, errNoToken) || errors.Is(err, context.Canceled)
		},
	})
	return d, nil
}

// withDefaults fills zero fields and checks the rest.
func (o DeliverOptions) withDefaults() (DeliverOptions, error) {
	u, err := url.Parse(o.PlatformURL)
	switch {
	case err != nil:
		return o, errors.New("platform url does not parse")
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return o, errors.New("platform url needs an http or https scheme and a host")
	case u.User != nil:
		return o, errors.New("platform url must not carry credentials")
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return o, errors.New("platform url must not have a query or a fragment")
	case o.AutomationID <= 0:
		return o, errors.New("automation id must be positive")
	case o.Token == nil:
		return o, errors.New("token function is nil")
	case o.CallTimeout < 0, o.ClaimFor < 0, o.BackoffMin < 0, o.BackoffMax < 0,
		o.Batch < 0, o.PollInterval < 0, o.BreakerFailures < 0, o.BreakerOpenFor < 0:
		return o, errors.New("negative option")
	}
	if o.Client == nil {
		o.Client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	o.UsageType = cmp.Or(o.UsageType, DefaultUsageType)
	o.CallTimeout = cmp.Or(o.CallTimeout, DefaultCallTimeout)
	o.ClaimFor = cmp.Or(o.ClaimFor, 3*o.CallTimeout)
	o.BackoffMin = cmp.Or(o.BackoffMin, DefaultBackoffMin)
	o.BackoffMax = cmp.Or(o.BackoffMax, max(DefaultBackoffMax, o.BackoffMin))
	o.Batch = cmp.Or(o.Batch, DefaultBatch)
	o.PollInterval = cmp.Or(o.PollInterval, DefaultPollInterval)
	o.BreakerFailures = cmp.Or(o.BreakerFailures, DefaultBreakerFailures)
	o.BreakerOpenFor = cmp.Or(o.BreakerOpenFor, DefaultBreakerOpenFor)
	if o.Now == nil {
		o.Now = time.Now
	}
	switch {
	case o.ClaimFor <= o.CallTimeout:
		return o, errors.New("claim duration must exceed the call timeout")
	case o.BackoffMax < o.BackoffMin:
		return o, errors.New("backoff max is below backoff min")
	}
	if o.Owner == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		o.Owner = hex.EncodeToString(b[:])
	}
	return o, nil
}

// Owner returns the name of this deliverer's claims.
func (d *Deliverer) Owner() string { return d.owner }

// Run delivers due items until ctx ends: a round whenever an Enqueue
// stored something, the last round claimed a full batch, or PollInterval
// passed. While the breaker is open it claims nothing; half-open, one
// item. It returns when ctx has ended and the current round is done
// (calls under way are not cut for a consume; see Flush).
func (d *Deliverer) Run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.ob.wake:
		case <-timer.C:
		}
		for ctx.Err() == nil {
			limit := d.limit()
			if limit == 0 {
				break
			}
			claimed, _, err := d.round(ctx, limit)
			if err != nil && ctx.Err() == nil {
				d.emit(Event{Result: ResultStoreError, Err: err})
			}
			if err != nil || claimed < limit {
				break
			}
		}
		timer.Reset(d.opts.PollInterval)
	}
}

// Flush delivers due items until none is left, a whole round is only
// retried (the platform is down), the breaker is open, or ctx ends, for
// a shutdown: what is left stays stored for the next start. A report
// call is cut when ctx ends (it is retried later); a consume call runs
// to its CallTimeout, so that its outcome is known.
func (d *Deliverer) Flush(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("flush outbox: %w", err)
		}
		limit := d.limit()
		if limit == 0 {
			return nil
		}
		claimed, settled, err := d.round(ctx, limit)
		if err != nil {
			return fmt.Errorf("flush outbox: %w", err)
		}
		if claimed == 0 || settled == 0 {
			return nil
		}
	}
}

// limit is how many items a round may claim in the breaker's state.
func (d *Deliverer) limit() int {
	switch d.breaker.State() {
	case gobreaker.StateOpen:
		return 0
	case gobreaker.StateHalfOpen:
		return 1
	}
	return d.opts.Batch
}

// attempt is one item's delivery attempt.
type attempt struct {
	item    Item
	outcome Outcome
	event   Event
	answer  *ConsumeAnswer
}

// round claims up to limit due items, sends them at once and records
// their outcomes in one write. It returns how many it claimed and how
// many it settled (delivered or parked).
func (d *Deliverer) round(ctx context.Context, limit int) (claimed, settled int, err error) {
	d.roundsMu.Lock()
	defer d.roundsMu.Unlock()

	// Claim, then mark the consumes as about to be sent.
	now := d.now()
	c := Claim{Owner: d.owner, Now: now, Until: now.Add(d.opts.ClaimFor), Limit: limit}
	items, err := d.store.Claim(ctx, c)
	if err != nil || len(items) == 0 {
		return 0, 0, err
	}
	send, err := d.begin(ctx, items)
	if err != nil {
		d.emit(Event{Result: ResultStoreError, Err: err})
	}

	// Send every item at once.
	attempts := make([]attempt, len(send))
	var wg sync.WaitGroup
	for i, it := range send {
		wg.Go(func() { attempts[i] = d.deliver(ctx, it) })
	}
	wg.Wait()

	// Record the outcomes, then tell the hooks.
	outcomes := make([]Outcome, len(attempts))
	for i, a := range attempts {
		outcomes[i] = a.outcome
		if a.outcome.Done || a.outcome.State != StatePending {
			settled++
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	if len(outcomes) > 0 {
		err = d.store.Finish(sctx, d.owner, outcomes)
	}
	for _, a := range attempts {
		if a.answer != nil && d.opts.OnConsumeAnswer != nil {
			d.opts.OnConsumeAnswer(*a.answer)
		}
		d.emit(a.event)
	}
	return len(items), settled, err
}

// begin records the claimed consumes as about to be sent and returns the
// items to send: the reports, and the consumes still held. When the
// store fails, no consume is sent (its claim lapses).
func (d *Deliverer) begin(ctx context.Context, items []Item) ([]Item, error) {
	var ids []string
	send := make([]Item, 0, len(items))
	for _, it := range items {
		if it.Kind == KindConsume {
			ids = append(ids, it.ID)
		} else {
			send = append(send, it)
		}
	}
	if len(ids) == 0 {
		return send, nil
	}
	now := d.now()
	c := Claim{Owner: d.owner, Now: now, Until: now.Add(d.opts.ClaimFor)}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	held, err := d.store.Begin(sctx, c, ids)
	if err != nil {
		return send, err
	}
	for _, it := range items {
		if it.Kind == KindConsume && slices.Contains(held, it.ID) {
			send = append(send, it)
		}
	}
	return send, nil
}

// deliver makes one attempt.
func (d *Deliverer) deliver(ctx context.Context, it Item) attempt {
	if it.Kind == KindConsume {
		return d.deliverConsume(ctx, it)
	}
	return d.deliverReport(ctx, it)
}

// deliverReport sends a report and decides its outcome.
func (d *Deliverer) deliverReport(ctx context.Context, it Item) attempt {
	ctx, cancel := context.WithTimeout(ctx, d.opts.CallTimeout)
	defer cancel()
	a, err := d.call(ctx, d.report, reportRequest(it.Record), it.Record.ID)
	switch {
	case err == nil && a.status >= 200 && a.status < 300:
		return d.done(it, a.status, nil, nil)
	case err == nil && !retryableReport(a.status):
		return d.park(it, StateFailed, a.status,
			fmt.Errorf("report refused: status %d", a.status))
	case err == nil:
		err = fmt.Errorf("report not taken: status %d", a.status)
	}
	return d.retry(it, a, fmt.Errorf("send report: %w", d.breakerErr(err)))
}

// retryableReport reports whether a non-2xx answer to a report may be
// retried: 5xx, the 4xx that say "try again", and a refused token.
func retryableReport(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusConflict, http.StatusTooEarly,
		http.StatusTooManyRequests:
		return true
	}
	return status >= 500 || tokenRefused(status)
}

// deliverConsume sends a consume and decides its outcome. The call is
// not cut by ctx: once sent, its answer is waited for (up to
// CallTimeout) so that its outcome is known.
func (d *Deliverer) deliverConsume(ctx context.Context, it Item) attempt {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.opts.CallTimeout)
	defer cancel()
	a, err := d.call(ctx, d.consume, consumeRequest(it.Record, d.opts.UsageType), "")
	switch {
	case err != nil && !a.written:
		return d.retry(it, a, fmt.Errorf("send consume (not sent): %w", d.breakerErr(err)))
	case errors.Is(err, ErrTokenRefused):
		// Not applied: the platform authenticates before it charges
		// (FastAPI's auth dependency runs before the handler, which alone
		// touches the ledger), so a 401 or 403 charged nobody and the
		// consume may be sent again.
		return d.retry(it, a, fmt.Errorf("send consume (not applied): %w", err))
	case err != nil && a.status == 0:
		return d.park(it, StateUnknown, 0,
			fmt.Errorf("send consume: outcome unknown: %w", err))
	case a.status >= 500:
		return d.park(it, StateUnknown, a.status,
			fmt.Errorf("consume answered status %d: outcome unknown", a.status))
	case a.status < 200 || a.status >= 300:
		return d.park(it, StateFailed, a.status,
			fmt.Errorf("consume refused: status %d", a.status))
	}
	ans, derr := decodeConsume(a.body, it.Record)
	if derr != nil {
		return d.done(it, a.status, fmt.Errorf("consume applied: %w", derr), nil)
	}
	return d.done(it, a.status, nil, &ans)
}

// breakerErr names the breaker's refusals.
func (d *Deliverer) breakerErr(err error) error {
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return fmt.Errorf("%w: circuit breaker open", errUnhealthy)
	}
	return err
}

// done finishes a delivered item.
func (d *Deliverer) done(it Item, status int, note error, ans *ConsumeAnswer) attempt {
	return attempt{
		item:    it,
		outcome: Outcome{ID: it.ID, Done: true},
		event: Event{ItemID: it.ID, Kind: it.Kind, Result: ResultDelivered, Status: status,
			Err: note, Attempts: it.Attempts + 1},
		answer: ans,
	}
}

// park finishes an item as unknown or failed.
func (d *Deliverer) park(it Item, s State, status int, err error) attempt {
	res := ResultFailed
	if s == StateUnknown {
		res = ResultUnknown
	}
	return attempt{
		item:    it,
		outcome: Outcome{ID: it.ID, State: s, Next: d.now(), Error: err.Error()},
		event: Event{ItemID: it.ID, Kind: it.Kind, Result: res, Status: status, Err: err,
			Attempts: it.Attempts + 1},
	}
}

// retry schedules another attempt after the backoff.
func (d *Deliverer) retry(it Item, a answer, err error) attempt {
	next := d.now().Add(d.backoff(it.Attempts, a.retryAfter))
	return attempt{
		item:    it,
		outcome: Outcome{ID: it.ID, State: StatePending, Next: next, Error: err.Error()},
		event: Event{ItemID: it.ID, Kind: it.Kind, Result: ResultRetry, Status: a.status,
			Err: err, Attempts: it.Attempts + 1},
	}
}

// backoff is the wait before attempt number attempts+2: BackoffMin
// doubled per earlier attempt, capped at BackoffMax, with jitter in its
// upper half, and at least retryAfter (capped too).
func (d *Deliverer) backoff(attempts int, retryAfter time.Duration) time.Duration {
	lo, hi := d.opts.BackoffMin, d.opts.BackoffMax
	w := lo
	for range min(attempts, 40) {
		if w >= hi/2 {
			w = hi
			break
		}
		w *= 2
	}
	w = min(w, hi)
	w = w/2 + time.Duration(mrand.Int64N(int64(w/2)+1))
	return min(max(w, retryAfter), hi)
}

// now reads the clock.
func (d *Deliverer) now() time.Time { return d.opts.Now() }

// emit hands an event to the hook.
func (d *Deliverer) emit(e Event) {
	if d.opts.OnEvent != nil {
		d.opts.OnEvent(e)
	}
}
