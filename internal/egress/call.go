package egress

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/keys"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/outbox"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/usage"
)

// Causes with which a call's upstream context is cut.
var (
	errCallTimeout   = errors.New("egress call timeout")
	errShutdownCut   = errors.New("egress shutdown deadline")
	errDrainDeadline = errors.New("egress drain deadline after the app went away")
)

// call is one app request, from ServeHTTP to its finalisation. Its fields
// are owned by the request's goroutine until end hands them over.
type call struct {
	h      *Handler
	id     string
	start  time.Time
	method string

	url      *url.URL
	endpoint string
	kind     endpoint
	user     int64
	// spends: the call may spend tokens and names a user, who pays its
	// cost; charged: that cost goes to the Budget.
	spends  bool
	charged bool
	req     prepared
	// reserveTokens is the reservation's size in tokens (0 when no user
	// is named); reservedUnits is what the Budget holds (0 when none).
	reserveTokens int64
	reservedUnits int64

	// Upstream context and the app's presence.
	ctx   context.Context
	watch *appWatch

	// The attempts. lease is the last attempt's; leaseOpen is true until
	// it is reported.
	started   bool
	attempts  int
	lease     keys.Lease
	leaseOpen bool
	// keys are the keys injected into the call's attempts, masked in
	// its 2xx answer.
	keys []string

	// The last attempt's answer.
	status    int
	outcome   keys.Outcome
	result    usage.Result
	body      *usage.Body // open while the answer is being read
	cut       *streamCut  // masks keys in the 2xx answer
	exit      outbox.Exit
	appStatus int
	failure   error
	// broken: the answer failed after the app got its status; its
	// connection is to be cut rather than the answer ended cleanly.
	broken bool

	panicked bool
}

func (h *Handler) newCall(r *http.Request) *call {
	return &call{h: h, id: h.opts.NewID(), start: time.Now(), method: r.Method}
}

// appWatch notices the app going away and then bounds the drain: the
// upstream call is cut DrainTimeout after the app left.
type appWatch struct {
	gone    atomic.Bool
	d       time.Duration
	cancel  context.CancelCauseFunc
	onLeave func() // optional

	mu      sync.Mutex
	timer   *time.Timer // guarded by mu
	stopped bool        // guarded by mu
}

// leave records that the app went away and starts the drain deadline.
// It may be called more than once, from any goroutine.
func (a *appWatch) leave() {
	if a.gone.Swap(true) {
		return
	}
	a.mu.Lock()
	if !a.stopped {
		a.timer = time.AfterFunc(a.d, func() { a.cancel(errDrainDeadline) })
	}
	a.mu.Unlock()
	if a.onLeave != nil {
		a.onLeave()
	}
}

// stop ends the watch once the call is over.
func (a *appWatch) stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopped = true
	if a.timer != nil {
		a.timer.Stop()
	}
}

// upstreamContext returns the context of the upstream attempts: detached
// from the app's request (an app that goes away does not end the call,
// whose usage is still to be read), bounded by CallTimeout, cut by
// Shutdown's deadline and DrainTimeout after the app left. stop releases
// it once the answer has been handled.
func (c *call) upstreamContext(r *http.Request) (stop func()) {
	h := c.h
	base, cancel := context.WithCancelCause(context.WithoutCancel(r.Context()))
	ctx, cancelTimeout := context.WithTimeoutCause(base, h.opts.CallTimeout, errCallTimeout)
	stopAbort := context.AfterFunc(h.abort, func() { cancel(errShutdownCut) })
	c.ctx = ctx
	c.watch = &appWatch{d: h.opts.DrainTimeout, cancel: cancel, onLeave: h.onAppGone}
	stopGone := context.AfterFunc(r.Context(), c.watch.leave)
	return func() {
		stopGone()
		stopAbort()
		c.watch.stop()
		cancelTimeout()
		cancel(nil)
	}
}

// run makes the call and delivers its answer.
func (h *Handler) run(c *call, w http.ResponseWriter, r *http.Request) {
	stop := c.upstreamContext(r)
	defer stop()

	ans, ref := c.forward(r, h.upstreamHeader(r.Header))
	switch {
	case ref == nil:
		c.deliver(w, ans)
	case ref.e.outcome == RefusedAppGone:
		h.opts.Metrics.EgressCall(RefusedAppGone, 0)
	default:
		h.refuse(w, r, ref.e, ref.cause)
	}
}

// answer is an attempt's result: an answer whose body is unread, or the
// transport error when none came.
type answer struct {
	resp *http.Response
	err  error
}

// refusal is an answer the handler gives without an upstream call, with
// its cause for the log.
type refusal struct {
	e     apiError
	cause error
}

