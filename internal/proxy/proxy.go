package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/logging"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// Header names the proxy reads or sets.
const (
	// TokenHeader carries the Zimmer service token. It is removed from
	// every proxied request, protected or not.
	TokenHeader = "X-Zimmer-Service-Token"
	// RequestIDHeader carries the request id to the app.
	RequestIDHeader = "X-Request-Id"
	// IdempotencyKeyHeader, on a metered route, makes a retried call
	// charge once. A retry of a call whose charge stands (the app
	// answered below 500, or the client left first) is refused with 409
	// and not forwarded: the sidecar keeps no response cache, so it
	// cannot replay the app's answer. A retry of a call the app failed
	// (its charge was refunded) is charged and forwarded again. The
	// header is forwarded to the app.
	IdempotencyKeyHeader = "Idempotency-Key"

	// UserHeader tells the app which user_automation_id a metered call
	// charged; the remaining balances after the charge follow in the next
	// two. The charge is refunded if the app answers 5xx or not at all.
	// Every client-sent header in the X-Zimmer- namespace is removed
	// first, so the app can trust these.
	UserHeader          = "X-Zimmer-User-Automation-Id"
	RemainingDemoHeader = "X-Zimmer-Remaining-Demo-Tokens"
	RemainingPaidHeader = "X-Zimmer-Remaining-Paid-Tokens"
)

// Defaults applied by New for zero Options fields.
const (
	DefaultConnectTimeout        = 2 * time.Second
	DefaultTLSHandshakeTimeout   = 10 * time.Second
	DefaultResponseHeaderTimeout = 60 * time.Second
	DefaultIdleConnTimeout       = 90 * time.Second
	DefaultMaxIdleConns          = 256
	DefaultMaxBody               = 1 << 20
	DefaultAnswerLimit           = 1 << 20
)

// Options configure a Proxy. Zero durations and sizes take the defaults
// above; there is no way to switch a timeout off.
type Options struct {
	// AppURL is the app's base URL, http or https, without user info,
	// query or fragment. A path in it prefixes every forwarded path.
	AppURL string
	// Passthrough proxies paths no route names; false answers them 404.
	Passthrough bool
	// Routes, first match wins.
	Routes []Route

	// Auth wraps protected routes. It must answer unauthenticated
	// requests itself without reading the body, and strip the token.
	// Required when a route has Protect: New fails closed without it.
	Auth func(http.Handler) http.Handler
	// Ledger charges metered routes. Required when a route has a Meter.
	// When it implements metering.KeyHolder (a ledger several sidecars
	// share), client keys of calls in flight are held there too.
	Ledger metering.Ledger
	// MaxBody limits request bodies of protected and metered routes.
	MaxBody int64

	ConnectTimeout        time.Duration
	TLSHandshakeTimeout   time.Duration
	ResponseHeaderTimeout time.Duration
	IdleConnTimeout       time.Duration
	// MaxIdleConns is the idle connection pool for the app (all of it
	// per host: there is one host).
	MaxIdleConns int
	// AnswerLimit caps the app answers the hooks read.
	AnswerLimit int64

	// RequestID returns the request id a context carries, "" when none.
	// Nil: proxied requests keep a well-formed client X-Request-Id and
	// hook calls send none.
	RequestID func(ctx context.Context) string
	// OnError learns the cause of every request the proxy answers with a
	// 5xx (or 413) of its own; the client only sees a fixed message. A
	// client that went away shows up as context.Canceled (a metered call
	// then stays charged). It also learns
	// of every refund of a failed metered call that failed, wrapped in
	// ErrRefundFailed, so one request may report twice. Called on the
	// request's goroutine; nil ignores causes.
	OnError func(r *http.Request, err error)
	// ErrorLog receives httputil.ReverseProxy's own messages (body copy
	// errors after the status went out). Nil discards them.
	ErrorLog *log.Logger

	// Breaker, when not nil, guards every call to the app, proxied or
	// made by a hook: while it is open, proxied requests get 503 JSON with
	// Retry-After (a metered route charges nothing) and hooks fail with an
	// *OpenError, all without contacting the app. Several Proxies may
	// share one Breaker (a reload keeps its state). Nil: no breaker.
	Breaker *Breaker
	// Guard holds the client keys of metered calls in flight. Several
	// Proxies should share one (a reload must not forget a call in
	// flight). Nil: a Guard of this Proxy's own.
	Guard *KeyGuard
	// NoRetry turns off the one retry of an idempotent call (GET, HEAD,
	// OPTIONS, PUT, DELETE) with a replayable body whose connection was
	// refused, reset or closed before the app answered.
	NoRetry bool

	// StripAuthorization, when not nil, is called on every proxied
	// request just before it goes to the app (r is the outbound copy; the
	// caller's request is untouched), protected or not, to remove
	// credentials the app must not see: the wiring passes
	// auth.Verifier.StripServiceBearer, which drops a Bearer service
	// token sent to an open route. Called on the request's goroutine. Nil
	// removes nothing beyond the X-Zimmer- namespace.
	StripAuthorization func(r *http.Request)
}

