package egress

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/keys"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/outbox"
)

// Sink takes each call's Record. The handler calls Enqueue exactly once
// per call that reached the upstream, after the call ended and after
// Budget.Settle or Release.
type Sink interface {
	// Enqueue stores r durably before returning nil.
	Enqueue(ctx context.Context, r outbox.Record) error
	// Full reports that the backlog is at its bound: new calls are then
	// refused with 503 (spending tokens that cannot be reported is not
	// allowed).
	Full() bool
}

// Budget charges calls to users. A nil Budget means no per-user budgets.
type Budget interface {
	// Reserve holds units of the user's balance for call id. ok=false:
	// the balance cannot cover it, and the handler answers 402 before any
	// upstream call, as it does for an error matching
	// metering.ErrUnknownAccount.
	Reserve(ctx context.Context, userAutomationID int64, id string,
		units int64) (ok bool, err error)
	// Settle turns the hold into a charge of units (more or less than
	// reserved; the balance never goes below zero) and returns what was
	// charged. Idempotent per id.
	Settle(ctx context.Context, userAutomationID int64, id string,
		units int64) (charged int64, err error)
	// Release gives the whole hold back (no usage happened). Idempotent
	// per id.
	Release(ctx context.Context, userAutomationID int64, id string) error
}

// Metrics receives the handler's measurements. Implementations are safe
// for concurrent use and never block. NopMetrics records nothing.
type Metrics interface {
	// EgressCall records one request the handler finished. outcome is an
	// outbox.Exit value for a call that reached the upstream, or one of
	// the Refused* reasons for a request answered without it; status is
	// the status the app was answered with (0 when it got none).
	EgressCall(outcome string, status int)
	// EgressRetry records that a call was sent again with another key
	// after a RetryReason* failure.
	EgressRetry(reason string)
	// Tokens adds one call's token usage for model (the signature of
	// metrics.Recorder.Tokens).
	Tokens(model string, prompt, completion int)
	// EgressRecordLost records that a call's Record could not be
	// enqueued: its usage will not be reported.
	EgressRecordLost()
	// EgressShortfall adds the units a call cost beyond what
	// Budget.Settle could charge its user (the balance ran out).
	EgressShortfall(units int64)
}

// Refusal outcomes passed to Metrics.EgressCall for requests answered
// without an upstream call.
const (
	RefusedBadRequest  = "bad_request"        // 400/408/415: path, body or user header
	RefusedTooLarge    = "too_large"          // 413: body over MaxRequestBytes
	RefusedForbidden   = "forbidden"          // 403/501: host, CONNECT, upgrade, browser, unmetered
	RefusedBudget      = "budget"             // 402: the user's balance cannot cover it
	RefusedBudgetError = "budget_unavailable" // 503: the Budget failed
	RefusedBacklog     = "backlog_full"       // 503: Sink.Full
	RefusedNoKey       = "no_key"             // 503: keys.NoKeyError
	RefusedShutdown    = "shutting_down"      // 503: Shutdown has begun
	RefusedAppGone     = "app_gone"           // the app left before any upstream call
)

// Retry reasons passed to Metrics.EgressRetry.
const (
	RetryReasonAuth      = "auth"         // 401 or 403
	RetryReasonRateLimit = "rate_limited" // 429
	RetryReasonServer    = "server_error" // 5xx
	RetryReasonTransport = "transport"    // no answer
)

// NopMetrics records nothing.
type NopMetrics struct{}

var _ Metrics = NopMetrics{}

func (NopMetrics) EgressCall(string, int)  {}
func (NopMetrics) EgressRetry(string)      {}
func (NopMetrics) Tokens(string, int, int) {}
func (NopMetrics) EgressRecordLost()       {}
func (NopMetrics) EgressShortfall(int64)   {}

// AuthStyle is how the key is sent upstream.
type AuthStyle string

