package status

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/health"
)

// Source is where the page reads its data. Every function is called once
// per page view, without any lock of this package held, and must be safe
// for concurrent use. A nil field leaves its section "not configured"
// (null in JSON); a non-nil one that returns nothing shows an empty
// section. Nothing a Source returns may hold a secret: it is shown as it
// is (escaped) to whoever can reach the page.
type Source struct {
	// Version is the sidecar's own version.
	Version string
	// Started is when the sidecar started; the page shows its uptime.
	// Zero: no uptime is shown.
	Started time.Time
	// Now is the page's clock. Nil: time.Now.
	Now func() time.Time

	// Health is the public /health handler. The page calls it with a
	// GET and classifies the exact answer as the platform would.
	Health http.Handler
	// Verdict returns the verdict behind /health, with every check.
	Verdict func() health.Verdict
	// Probes returns every probe's state and recent results.
	Probes func() []health.ProbeStatus
	// Endpoints returns the per-endpoint numbers, usually Stats.Endpoints.
	Endpoints func() []EndpointStats

	// Breakers returns the circuit breakers' states.
	Breakers func() []BreakerState
	// Keys returns the egress keys' states.
	Keys func() []KeyState
	// Outbox returns the number of records waiting to be delivered; ok
	// false when the backlog cannot be read right now.
	Outbox func() (depth int, ok bool)
}

// Circuit breaker states, as BreakerState.State holds them.
const (
	BreakerClosed   = "closed"
	BreakerHalfOpen = "half-open"
	BreakerOpen     = "open"
)

// BreakerState is one circuit breaker, as the page shows it.
type BreakerState struct {
	// Name identifies the breaker (e.g. "app").
	Name string `json:"name"`
	// State is BreakerClosed, BreakerHalfOpen or BreakerOpen.
	State string `json:"state"`
	// ConsecutiveFailures counts failures since the last success.
	ConsecutiveFailures int `json:"consecutive_failures"`
	// Since is the last change of State; zero when unknown.
	Since time.Time `json:"since,omitzero"`
	// Detail is a short note, such as when an open breaker next probes.
	Detail string `json:"detail,omitempty"`
}

// KeyState is one egress API key, as the page shows it. It never holds
// the key: ID is a name or a short fingerprint.
type KeyState struct {
	// ID names the key without revealing it.
	ID string `json:"id"`
	// Source tells where the key comes from ("platform", "file", ...).
	Source string `json:"source,omitempty"`
	// State is the key's condition ("active", "rate-limited",
	// "exhausted", "disabled", ...).
	State string `json:"state"`
	// TokensToday and DailyLimit are the day's usage and its cap;
	// DailyLimit 0 means no cap.
	TokensToday int64 `json:"tokens_today"`
	DailyLimit  int64 `json:"daily_limit,omitempty"`
	// Detail is a short note, such as the last error's class.
	Detail string `json:"detail,omitempty"`
}

// Report is everything the page shows, and the ?format=json answer.
// Durations are milliseconds, times RFC 3339. A section the Source does
// not supply is null.
type Report struct {
	GeneratedAt   time.Time `json:"generated_at"`
	Version       string    `json:"version"`
	UptimeSeconds *int64    `json:"uptime_seconds"`

	Platform  *Platform      `json:"platform"`
	Verdict   *VerdictView   `json:"verdict"`
	Probes    []ProbeView    `json:"probes"`
	Endpoints []EndpointView `json:"endpoints"`
	Breakers  []BreakerState `json:"breakers"`
	Keys      []KeyState     `json:"keys"`
	Outbox    *OutboxView    `json:"outbox"`

	// For the template only (JSON readers see null sections instead).
	Present    map[string]bool `json:"-"` // sections the Source supplied
	Tone       string          `json:"-"` // "ok", "warn", "bad" or "none"
	Headline   string          `json:"-"` // the verdict in a word
	UptimeText string          `json:"-"`
}

// Platform is what the platform's classifier makes of /health now.
type Platform struct {
	// Class is health.ClassHealthy, ClassDegraded or ClassUnhealthy.
	Class string `json:"class"`
	// Listed: only a healthy automation is listed and can be bought.
	Listed bool `json:"listed"`
	// Why explains the class in one sentence.
	Why string `json:"why"`
	// HTTPStatus and Body are the /health answer classified (the body cut
	// at maxHealthBody).
	HTTPStatus int    `json:"http_status"`
	Body       string `json:"body"`
}

// VerdictView is the sidecar's verdict and its checks.
type VerdictView struct {
	Status string `json:"status"`
	// Reasons names the checks that made the verdict what it is.
	Reasons []string    `json:"reasons"`
	Checks  []CheckView `json:"checks"`
}

// CheckView is one entry of the verdict.
type CheckView struct {
	Name      string    `json:"name"`
	State     string    `json:"state"`
	Required  bool      `json:"required"`
	Probe     bool      `json:"probe"`
	Error     string    `json:"error,omitempty"`
	Since     time.Time `json:"since"`
	SinceText string    `json:"-"`
}

