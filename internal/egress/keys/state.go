package keys

import (
	"cmp"
	"time"
)

// window counts calls started in the last minute in one-second buckets,
// so its memory stays fixed however busy the key is.
type window struct {
	counts [60]int32
	secs   [60]int64
}

// add counts one call at now.
func (w *window) add(now time.Time) {
	sec := now.Unix()
	i := bucket(sec)
	if w.secs[i] != sec {
		w.secs[i], w.counts[i] = sec, 0
	}
	w.counts[i]++
}

// count returns the calls started in the 60 seconds up to now.
func (w *window) count(now time.Time) int {
	sec, n := now.Unix(), 0
	for i := range w.counts {
		if sec-w.secs[i] < 60 && w.secs[i] <= sec {
			n += int(w.counts[i])
		}
	}
	return n
}

// freesAt returns when the oldest counted call leaves the window.
func (w *window) freesAt(now time.Time) time.Time {
	sec, oldest := now.Unix(), int64(0)
	for i := range w.counts {
		live := sec-w.secs[i] < 60 && w.secs[i] <= sec && w.counts[i] > 0
		if live && (oldest == 0 || w.secs[i] < oldest) {
			oldest = w.secs[i]
		}
	}
	if oldest == 0 {
		return now
	}
	return time.Unix(oldest+60, 0)
}

func bucket(sec int64) int { return int(((sec % 60) + 60) % 60) }

// keyState is one key's local accounting and rotation state. Every field
// is guarded by the owning pool's mutex.
type keyState struct {
	id     int64
	name   string
	secret Secret
	limits Limits

	recent      window
	day         int64 // UTC day of tokensToday
	tokensToday int64
	reserved    int64 // maxTokens of calls in flight
	inflight    int
	lastUsed    time.Time

	disabled       bool
	exhaustedUntil time.Time
	coolUntil      time.Time
	penaltyUntil   time.Time
}

// utcDay numbers the UTC day of t.
func utcDay(t time.Time) int64 {
	s := t.Unix()
	d := s / 86400
	if s%86400 < 0 {
		d--
	}
	return d
}

// nextUTCMidnight returns the start of the UTC day after t's.
func nextUTCMidnight(t time.Time) time.Time {
	return time.Unix((utcDay(t)+1)*86400, 0).UTC()
}

// rollover starts a new token day when now is past the recorded one.
func (k *keyState) rollover(now time.Time) {
	if d := utcDay(now); d != k.day {
		k.day, k.tokensToday = d, 0
	}
}

// verdict says why a key cannot serve a call now, and until when.
type verdict int

const (
	eligible verdict = iota
	vDisabled
	vExhausted
	vCooling
	vRateLimited
	vTokenLimited
)

// check tells whether k may serve a call of maxTokens at now, and if not,
// when it may (zero when unknown or never).
func (k *keyState) check(now time.Time, maxTokens int64) (verdict, time.Time) {
	k.rollover(now)
	switch {
	case k.disabled:
		return vDisabled, time.Time{}
	case now.Before(k.exhaustedUntil):
		return vExhausted, k.exhaustedUntil
	case now.Before(k.coolUntil):
		return vCooling, k.coolUntil
	case k.limits.RPM > 0 && k.recent.count(now) >= k.limits.RPM:
		return vRateLimited, k.recent.freesAt(now)
	}
	if lim := k.limits.DailyTokens; lim > 0 {
		need := k.tokensToday + k.reserved + max(maxTokens, 0)
		if k.tokensToday+k.reserved >= lim || need > lim {
			var at time.Time
			if maxTokens <= lim {
				at = nextUTCMidnight(now)
			}
			return vTokenLimited, at
		}
	}
	return eligible, time.Time{}
}

// lessUsed orders eligible keys as the platform's key manager does: a key
// under a 5xx penalty last, then fewest calls in the last minute, fewest
// tokens today, and the one used longest ago.
func lessUsed(a, b *keyState, now time.Time) bool {
	ap, bp := now.Before(a.penaltyUntil), now.Before(b.penaltyUntil)
	if ap != bp {
		return bp
	}
	if c := cmp.Compare(a.recent.count(now), b.recent.count(now)); c != 0 {
		return c < 0
	}
	if c := cmp.Compare(a.tokensToday, b.tokensToday); c != 0 {
		return c < 0
	}
	return a.lastUsed.Before(b.lastUsed)
}

// tally gathers the verdicts of the keys that cannot serve.
type tally struct {
	err   NoKeyError
	first time.Time
}