// Proxy is the http.Handler for every path the Zimmer endpoints do not
// own. It is safe for concurrent use.
type Proxy struct {
	target      *url.URL
	transport   *http.Transport
	app         *appTransport // transport behind the breaker and retry
	breaker     *Breaker      // nil: none
	client      *http.Client
	rp          *httputil.ReverseProxy
	routes      table
	passthrough bool
	ledger      metering.Ledger
	maxBody     int64
	answerLimit int64
	requestID   func(context.Context) string
	onError     func(*http.Request, error)
	guard       *KeyGuard     // client idempotency keys of metered calls in flight
	holdTTL     time.Duration // bound of a key hold in a shared ledger

	stripAuthorization func(*http.Request)
}

// New checks opts and builds a Proxy. It opens no connection.
func New(opts Options) (*Proxy, error) {
	target, err := parseAppURL(opts.AppURL)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		target:      target,
		passthrough: opts.Passthrough,
		ledger:      opts.Ledger,
		maxBody:     orDefault(opts.MaxBody, DefaultMaxBody),
		answerLimit: orDefault(opts.AnswerLimit, DefaultAnswerLimit),
		requestID:   opts.RequestID,
		onError:     opts.OnError,
		breaker:     opts.Breaker,
		guard:       opts.Guard,
		holdTTL:     keyHoldTTL(opts),

		stripAuthorization: opts.StripAuthorization,
	}
	if p.guard == nil {
		p.guard = new(KeyGuard)
	}
	p.transport = newTransport(opts)
	p.app = &appTransport{
		base:    p.transport,
		breaker: opts.Breaker,
		retry:   !opts.NoRetry,
		delay:   retryDelay,
	}
	p.client = &http.Client{
		Transport: p.app,
		// A redirect from the app is an answer, not an instruction.
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	errorLog := opts.ErrorLog
	if errorLog == nil {
		errorLog = log.New(io.Discard, "", 0)
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      p.app,
		BufferPool:     newBufferPool(),
		ModifyResponse: p.noteAnswer,
		ErrorHandler:   p.handleError,
		ErrorLog:       errorLog,
	}
	if err := p.buildRoutes(opts); err != nil {
		return nil, err
	}
	return p, nil
}

// parseAppURL checks the app's base URL.
func parseAppURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return nil, fmt.Errorf("app url: %w", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("app url %q: scheme must be http or https", s)
	case u.Host == "":
		return nil, fmt.Errorf("app url %q: no host", s)
	case u.User != nil:
		return nil, errors.New("app url: user info is not allowed")
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return nil, fmt.Errorf("app url %q: no query or fragment allowed", s)
	}
	return u, nil
}

// orDefault returns v, or def when v is zero or negative.
func orDefault[T int | int64 | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// newTransport clones the standard transport and sets every timeout and
// the idle pool on purpose. Environment proxies are ignored: the app is
// reached directly. Compression is left to the client and the app.
func newTransport(opts Options) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	dialer := &net.Dialer{
		Timeout:   orDefault(opts.ConnectTimeout, DefaultConnectTimeout),
		KeepAlive: 30 * time.Second,
	}
	t.Proxy = nil
	t.DialContext = dialer.DialContext
	t.TLSHandshakeTimeout = orDefault(opts.TLSHandshakeTimeout,
		DefaultTLSHandshakeTimeout)
	t.ResponseHeaderTimeout = orDefault(opts.ResponseHeaderTimeout,
		DefaultResponseHeaderTimeout)
	t.IdleConnTimeout = orDefault(opts.IdleConnTimeout, DefaultIdleConnTimeout)
	idle := orDefault(opts.MaxIdleConns, DefaultMaxIdleConns)
	t.MaxIdleConns = idle
	t.MaxIdleConnsPerHost = idle
	t.ExpectContinueTimeout = time.Second
	t.DisableCompression = true
	return t
}