// Auth styles.
const (
	// AuthBearer sends "Authorization: Bearer <key>" (OpenAI and most
	// compatible servers).
	AuthBearer AuthStyle = "bearer"
	// AuthAPIKey sends "api-key: <key>" (Azure OpenAI).
	AuthAPIKey AuthStyle = "api-key"
)

// Defaults applied to zero Options fields.
const (
	DefaultUpstream        = "https://api.openai.com"
	DefaultUserHeader      = "X-Zimmer-User-Automation-Id"
	DefaultTokensPerUnit   = 1
	DefaultReserveTokens   = 4096
	DefaultMaxRequestBytes = 32 << 20
	DefaultBodyTimeout     = 60 * time.Second
	DefaultCallTimeout     = 10 * time.Minute
	DefaultDrainTimeout    = 30 * time.Second
	DefaultDrainBytes      = 16 << 20
	DefaultMaxAttempts     = 2
	DefaultFinalizeTimeout = 10 * time.Second
	DefaultRetryAfter      = 5 * time.Second
)

// Options configure a Handler. Zero fields take the defaults above.
type Options struct {
	// Upstream is the upstream's base URL: http or https, a host, an
	// optional path prefix and query (kept before the app's query), no
	// user info. Nil means DefaultUpstream.
	Upstream *url.URL
	// Auth is how the key is sent; "" means AuthBearer.
	Auth AuthStyle
	// Pool hands out the keys. Required.
	Pool keys.Pool
	// Transport makes the upstream calls. Nil means a transport of its
	// own with dial, TLS and idle timeouts and no proxy from the
	// environment (HTTPS_PROXY may point at the sidecar itself).
	Transport http.RoundTripper
	// Sink takes one Record per call. Required.
	Sink Sink
	// Budget charges calls to users; nil means no per-user budgets.
	// With a Budget, a charged call goes only to a metered endpoint and
	// is capped (see the package comment).
	Budget Budget
	// UserHeader is the request header in which the app names the user
	// (a user_automation_id) to charge; "" means DefaultUserHeader. It is
	// never sent upstream.
	UserHeader string
	// RequireUser refuses a request without UserHeader with 400. When
	// false, such a request is not charged to anyone.
	RequireUser bool
	// TokensPerUnit is how many tokens make one budget unit (rounded up
	// per call); 0 means DefaultTokensPerUnit.
	TokensPerUnit int64
	// ReserveTokens is the completion allowance of a charged request
	// that names no cap its endpoint reads: it is reserved (times n) and
	// set in the request as its cap (max_completion_tokens, max_tokens
	// or max_output_tokens), so that the answer stays within the
	// reservation; 0 means DefaultReserveTokens.
	ReserveTokens int64
	// MaxRequestBytes bounds the request body (413 beyond); 0 means
	// DefaultMaxRequestBytes.
	MaxRequestBytes int64
	// BodyTimeout bounds the time to read the request body (408
	// beyond); 0 means DefaultBodyTimeout.
	BodyTimeout time.Duration
	// CallTimeout bounds one call, retries and the answer's body
	// included; 0 means DefaultCallTimeout.
	CallTimeout time.Duration
	// DrainTimeout and DrainBytes bound how long and how much of the
	// answer is still read, undelivered, after the app went away, to get
	// its final usage; 0 means DefaultDrainTimeout and DefaultDrainBytes.
	DrainTimeout time.Duration
	DrainBytes   int64
	// MaxAttempts is how many keys one call may try; 0 means
	// DefaultMaxAttempts, 1 disables retries. A retry after a transport
	// error may repeat a call the upstream already received (with one
	// key, on the same key).
	MaxAttempts int
	// FinalizeTimeout bounds each Budget and Sink call of a finalisation
	// and Shutdown's wait after it cut the calls; 0 means
	// DefaultFinalizeTimeout.
	FinalizeTimeout time.Duration
	// Logger receives one line per call and the causes of failures,
	// never a key, a header value, a body or a query string. Nil
	// discards.
	Logger *slog.Logger
	// Metrics receives measurements; nil means NopMetrics.
	Metrics Metrics
	// Now is the clock for records and rate-limit headers; nil means
	// time.Now. Timeouts use real timers.
	Now func() time.Time
	// NewID returns a fresh call id; nil means 32 random lowercase hex
	// characters.
	NewID func() string
}

