package health

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// State is the condition of one probe or registered check.
type State string

// The states a probe moves through. A registered check reports only
// StateUp, StateDegraded or StateDown.
const (
	// StatePending: the probe has no result yet.
	StatePending State = "pending"
	// StateUp: the last check passed in time.
	StateUp State = "up"
	// StateSlow: the last check passed but took longer than SlowAfter.
	StateSlow State = "slow"
	// StateFailing: the last check failed, but fewer than FailAfter
	// consecutive failures have happened since the probe was last up.
	StateFailing State = "failing"
	// StateDown: FailAfter consecutive failures were reached; the probe
	// stays down until PassAfter consecutive passes.
	StateDown State = "down"
	// StateDegraded is reported by registered checks only.
	StateDegraded State = "degraded"
)

// Defaults applied by New and Update to zero fields of ProbeOptions.
const (
	DefaultEvery   = 10 * time.Second
	DefaultTimeout = 2 * time.Second
	// historySize is how many recent results each probe keeps.
	historySize = 20
)

// ProbeOptions configures one active probe of the app.
type ProbeOptions struct {
	// Name identifies the probe in /health. Empty: the Path.
	Name string
	// Method is the HTTP method. Empty: GET.
	Method string
	// Path is the absolute path, optionally with a query, requested on
	// the app's host (Options.BaseURL). It replaces BaseURL's path.
	Path string
	// Every is the interval between checks. Zero: DefaultEvery.
	Every time.Duration
	// Timeout bounds one check, body included. Zero: DefaultTimeout.
	Timeout time.Duration
	// SlowAfter marks a passing check slower than this as slow.
	// Zero: a pass is never slow.
	SlowAfter time.Duration
	// ExpectStatus is the only status that passes. Zero: 200. A redirect
	// is never followed, so 301 passes only when ExpectStatus is 301.
	ExpectStatus int
	// PassAfter is how many consecutive passes bring a down probe back.
	// Zero: 1.
	PassAfter int
	// FailAfter is how many consecutive failures make the probe down.
	// Zero: 1.
	FailAfter int
	// Required: a down probe makes the whole verdict down (503). False:
	// it only degrades the verdict.
	Required bool
}

// withDefaults returns o with its zero fields filled in.
func (o ProbeOptions) withDefaults() ProbeOptions {
	if o.Method == "" {
		o.Method = "GET"
	}
	if o.Name == "" {
		o.Name = o.Path
	}
	if o.Every == 0 {
		o.Every = DefaultEvery
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.ExpectStatus == 0 {
		o.ExpectStatus = 200
	}
	if o.PassAfter == 0 {
		o.PassAfter = 1
	}
	if o.FailAfter == 0 {
		o.FailAfter = 1
	}
	return o
}

// validate reports every problem of o (defaults already applied) at once.
func (o ProbeOptions) validate() error {
	var errs []error
	if o.Name == "" {
		errs = append(errs, errors.New("name or path is required"))
	}
	if !validMethod(o.Method) {
		errs = append(errs, fmt.Errorf("method %q is not an HTTP token", o.Method))
	}
	if _, err := parseProbePath(o.Path); err != nil {
		errs = append(errs, err)
	}
	if o.Every < 0 || o.Timeout < 0 || o.SlowAfter < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	if o.ExpectStatus < 100 || o.ExpectStatus > 599 {
		errs = append(errs, fmt.Errorf("expect status %d out of range", o.ExpectStatus))
	}
	if o.PassAfter < 0 || o.FailAfter < 0 {
		errs = append(errs, errors.New("pass after and fail after must not be negative"))
	}
	return errors.Join(errs...)
}

// parseProbePath checks that p is an absolute path with an optional query
// and nothing that could point the probe at another host.
func parseProbePath(p string) (*url.URL, error) {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") {
		return nil, fmt.Errorf("path %q must start with a single /", p)
	}
	u, err := url.Parse(p)
	if err != nil {
		return nil, fmt.Errorf("path %q: %w", p, err)
	}
	if u.Scheme != "" || u.Host != "" || u.User != nil || u.Fragment != "" {
		return nil, fmt.Errorf("path %q must be a path and query only", p)
	}
	return u, nil
}

// validMethod reports whether m is a non-empty RFC 9110 token.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// Result is the outcome of one check.
type Result struct {
	// At is when the check started (Options.Now).
	At time.Time
	// OK: the expected status arrived within the timeout.
	OK bool
	// Latency is the time to the response headers.
	Latency time.Duration
	// Error is a short secret-free reason for a failure, such as
	// "status 500" or "timeout after 2s"; empty on success.
	Error string
}

// probeState is the state machine of one probe. The Monitor's mutex
// guards it.
type probeState struct {
	state   State
	passes  int // consecutive passes
	fails   int // consecutive failures
	latency time.Duration
	err     string    // last failure's reason while not passing
	since   time.Time // last state change

	ring  [historySize]Result
	head  int // next slot to write
	count int
}

// apply moves the state machine by one result r under options o.
func (s *probeState) apply(r Result, o ProbeOptions, now time.Time) {
	s.push(r)
	s.latency = r.Latency

	next := s.state
	if r.OK {
		s.passes++
		s.fails = 0
		if s.state != StateDown || s.passes >= o.PassAfter {
			next = StateUp
			if o.SlowAfter > 0 && r.Latency > o.SlowAfter {
				next = StateSlow
			}
		}
	} else {
		s.fails++
		s.passes = 0
		switch {
		case s.state == StateDown:
		case s.fails >= o.FailAfter:
			next = StateDown
		default:
			next = StateFailing
		}
	}

	// Keep the reason of the last failure until the probe passes again.
	if !r.OK || next == StateUp || next == StateSlow {
		s.err = r.Error
	}
	if next != s.state {
		s.state = next
		s.since = now
	}
}

// push records r in the ring of recent results.
func (s *probeState) push(r Result) {
	s.ring[s.head] = r
	s.head = (s.head + 1) % historySize
	if s.count < historySize {
		s.count++
	}
}

// recent returns the kept results, oldest first.
func (s *probeState) recent() []Result {
	out := make([]Result, 0, s.count)
	start := (s.head - s.count + historySize) % historySize
	for i := 0; i < s.count; i++ {
		out = append(out, s.ring[(start+i)%historySize])
	}
	return out
}