// ProbeView is one probe with its recent results, oldest first.
type ProbeView struct {
	Name      string       `json:"name"`
	Method    string       `json:"method"`
	Path      string       `json:"path"`
	Required  bool         `json:"required"`
	State     string       `json:"state"`
	LatencyMS float64      `json:"latency_ms"`
	Error     string       `json:"error,omitempty"`
	Since     time.Time    `json:"since"`
	SinceText string       `json:"-"`
	Recent    []ResultView `json:"recent"`
}

// Result classes of ResultView.Class.
const (
	resultPass = "pass"
	resultSlow = "slow"
	resultFail = "fail"
)

// ResultView is one probe result.
type ResultView struct {
	At        time.Time `json:"at"`
	OK        bool      `json:"ok"`
	Class     string    `json:"class"` // "pass", "slow" or "fail"
	LatencyMS float64   `json:"latency_ms"`
	Error     string    `json:"error,omitempty"`
	Title     string    `json:"-"` // hover text
}

// EndpointView is one endpoint's last hour.
type EndpointView struct {
	Endpoint     string  `json:"endpoint"`
	Requests     uint64  `json:"requests"`
	Successes    uint64  `json:"successes"`
	ClientErrors uint64  `json:"client_errors"`
	ServerErrors uint64  `json:"server_errors"`
	SuccessRate  float64 `json:"success_rate"` // 0..1; 0 without requests
	P50MS        float64 `json:"p50_ms"`
	P99MS        float64 `json:"p99_ms"`
	MinMS        float64 `json:"min_ms"`
	MeanMS       float64 `json:"mean_ms"`
	MaxMS        float64 `json:"max_ms"`
}

// OutboxView is the outbox backlog.
type OutboxView struct {
	// Known is false when the backlog could not be read.
	Known bool `json:"known"`
	Depth int  `json:"depth"`
}

// maxHealthBody bounds how much of the /health answer the page keeps.
const maxHealthBody = 64 << 10

// Build collects a Report from src. ctx is given to the /health request.
func Build(ctx context.Context, src Source) Report {
	now := time.Now
	if src.Now != nil {
		now = src.Now
	}
	t := now()
	rep := Report{
		GeneratedAt: t.UTC(),
		Version:     src.Version,
		Present:     make(map[string]bool),
	}
	if !src.Started.IsZero() {
		up := max(int64(t.Sub(src.Started)/time.Second), 0)
		rep.UptimeSeconds = &up
		rep.UptimeText = (time.Duration(up) * time.Second).String()
	}

	if src.Health != nil {
		rep.Platform = classify(ctx, src.Health)
	}
	if src.Verdict != nil {
		rep.Verdict = verdictView(src.Verdict(), t)
	}
	if src.Probes != nil {
		rep.Probes = probeViews(src.Probes(), t)
	}
	if src.Endpoints != nil {
		rep.Endpoints = endpointViews(src.Endpoints())
	}
	if src.Breakers != nil {
		rep.Breakers = nonNil(src.Breakers())
		rep.Present["breakers"] = true
	}
	if src.Keys != nil {
		rep.Keys = nonNil(src.Keys())
		rep.Present["keys"] = true
	}
	if src.Outbox != nil {
		depth, ok := src.Outbox()
		rep.Outbox = &OutboxView{Known: ok, Depth: depth}
	}
	rep.Present["probes"] = src.Probes != nil
	rep.Present["endpoints"] = src.Endpoints != nil
	rep.Tone, rep.Headline = headline(rep.Verdict, rep.Platform)
	return rep
}

// headline picks the banner's word and colour. The word is the
// platform's class when the /health handler is supplied, else the
// sidecar's verdict; the colour is the worse of the two, so a verdict and
// an answer that disagree (a bug) never show green.
func headline(v *VerdictView, p *Platform) (tone, word string) {
	tone, word = "none", "NOT CONFIGURED"
	if v != nil {
		tone, word = toneOf(v.Status), strings.ToUpper(v.Status)
	}
	if p != nil {
		if t := toneOf(p.Class); toneRank[t] > toneRank[tone] || v == nil {
			tone = t
		}
		word = strings.ToUpper(p.Class)
	}
	if word == "" {
		word = "UNKNOWN"
	}
	return tone, word
}

// toneRank orders tones from best to worst.
var toneRank = map[string]int{"none": 0, "ok": 1, "warn": 2, "bad": 3}

// toneOf maps a verdict status or platform class to a tone; anything
// unknown is a warning.
func toneOf(status string) string {
	switch status {
	case health.StatusOK, health.ClassHealthy:
		return "ok"
	case health.StatusDown, health.ClassUnhealthy:
		return "bad"
	default:
		return "warn"
	}
}

// nonNil turns a nil slice into an empty one, so JSON tells "none" (an
// empty list) from "not configured" (null).
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
