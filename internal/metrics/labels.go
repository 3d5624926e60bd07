package metrics

import (
	"strings"
	"sync"
	"unicode/utf8"
)

// MaxLabelLen bounds a name-like label value, in bytes.
const MaxLabelLen = 64

// Label vocabularies. A value outside its vocabulary is counted as Other.
var (
	authOutcomes = []string{
		AuthOK, AuthMissing, AuthInvalid, AuthRateLimited, AuthAborted,
	}
	ledgerOps = []string{
		OpProvision, OpConsume, OpCredit, OpAccount, OpJournal, OpRefund,
		OpSettle, OpReconcile, OpClose,
	}
	ledgerOutcomes = []string{
		OutcomeOK, OutcomeRefused, OutcomeReplayed, OutcomeStopped,
		OutcomeUnknownAccount, OutcomeInvalidUnits, OutcomeInvalidKey,
		OutcomeConflict, OutcomeUnknownDebit, OutcomeClosed,
		OutcomeCanceled, OutcomeDeadline, OutcomeError,
	}
	breakerStates = []string{BreakerClosed, BreakerHalfOpen, BreakerOpen}
	leaseEvents   = []string{
		LeaseAcquired, LeaseRenewed, LeaseReleased, LeaseExpired,
		LeaseRefused, LeaseFailed,
	}
	keyStates   = []string{KeyActive, KeyCooling, KeyExhausted, KeyDisabled}
	tokenKinds  = []string{"prompt", "completion"}
	probeStates = []string{"pending", "up", "slow", "failing", "down"}
	healthStats = []string{"ok", "degraded", "down"}
)

// pick returns v when set holds it, else Other. The sets are short enough
// that a scan beats a map, and it allocates nothing.
func pick(v string, set []string) string {
	for _, s := range set {
		if s == v {
			return s
		}
	}
	return Other
}

// cleanName makes a name usable as a label value: valid UTF-8 (invalid
// bytes become '?'), at most MaxLabelLen bytes cut on a rune boundary,
// and Unknown when empty.
func cleanName(s string) string {
	if s == "" {
		return Unknown
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	if len(s) > MaxLabelLen {
		cut := MaxLabelLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

// capped admits at most max distinct cleaned names; any further name is
// Other. It is safe for concurrent use.
type capped struct {
	max  int
	mu   sync.Mutex
	seen map[string]struct{}
}

func newCapped(max int) *capped {
	return &capped{max: max, seen: make(map[string]struct{})}
}

// admit returns the label value for name.
func (c *capped) admit(name string) string {
	name = cleanName(name)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[name]; ok {
		return name
	}
	if len(c.seen) >= c.max {
		return Other
	}
	c.seen[name] = struct{}{}
	return name
}