// buildRoutes compiles the table and each route's handler chain:
// body limit, then authentication, then metering, then the proxy.
func (p *Proxy) buildRoutes(opts Options) error {
	for i, r := range opts.Routes {
		rt, err := compileRoute(r)
		if err != nil {
			return fmt.Errorf("route %d: %w", i, err)
		}
		var h http.Handler = p.rp
		if rt.meter != nil {
			if opts.Ledger == nil {
				return fmt.Errorf("route %d (%s): metered but no ledger", i, rt.pattern)
			}
			h = p.meterHandler(h)
		}
		if rt.protect {
			if opts.Auth == nil {
				return fmt.Errorf("route %d (%s): protected but no auth", i, rt.pattern)
			}
			h = opts.Auth(h)
		}
		if rt.protect || rt.meter != nil {
			h = p.limitBody(h)
		}
		rt.handler = h
		p.routes = append(p.routes, rt)
	}
	return nil
}

// Transport returns the app transport, for sharing connection settings
// (the health probes may use it). Do not modify it.
func (p *Proxy) Transport() *http.Transport { return p.transport }

// Client returns a client that calls the app as the hooks do: through
// the breaker and the retry of idempotent calls, not following
// redirects.
func (p *Proxy) Client() *http.Client { return p.client }

// BreakerState returns the state of the app's breaker, BreakerClosed
// when there is none.
func (p *Proxy) BreakerState() BreakerState {
	if p.breaker == nil {
		return BreakerClosed
	}
	return p.breaker.State()
}

// Close closes idle connections to the app. In-flight requests are not
// interrupted; the Proxy stays usable.
func (p *Proxy) Close() error {
	p.transport.CloseIdleConnections()
	return nil
}

// stateKey keys the per-request state in the request context.
type stateKey struct{}

// reqState is what routing decided, read by the later steps and by
// Rewrite on the same request, and the meter's charge, settled once the
// app's outcome is known. Only the request's goroutine uses it.
type reqState struct {
	forward string   // the cleaned path the app receives
	route   *route   // nil when passed through
	params  []string // the route's parameter values
	charged bool     // a meter charged; the fields below are set
	user    int64
	demo    int64
	paid    int64
	debit   string // ledger key of this request's own debit, "" if none
	held    string // client key held in Proxy.guard, "" if none
	// holdToken names the hold of held in a shared ledger, "" if none.
	holdToken string
	settled   bool // settle ran: refund decided, key released
	// uncertain: the charge failed in a way that may have committed (a
	// lost reply from a database); nothing was forwarded, so settle
	// refunds whatever may be there.
	uncertain bool
}

// stateOf returns the request's state, nil outside ServeHTTP.
func stateOf(r *http.Request) *reqState {
	st, _ := r.Context().Value(stateKey{}).(*reqState)
	return st
}

// ServeHTTP routes r on its cleaned path and its method in upper case, and
// forwards it to the app with that path and method. CONNECT is refused
// with 405: the proxy tunnels to no one.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Methods route in upper case: apps such as Django and Werkzeug take
	// "post" for POST, so it must be protected and metered as POST.
	method := strings.ToUpper(r.Method)
	if method == http.MethodConnect {
		httpx.Error(w, http.StatusMethodNotAllowed, "Method Not Allowed")
		return
	}
	clean, trailing := cleanPath(r.URL.Path)
	rt, params := p.routes.lookup(clean, method)
	if rt == nil && !p.passthrough {
		httpx.Error(w, http.StatusNotFound, "Not Found")
		return
	}
	st := &reqState{
		forward: forwardPath(clean, trailing),
		route:   rt,
		params:  params,
	}
	r = r.WithContext(context.WithValue(r.Context(), stateKey{}, st))
	if rt == nil {
		p.rp.ServeHTTP(w, r)
		return
	}
	logging.FromContext(r.Context()).SetLabel(rt.label)
	rt.handler.ServeHTTP(w, r)
}

// limitBody answers 413 when the declared body is over the limit, before
// anything reads it (so no 100 Continue is sent), and caps the rest.
func (p *Proxy) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > p.maxBody {
			httpx.Error(w, http.StatusRequestEntityTooLarge,
				"Request body too large")
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, p.maxBody)
		}
		next.ServeHTTP(w, r)
	})
}