func (t *tally) add(v verdict, at time.Time) {
	t.err.Keys++
	switch v {
	case vDisabled:
		t.err.Disabled++
	case vExhausted:
		t.err.Exhausted++
	case vCooling:
		t.err.Cooling++
	case vRateLimited:
		t.err.RateLimited++
	case vTokenLimited:
		t.err.TokenLimited++
	}
	if !at.IsZero() && (t.first.IsZero() || at.Before(t.first)) {
		t.first = at
	}
}

// result returns the NoKeyError for the keys tallied.
func (t *tally) result(now time.Time, cause error) *NoKeyError {
	e := t.err
	if !t.first.IsZero() {
		e.RetryAfter = max(t.first.Sub(now), time.Second)
	}
	e.Cause = cause
	return &e
}

// pick returns the least-used key of cands that may serve the call, or nil
// and the tally of why none may.
func pick(cands []*keyState, now time.Time, maxTokens int64) (*keyState, *tally) {
	var best *keyState
	t := &tally{}
	for _, k := range cands {
		v, at := k.check(now, maxTokens)
		if v != eligible {
			t.add(v, at)
			continue
		}
		t.err.Keys++
		if best == nil || lessUsed(k, best, now) {
			best = k
		}
	}
	return best, t
}

// admit counts a call on k and returns its ticket.
func (k *keyState) admit(now time.Time, maxTokens int64) *ticket {
	maxTokens = max(maxTokens, 0)
	k.recent.add(now)
	k.reserved += maxTokens
	k.inflight++
	k.lastUsed = now
	return &ticket{st: k, maxTokens: maxTokens}
}

// settle applies a call's outcome to k under the rules of o and returns
// the events it caused.
func (k *keyState) settle(t *ticket, o Outcome, now time.Time, opts Options) []Event {
	var events []Event
	ev := func(kind EventKind, reason string, until time.Time) {
		events = append(events, Event{
			Kind: kind, KeyID: k.id, Name: k.name,
			Status: o.Status, Reason: reason, Until: until,
		})
	}

	// Release the reservation and count what the call really used.
	k.reserved -= t.maxTokens
	k.inflight--
	k.rollover(now)
	if o.Tokens > 0 {
		k.tokensToday += o.Tokens
		lim := k.limits.DailyTokens
		if lim > 0 && k.tokensToday >= lim && !now.Before(k.exhaustedUntil) {
			k.exhaustedUntil = nextUTCMidnight(now)
			ev(EventExhausted, ReasonDailyTokenLimit, k.exhaustedUntil)
		}
	}

	// Apply the rotation rule the status calls for.
	switch {
	case o.InsufficientQuota:
		if until := nextUTCMidnight(now); k.exhaustedUntil.Before(until) {
			k.exhaustedUntil = until
			ev(EventExhausted, ReasonInsufficientQuota, until)
		}
	case o.Status == 401 || o.Status == 403:
		if !k.disabled {
			k.disabled = true
			ev(EventDisabled, ReasonAuth, time.Time{})
		}
	case o.Status == 429:
		if until := cooldownUntil(o, now, opts); until.After(k.coolUntil) {
			k.coolUntil = until
			ev(EventCooldown, ReasonRateLimited, until)
		}
	case o.Status >= 500 && o.Status <= 599:
		k.penaltyUntil = laterOf(k.penaltyUntil, now.Add(opts.ServerErrorPenalty))
	}
	return events
}

// cooldownUntil is the deadline a 429 asks for: the later of Retry-After
// and the rate-limit reset, the default when neither is given, and never
// more than MaxCooldown from now.
func cooldownUntil(o Outcome, now time.Time, opts Options) time.Time {
	var until time.Time
	if o.RetryAfter > 0 {
		until = now.Add(o.RetryAfter)
	}
	if o.ResetAt.After(now) {
		until = laterOf(until, o.ResetAt)
	}
	if until.IsZero() {
		until = now.Add(opts.DefaultCooldown)
	}
	if limit := now.Add(opts.MaxCooldown); until.After(limit) {
		until = limit
	}
	return until
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// status returns k's snapshot at now.
func (k *keyState) status(now time.Time) KeyStatus {
	k.rollover(now)
	s := KeyStatus{
		KeyID: k.id, Name: k.name, Redacted: k.secret.Redacted(),
		State: StateActive, Limits: k.limits,
		RequestsLastMinute: k.recent.count(now),
		TokensToday:        k.tokensToday, InFlight: k.inflight,
	}
	switch {
	case k.disabled:
		s.State = StateDisabled
	case now.Before(k.exhaustedUntil):
		s.State, s.Until = StateExhausted, k.exhaustedUntil
	case now.Before(k.coolUntil):
		s.State, s.Until = StateCooling, k.coolUntil
	}
	return s
}
