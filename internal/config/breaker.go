package config

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// Breaker configures the circuit breaker in front of the app
// ([app.breaker]). It trips on either rule that is set.
type Breaker struct {
	// Enabled turns the breaker on (the default).
	Enabled bool `toml:"enabled"`
	// ConsecutiveFailures opens the breaker after this many failed app
	// calls in a row (no answer, a timeout or a 5xx); 0 turns the rule
	// off.
	ConsecutiveFailures int `toml:"consecutive_failures"`
	// FailureRatio opens it when at least this share of the calls in the
	// last Interval failed, once MinRequests were made; 0 turns the rule
	// off.
	FailureRatio float64 `toml:"failure_ratio"`
	// MinRequests is how many calls the ratio rule waits for (>= 1).
	MinRequests int `toml:"min_requests"`
	// Interval is the rolling window of the ratio rule (> 0).
	Interval time.Duration `toml:"interval"`
	// OpenFor is how long an open breaker refuses calls before it lets a
	// probe through (> 0).
	OpenFor time.Duration `toml:"open_for"`
	// HalfOpenRequests is how many probe calls a half-open breaker lets
	// through; that many successes close it (>= 1).
	HalfOpenRequests int `toml:"half_open_requests"`
	// Required makes /health down while the breaker is open; false only
	// degrades it. Half-open always degrades.
	Required bool `toml:"required"`
}

// maxBreakerCount bounds the breaker's counts (gobreaker counts in
// uint32; a larger value would never be reached anyway).
const maxBreakerCount = 1_000_000

// defaultBreaker is the starting value of [app.breaker].
func defaultBreaker() Breaker {
	return Breaker{
		Enabled:             true,
		ConsecutiveFailures: 5,
		FailureRatio:        0.5,
		MinRequests:         20,
		Interval:            time.Minute,
		OpenFor:             10 * time.Second,
		HalfOpenRequests:    1,
		Required:            true,
	}
}

// Deadlines bound the work behind each Zimmer endpoint, app calls
// included ([zimmer.deadlines]). Each stays under the tighter of the
// guide's and the platform's budgets (see Budgets), so the platform gets
// a clean JSON answer instead of its own timeout.
type Deadlines struct {
	// Provision bounds provision (budget 10 s).
	Provision time.Duration `toml:"provision"`
	// Consume bounds usage/consume (budget 3 s).
	Consume time.Duration `toml:"consume"`
	// KB bounds kb/status and kb/reset (budget 10 s).
	KB time.Duration `toml:"kb"`
}

// The callers' budgets: the tighter of what the guide says and what the
// platform's client waits, per endpoint.
const (
	ProvisionBudget = 10 * time.Second
	ConsumeBudget   = 3 * time.Second
	KBBudget        = 10 * time.Second
)

// deadlineMargin is the least time a deadline should leave to the
// network within its budget; a tighter one is legal but warned about.
const deadlineMargin = 500 * time.Millisecond

// defaultDeadlines is the starting value of [zimmer.deadlines].
func defaultDeadlines() Deadlines {
	return Deadlines{
		Provision: 8 * time.Second,
		Consume:   2500 * time.Millisecond,
		KB:        8 * time.Second,
	}
}

// breaker checks [app.breaker]. A disabled breaker is not checked.
func (v *validator) breaker(b *Breaker) {
	const p = "app.breaker"
	if !b.Enabled {
		return
	}
	v.between(p+".consecutive_failures", int64(b.ConsecutiveFailures), 0, maxBreakerCount)
	if math.IsNaN(b.FailureRatio) || b.FailureRatio < 0 || b.FailureRatio > 1 {
		v.addf(p+".failure_ratio", "must be between 0 and 1, like 0.5 (got %s)",
			strconv.FormatFloat(b.FailureRatio, 'g', -1, 64))
	}
	if b.ConsecutiveFailures == 0 && b.FailureRatio == 0 {
		v.addf(p, "needs consecutive_failures or failure_ratio above 0 to ever "+
			"open; set enabled = false to turn the breaker off")
	}
	if b.FailureRatio > 0 {
		v.between(p+".min_requests", int64(b.MinRequests), 1, maxBreakerCount)
		v.positive(p+".interval", b.Interval)
	}
	v.positive(p+".open_for", b.OpenFor)
	v.between(p+".half_open_requests", int64(b.HalfOpenRequests), 1, maxBreakerCount)
}

// between checks an integer's bounds, both included.
func (v *validator) between(p string, n, low, high int64) {
	if n < low || n > high {
		v.addf(p, "must be between %d and %d (got %d)", low, high, n)
	}
}

// deadlines checks that each deadline is positive and inside its budget.
func (v *validator) deadlines(d *Deadlines) {
	for _, c := range []struct {
		key    string
		d      time.Duration
		budget time.Duration
	}{
		{"provision", d.Provision, ProvisionBudget},
		{"consume", d.Consume, ConsumeBudget},
		{"kb", d.KB, KBBudget},
	} {
		p := "zimmer.deadlines." + c.key
		switch {
		case c.d <= 0:
			v.addf(p, "must be a positive duration (got %q)", c.d.String())
		case c.d >= c.budget:
			v.addf(p, "must be under the callers' budget of %s, so they get an "+
				"answer before they give up (got %q)", c.budget, c.d.String())
		case c.d > c.budget-deadlineMargin:
			v.warnf(p, "leaves under %s of the %s budget for the network (got %q)",
				deadlineMargin, c.budget, c.d.String())
		}
	}
}

// decodeFloat decodes a number; a whole number is taken as it is.
func (d *decoder) decodeFloat(p string, v any, dst *float64) {
	switch t := v.(type) {
	case float64:
		*dst = t
	case int64:
		*dst = float64(t)
	case envValue:
		f, err := strconv.ParseFloat(strings.TrimSpace(t.text), 64)
		if err != nil {
			d.addf(p, "must be a number like 0.5 (got %s)", describe(t))
			return
		}
		*dst = f
	default:
		d.wrongType(p, "a number like 0.5", v, false)
	}
}
