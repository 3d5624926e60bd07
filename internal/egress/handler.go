package egress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/keys"
)

// Handler is the egress for one upstream. It is safe for concurrent use.
type Handler struct {
	opts   Options
	redact *keyRedactor
	track  tracker

	// abort is cancelled when Shutdown's deadline passes: every upstream
	// call still running ends with outbox.ExitShutdown.
	abort       context.Context
	cancelAbort context.CancelFunc

	// onAppGone, when set (by tests), is called once per call when the
	// handler notices that the app went away.
	onAppGone func()
}

var _ http.Handler = (*Handler)(nil)

// New returns a Handler. Pool and Sink are required; Options documents
// every default. It starts no goroutine.
func New(opts Options) (*Handler, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}
	abort, cancel := context.WithCancel(context.Background())
	return &Handler{opts: o, redact: newKeyRedactor(), abort: abort, cancelAbort: cancel}, nil
}

// ServeHTTP forwards one app request upstream. See the package comment.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.track.begin() {
		h.refuse(w, r, errShutdown, nil)
		return
	}
	c := h.newCall(r)
	defer func() {
		p := recover()
		if p != nil {
			c.panicked = true
		}
		broken := c.broken
		c.end()
		if p != nil {
			h.opts.Logger.Error("egress handler panic",
				slog.String("call_id", c.id), slog.String("panic", fmt.Sprintf("%T", p)))
		}
		if p != nil || broken {
			// Cut the app's connection: a clean end would pass a
			// truncated answer off as whole.
			panic(http.ErrAbortHandler)
		}
	}()
	h.serve(c, w, r)
}

// serve checks and prepares the request, reserves the user's budget and
// runs the call; c.end finalises whatever happened.
func (h *Handler) serve(c *call, w http.ResponseWriter, r *http.Request) {
	// 1. Not from a browser; where to, for whom, and whether charged.
	e := h.route(c, r)

	// 2. The body, uncompressed, read whole, made to ask for usage and,
	// when charged, capped.
	if e == nil {
		e = h.readRequest(c, w, r)
	}

	// 3. Room to record the usage.
	if e == nil && h.opts.Sink.Full() {
		e = &errBacklog
	}

	// 4. The user's budget.
	if e == nil {
		e = h.sizeReservation(c)
	}
	if e != nil {
		h.refuse(w, r, *e, nil)
		return
	}
	if e, err := h.reserve(c); e != nil {
		h.refuse(w, r, *e, err)
		return
	}

	// 5. The call itself.
	h.run(c, w, r)
}

// route checks where the request goes and for whom, before its body is
// read, and fills c's destination, user and charging.
func (h *Handler) route(c *call, r *http.Request) *apiError {
	if fromBrowser(r.Header) {
		return &errBrowser
	}
	u, e := h.target(r)
	if e == nil {
		c.user, e = h.userOf(r.Header)
	}
	if e != nil {
		return e
	}
	c.url = u
	c.endpoint = truncate(u.Path, maxEndpointLen)
	c.kind = endpointOf(r.URL.EscapedPath())
	c.spends = c.user > 0 && spends(r.Method)
	c.charged = c.spends && h.opts.Budget != nil
	if c.charged && !c.kind.metered() {
		return &errUnmetered // a budget cannot cover what cannot be metered
	}
	return nil
}

// readRequest reads and prepares the body into c.req.
func (h *Handler) readRequest(c *call, w http.ResponseWriter, r *http.Request) *apiError {
	if e := checkEncoding(r.Header); e != nil {
		return e
	}
	body, e := h.readBody(w, r)
	if e != nil {
		return e
	}
	c.req, e = prepare(c.kind, r.Header.Get("Content-Type"), body)
	if e == nil && c.charged {
		e = h.capCompletion(&c.req, c.kind)
	}
	return e
}

// refuse answers e without any upstream call, and logs the cause.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, e apiError, cause error) {
	e.write(w)
	h.opts.Metrics.EgressCall(e.outcome, e.status)
	level := slog.LevelDebug
	if cause != nil || e.status >= 500 {
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.Int("status", e.status),
		slog.String("code", e.code),
	}
	if cause != nil {
		attrs = append(attrs, slog.String("err", h.errText(cause)))
	}
	h.opts.Logger.LogAttrs(context.Background(), level, "egress refused", attrs...)
}

// finalizeContext bounds one Budget or Sink call of a finalisation; it
// does not end with the app's request.
func (h *Handler) finalizeContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), h.opts.FinalizeTimeout)
}

// noKeyAnswer is the refusal for an Acquire error.
func noKeyAnswer(err error) apiError {
	var nk *keys.NoKeyError
	if errors.As(err, &nk) {
		return noKey(nk.RetryAfter)
	}
	return noKey(DefaultRetryAfter)
}

// InFlight returns the number of calls being served or finalised.
func (h *Handler) InFlight() int { return h.track.count() }

// Wait waits until no call is being served or finalised, or ctx ends (its
// error is returned then). New calls may start meanwhile; Shutdown
// refuses them.
func (h *Handler) Wait(ctx context.Context) error {
	if err := h.track.wait(ctx); err != nil {
		return fmt.Errorf("egress wait: %w", err)
	}
	return nil
}

// Shutdown refuses new calls (503) and waits for the calls in flight and
// their finalisations. When ctx ends first, it cuts the upstream calls
// still running (each ends with outbox.ExitShutdown and is finalised,
// its usage so far recorded), waits at most FinalizeTimeout more for
// their finalisations, and returns ctx's error. Call it before closing
// the Sink and the Budget's ledger. It may be called more than once.
func (h *Handler) Shutdown(ctx context.Context) error {
	h.track.close()
	err := h.track.wait(ctx)
	if err == nil {
		return nil
	}
	h.cancelAbort()
	wctx, cancel := context.WithTimeout(context.Background(), h.opts.FinalizeTimeout)
	defer cancel()
	if werr := h.track.wait(wctx); werr != nil {
		h.opts.Logger.Error("egress shutdown: finalisations still running",
			slog.Int("in_flight", h.track.count()))
	}
	return fmt.Errorf("egress shutdown: %w", err)
}

// tracker counts calls from ServeHTTP to the end of their finalisation.
type tracker struct {
	mu     sync.Mutex
	n      int           // guarded by mu
	idle   chan struct{} // guarded by mu; closed when n drops to 0
	closed bool          // guarded by mu; no new calls
}

// begin counts a new call; false after close.
func (t *tracker) begin() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.n == 0 {
		t.idle = make(chan struct{})
	}
	t.n++
	return true
}

// done ends a call.
func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 {
		close(t.idle)
	}
}

func (t *tracker) close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
}

func (t *tracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// wait waits for n to reach 0, or ctx to end.
func (t *tracker) wait(ctx context.Context) error {
	t.mu.Lock()
	if t.n == 0 {
		t.mu.Unlock()
		return nil
	}
	idle := t.idle
	t.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// maxEndpointLen bounds Record.Endpoint.
const maxEndpointLen = 256

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// errText is an error's text as it may be logged: without injected keys,
// and with a *url.Error's URL (whose query is the app's) left out.
func (h *Handler) errText(err error) string {
	s := err.Error()
	var ue *url.Error
	if errors.As(err, &ue) {
		s = strings.Replace(s, ue.Error(), ue.Op+" upstream: "+ue.Err.Error(), 1)
	}
	return h.redact.string(s)
}

// elapsed is a call's duration for logs.
func elapsed(start time.Time) time.Duration { return time.Since(start).Round(time.Millisecond) }