// Errors of New.
var (
	errNoPool = errors.New("no key pool")
	errNoSink = errors.New("no usage sink")
)

// withDefaults checks o and fills its zero fields.
func (o Options) withDefaults() (Options, error) {
	if o.Pool == nil {
		return o, errNoPool
	}
	if o.Sink == nil {
		return o, errNoSink
	}
	if o.Upstream == nil {
		u, err := url.Parse(DefaultUpstream)
		if err != nil {
			return o, fmt.Errorf("default upstream: %w", err)
		}
		o.Upstream = u
	}
	if err := checkUpstream(o.Upstream); err != nil {
		return o, err
	}
	switch o.Auth {
	case "":
		o.Auth = AuthBearer
	case AuthBearer, AuthAPIKey:
	default:
		return o, fmt.Errorf("auth style %q: want %q or %q", o.Auth, AuthBearer, AuthAPIKey)
	}
	if o.UserHeader == "" {
		o.UserHeader = DefaultUserHeader
	}
	if err := checkNumbers(o); err != nil {
		return o, err
	}
	o.TokensPerUnit = orDefault(o.TokensPerUnit, DefaultTokensPerUnit)
	o.ReserveTokens = orDefault(o.ReserveTokens, DefaultReserveTokens)
	o.MaxRequestBytes = orDefault(o.MaxRequestBytes, DefaultMaxRequestBytes)
	o.BodyTimeout = orDefault(o.BodyTimeout, DefaultBodyTimeout)
	o.CallTimeout = orDefault(o.CallTimeout, DefaultCallTimeout)
	o.DrainTimeout = orDefault(o.DrainTimeout, DefaultDrainTimeout)
	o.DrainBytes = orDefault(o.DrainBytes, DefaultDrainBytes)
	o.MaxAttempts = orDefault(o.MaxAttempts, DefaultMaxAttempts)
	o.FinalizeTimeout = orDefault(o.FinalizeTimeout, DefaultFinalizeTimeout)
	if o.Transport == nil {
		o.Transport = newTransport()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NopMetrics{}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.NewID == nil {
		o.NewID = randomID
	}
	return o, nil
}

// checkUpstream refuses a base URL the handler cannot join paths to
// safely, or whose text would carry a credential into errors.
func checkUpstream(u *url.URL) error {
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("upstream: scheme %q: want http or https", u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return errors.New("upstream: no host")
	case u.User != nil:
		return errors.New("upstream: user info is not allowed")
	case u.Fragment != "" || u.Opaque != "":
		return errors.New("upstream: fragment or opaque part is not allowed")
	case hasDotSegment(u.Path):
		return errors.New(`upstream: "." or ".." path segment`)
	}
	return nil
}

// checkNumbers refuses negative limits.
func checkNumbers(o Options) error {
	switch {
	case o.TokensPerUnit < 0, o.ReserveTokens < 0, o.MaxRequestBytes < 0,
		o.DrainBytes < 0:
		return errors.New("negative token, unit or byte limit")
	case o.BodyTimeout < 0, o.CallTimeout < 0, o.DrainTimeout < 0,
		o.FinalizeTimeout < 0:
		return errors.New("negative timeout")
	case o.MaxAttempts < 0:
		return errors.New("negative max attempts")
	}
	return nil
}

func orDefault[T int | int64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// newTransport returns the default upstream transport.
func newTransport() *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   10 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   32,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

// randomID returns 32 random lowercase hex characters.
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// hasDotSegment reports whether a slash-separated path has a "." or ".."
// segment.
func hasDotSegment(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}