// forward sends the request upstream, with another key after a failure
// that rotates keys, and returns the last attempt's answer. A refusal is
// returned when no attempt could be made.
func (c *call) forward(r *http.Request, hdr http.Header) (answer, *refusal) {
	h := c.h
	var last answer
	for {
		lease, err := h.opts.Pool.Acquire(r.Context(), c.req.info.Model,
			maxCompletion(c.req.info))
		switch {
		case err != nil && c.attempts > 0:
			// The previous attempt's failure is the answer.
			h.opts.Logger.Warn("egress retry: no other key",
				slog.String("call_id", c.id), slog.String("err", h.errText(err)))
			return last, nil
		case err != nil && r.Context().Err() != nil:
			return answer{}, &refusal{e: apiError{outcome: RefusedAppGone}}
		case err != nil:
			return answer{}, &refusal{e: noKeyAnswer(err), cause: err}
		}

		c.started, c.lease, c.leaseOpen = true, lease, true
		c.attempts++
		h.redact.add(lease.Key.Reveal())
		c.addKey(lease.Key.Reveal())
		resp, err := c.send(hdr, lease)
		reason := retryReason(resp, err)
		if reason == "" || c.attempts >= h.opts.MaxAttempts ||
			c.watch.gone.Load() || c.ctx.Err() != nil {
			return answer{resp: resp, err: err}, nil
		}

		// Report this attempt now, so that the pool knows before the
		// next Acquire, and keep its answer in case no key is left.
		last = c.settleFailedAttempt(resp, err)
		h.opts.Metrics.EgressRetry(reason)
		attrs := []slog.Attr{
			slog.String("call_id", c.id),
			slog.Int64("key_id", lease.KeyID),
			slog.String("key_name", lease.Name),
			slog.Int("status", statusOf(resp)),
			slog.String("reason", reason),
		}
		if err != nil {
			attrs = append(attrs, slog.String("err", h.errText(err)))
		}
		h.opts.Logger.LogAttrs(context.Background(), slog.LevelInfo,
			"egress retry with another key", attrs...)
	}
}

// send makes one attempt with lease's key.
func (c *call) send(hdr http.Header, lease keys.Lease) (*http.Response, error) {
	req, err := http.NewRequestWithContext(c.ctx, c.method, c.url.String(),
		bytes.NewReader(c.req.body))
	if err != nil {
		return nil, err
	}
	req.Header = c.h.setKey(hdr, lease.Key.Reveal())
	// RoundTrip, not a Client: redirects are never followed.
	return c.h.opts.Transport.RoundTrip(req)
}

// settleFailedAttempt reports a failed attempt's lease and returns its
// answer with the body buffered (bounded), to be delivered if no other
// attempt can be made.
func (c *call) settleFailedAttempt(resp *http.Response, err error) answer {
	h := c.h
	if resp == nil {
		h.opts.Pool.Report(c.lease, keys.Outcome{})
		c.leaseOpen = false
		c.outcome = keys.Outcome{}
		return answer{err: err}
	}
	// A body the egress cannot decode, or that broke off, is kept as
	// far as it was read: deliverFailure replaces it if it is the one
	// to deliver.
	body, _ := readErrorBody(resp)
	o := keys.OutcomeFromResponse(resp.StatusCode, resp.Header, body, h.opts.Now())
	h.opts.Pool.Report(c.lease, o)
	c.leaseOpen = false
	c.outcome = o
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return answer{resp: resp}
}

// addKey remembers a key injected into the call, once.
func (c *call) addKey(key string) {
	for _, k := range c.keys {
		if k == key {
			return
		}
	}
	c.keys = append(c.keys, key)
}

// retryReason names why an attempt's failure moves the call to another
// key, or "" when it does not.
func retryReason(resp *http.Response, err error) string {
	if err != nil {
		return RetryReasonTransport
	}
	switch s := resp.StatusCode; {
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		return RetryReasonAuth
	case s == http.StatusTooManyRequests:
		return RetryReasonRateLimit
	case s >= 500:
		return RetryReasonServer
	}
	return ""
}

func statusOf(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

// exitFor says how a call that failed with err (reading or sending)
// ended: cut by Shutdown or the call timeout, after the app left, or by
// the upstream.
func (c *call) exitFor(err error) outbox.Exit {
	switch cause := context.Cause(c.ctx); {
	case errors.Is(cause, errShutdownCut):
		return outbox.ExitShutdown
	case errors.Is(cause, errCallTimeout):
		return outbox.ExitTimeout
	case c.watch.gone.Load():
		return outbox.ExitClientGone
	case isTimeout(err):
		return outbox.ExitTimeout
	}
	return outbox.ExitUpstreamError
}