// rewrite builds the app request. ReverseProxy has already removed
// hop-by-hop headers (those a client's Connection names included) and
// the client's Forwarded and X-Forwarded-* headers, so what is set here
// stays set.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	out := pr.Out
	st := stateOf(pr.In)
	if st == nil {
		clean, trailing := cleanPath(pr.In.URL.Path)
		st = &reqState{forward: forwardPath(clean, trailing)}
	}

	// The path and method that were routed (and authorised) are what the
	// app sees.
	out.Method = strings.ToUpper(out.Method)
	out.URL.Path = st.forward
	out.URL.RawPath = ""
	pr.SetURL(p.target)
	out.Host = p.target.Host

	// Forwarding headers from the connection only; nothing that names
	// another method, nothing in the sidecar's namespace.
	pr.SetXForwarded()
	h := out.Header
	h.Del("X-Real-Ip")
	dropMethodOverrides(h)
	dropZimmerHeaders(h)
	if p.stripAuthorization != nil {
		p.stripAuthorization(out)
	}

	p.setRequestID(pr)
	if st.charged {
		p.setChargeHeaders(h, st)
	}
}

// setChargeHeaders tells the app what a metered call charged. The route's
// user header, in every spelling an app server could read as it, is
// replaced by the one id that was charged.
func (p *Proxy) setChargeHeaders(h http.Header, st *reqState) {
	id := strconv.FormatInt(st.user, 10)
	if src := st.route.meter.User; src.From == FromHeader {
		dropHeader(h, src.Name)
		h.Set(src.Name, id)
	}
	h.Set(UserHeader, id)
	h.Set(RemainingDemoHeader, strconv.FormatInt(st.demo, 10))
	h.Set(RemainingPaidHeader, strconv.FormatInt(st.paid, 10))
}

// setRequestID sets X-Request-Id from the context, or keeps the client's
// when it is well formed.
func (p *Proxy) setRequestID(pr *httputil.ProxyRequest) {
	if p.requestID != nil {
		if id := p.requestID(pr.In.Context()); id != "" {
			pr.Out.Header.Set(RequestIDHeader, id)
			return
		}
	}
	ids := pr.Out.Header.Values(RequestIDHeader)
	if len(ids) > 1 || (len(ids) == 1 && !validRequestID(ids[0])) {
		pr.Out.Header.Del(RequestIDHeader)
	}
}

// validRequestID accepts 1-128 visible ASCII characters.
func validRequestID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// noteAnswer is ReverseProxy's ModifyResponse: with the app's status
// known and nothing sent yet, it settles a metered call (see settle). It
// changes nothing in the answer.
func (p *Proxy) noteAnswer(resp *http.Response) error {
	p.settle(resp.Request, stateOf(resp.Request), resp.StatusCode)
	return nil
}

// handleError is the one error answer: the cause goes to OnError, the
// client gets a fixed JSON message. A metered call is settled as
// unanswered first (refunded unless the client went away, see settle),
// unless the app's answer settled it already (a failed upgrade after a
// 101). A call the breaker refused is not reported to OnError: the
// breaker's OnStateChange tells of the opening once.
func (p *Proxy) handleError(w http.ResponseWriter, r *http.Request, err error) {
	var open *OpenError
	refused := errors.As(err, &open)
	if p.onError != nil && !refused {
		p.onError(r, err)
	}
	p.settle(r, stateOf(r), 0)
	var tooBig *http.MaxBytesError
	switch {
	case refused:
		circuitOpen(w, open.Wait)
	case errors.As(err, &tooBig):
		httpx.Error(w, http.StatusRequestEntityTooLarge, "Request body too large")
	case isTimeout(err):
		httpx.Error(w, http.StatusGatewayTimeout, "App timed out")
	default:
		httpx.Error(w, http.StatusBadGateway, "App unavailable")
	}
}

// isTimeout reports a deadline or a transport timeout (dial, TLS
// handshake, response headers).
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// msgCircuitOpen answers a call the breaker refused.
const msgCircuitOpen = "App unavailable (circuit open)"

// circuitOpen answers 503 with Retry-After for a refused call.
func circuitOpen(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", httpx.RetryAfter(wait))
	httpx.Error(w, http.StatusServiceUnavailable, msgCircuitOpen)
}
