package metering

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// DefaultMaxUnits is the bound of one consume when Options.MaxUnits is 0.
const DefaultMaxUnits = 1_000_000

// MaxIdempotencyKeyLen bounds an idempotency key, in bytes.
const MaxIdempotencyKeyLen = 255

// Answer messages. Refusals are short and meant for a person.
const (
	MsgConsumed         = "tokens consumed"
	MsgInsufficientDemo = "insufficient demo tokens"
	MsgInsufficient     = "insufficient tokens"
)

// WithDefaults returns o with every zero field replaced by its default.
func (o Options) WithDefaults() Options {
	if o.MaxUnits == 0 {
		o.MaxUnits = DefaultMaxUnits
	}
	if o.DemoRule == "" {
		o.DemoRule = DemoWhole
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Validate reports the first invalid field. Zero values are valid.
func (o Options) Validate() error {
	switch {
	case o.DefaultDemoTokens < 0:
		return fmt.Errorf("default demo tokens %d: must not be negative", o.DefaultDemoTokens)
	case o.MaxUnits < 0:
		return fmt.Errorf("max units %d: must not be negative", o.MaxUnits)
	}
	switch o.DemoRule {
	case "", DemoWhole, DemoSpill:
		return nil
	default:
		return fmt.Errorf("demo rule %q: want %q or %q", o.DemoRule, DemoWhole, DemoSpill)
	}
}

// CheckUnits returns ErrInvalidUnits, wrapped, unless 0 < units <= max.
// The caller passes the max of Options after WithDefaults.
func CheckUnits(units, max int64) error {
	if units <= 0 || units > max {
		return fmt.Errorf("units %d not in [1, %d]: %w", units, max, ErrInvalidUnits)
	}
	return nil
}

// CheckCredit returns ErrInvalidUnits, wrapped, unless units is positive
// and adding it to paid does not overflow.
func CheckCredit(paid, units int64) error {
	if units <= 0 {
		return fmt.Errorf("credit units %d: must be positive: %w", units, ErrInvalidUnits)
	}
	if paid > math.MaxInt64-units {
		return fmt.Errorf("credit units %d: balance would overflow: %w", units, ErrInvalidUnits)
	}
	return nil
}

// GrantFor returns the demo tokens a first provision grants: the request's
// value, or def when it is nil. A negative grant is ErrInvalidUnits.
func GrantFor(req ProvisionRequest, def int64) (int64, error) {
	grant := def
	if req.DemoTokens != nil {
		grant = *req.DemoTokens
	}
	if grant < 0 {
		return 0, fmt.Errorf("demo tokens %d: must not be negative: %w", grant, ErrInvalidUnits)
	}
	return grant, nil
}

// CheckIdempotencyKey accepts the empty key (no idempotency) and keys of
// at most MaxIdempotencyKeyLen printable ASCII bytes; anything else is
// ErrInvalidIdempotencyKey. The key itself is not put in the error.
func CheckIdempotencyKey(key string) error {
	if len(key) > MaxIdempotencyKeyLen {
		return fmt.Errorf("%d bytes, over %d: %w",
			len(key), MaxIdempotencyKeyLen, ErrInvalidIdempotencyKey)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("byte %d not printable: %w", i, ErrInvalidIdempotencyKey)
		}
	}
	return nil
}

// Decide applies rule to an account's balances for a consume of units,
// which the caller has checked with CheckUnits. The result is the answer
// to give: when Accepted, DemoDebited and PaidDebited say what to take and
// the Remaining fields are the balances after taking it; when refused,
// nothing is debited and the Remaining fields are the balances as given.
// An empty rule is DemoWhole. Decide never yields a negative balance.
func Decide(rule DemoRule, demo, paid, units int64) ConsumeResult {
	refuse := func(msg string) ConsumeResult {
		return ConsumeResult{RemainingDemo: demo, RemainingPaid: paid, Message: msg}
	}
	take := func(fromDemo, fromPaid int64) ConsumeResult {
		return ConsumeResult{
			Accepted:      true,
			RemainingDemo: demo - fromDemo,
			RemainingPaid: paid - fromPaid,
			DemoDebited:   fromDemo,
			PaidDebited:   fromPaid,
			Message:       MsgConsumed,
		}
	}
	if units <= 0 || demo < 0 || paid < 0 {
		// Not reachable through a checked request and a sound store; a
		// refusal is the answer that cannot overspend.
		return refuse(MsgInsufficient)
	}

	// Demo alone covers it: every rule takes from the demo first.
	if demo >= units {
		return take(units, 0)
	}

	// The platform's rule: an active demo must cover the whole request.
	if rule != DemoSpill && demo > 0 {
		return refuse(MsgInsufficientDemo)
	}

	// Demo (possibly zero) plus paid. units-demo cannot overflow: both
	// are non-negative and demo < units.
	rest := units - demo
	if paid < rest {
		return refuse(MsgInsufficient)
	}
	return take(demo, rest)
}

// Fingerprint identifies a request for idempotency: two requests under
// one key conflict when their fingerprints differ. It covers the kind,
// the account, the units and the usage type or reason, not the key.
type Fingerprint [sha256.Size]byte

// Fingerprint returns the consume request's fingerprint.
func (r ConsumeRequest) Fingerprint() Fingerprint {
	return fingerprint(EntryDebit, r.UserAutomationID, r.Units, r.UsageType)
}

// Fingerprint returns the credit request's fingerprint.
func (r CreditRequest) Fingerprint() Fingerprint {
	return fingerprint(EntryCredit, r.UserAutomationID, r.Units, r.Reason)
}

// fingerprint hashes a length-prefixed encoding, so no two distinct
// inputs share an encoding.
func fingerprint(kind EntryKind, id, units int64, label string) Fingerprint {
	buf := make([]byte, 0, 64+len(kind)+len(label))
	buf = binary.AppendUvarint(buf, uint64(len(kind)))
	buf = append(buf, kind...)
	buf = binary.BigEndian.AppendUint64(buf, uint64(id))
	buf = binary.BigEndian.AppendUint64(buf, uint64(units))
	buf = binary.AppendUvarint(buf, uint64(len(label)))
	buf = append(buf, label...)
	return sha256.Sum256(buf)
}

// CheckSettle validates a settle request before any store is read:
// ErrInvalidIdempotencyKey for a malformed key, ErrUnknownDebit for an
// empty one (it names no debit), ErrInvalidUnits for negative units. The
// errors are wrapped and never hold the key.
func CheckSettle(req SettleRequest) error {
	if err := CheckIdempotencyKey(req.IdempotencyKey); err != nil {
		return err
	}
	if req.IdempotencyKey == "" {
		return fmt.Errorf("no idempotency key: %w", ErrUnknownDebit)
	}
	if req.Units < 0 {
		return fmt.Errorf("settle units %d: must not be negative: %w", req.Units, ErrInvalidUnits)
	}
	return nil
}

// CheckReconcile returns ErrInvalidUnits, wrapped, for a negative balance.
func CheckReconcile(req ReconcileRequest) error {
	if req.DemoTokens < 0 || req.PaidTokens < 0 {
		return fmt.Errorf("reconcile to demo %d paid %d: must not be negative: %w",
			req.DemoTokens, req.PaidTokens, ErrInvalidUnits)
	}
	return nil
}

// SettlePlan is what settling one debit does: the debit's demo and paid
// tokens after the settle, and the change to the account's balances
// (positive: given back; negative: the extra charged).
type SettlePlan struct {
	HeldDemo, HeldPaid   int64
	DemoDelta, PaidDelta int64
}

// Charged is the debit's units after the settle.
func (p SettlePlan) Charged() int64 { return p.HeldDemo + p.HeldPaid }

// PlanSettle settles a debit holding heldDemo and heldPaid tokens at
// units, on an account with demo and paid tokens; all must be >= 0.
// Below the debit, the difference goes back paid first, then demo, so
// that what stays held is taken from the demo grant first, as the debit
// was. Above it, the extra comes from the balance the debit used (paid
// when it took any paid tokens, else demo), then from the other, and
// never more than the two hold. Giving back past math.MaxInt64 is
// ErrInvalidUnits. PlanSettle never yields a negative balance or hold.
func PlanSettle(heldDemo, heldPaid, demo, paid, units int64) (SettlePlan, error) {
	if heldDemo < 0 || heldPaid < 0 || demo < 0 || paid < 0 || units < 0 {
		return SettlePlan{}, fmt.Errorf("settle of %d+%d on %d+%d at %d: %w",
			heldDemo, heldPaid, demo, paid, units, ErrInvalidUnits)
	}
	if heldDemo > math.MaxInt64-heldPaid {
		return SettlePlan{}, fmt.Errorf("debit of %d+%d overflows: %w",
			heldDemo, heldPaid, ErrInvalidUnits)
	}
	held := heldDemo + heldPaid
	p := SettlePlan{HeldDemo: heldDemo, HeldPaid: heldPaid}

	if units <= held {
		back := held - units
		toPaid := min(back, heldPaid)
		toDemo := back - toPaid
		if paid > math.MaxInt64-toPaid || demo > math.MaxInt64-toDemo {
			return SettlePlan{}, fmt.Errorf("settle gives back %d: balance would overflow: %w",
				back, ErrInvalidUnits)
		}
		p.HeldDemo -= toDemo
		p.HeldPaid -= toPaid
		p.DemoDelta, p.PaidDelta = toDemo, toPaid
		return p, nil
	}

	// Take the extra, first from the balance the debit used.
	extra := units - held
	var fromDemo, fromPaid int64
	if heldPaid > 0 {
		fromPaid = min(extra, paid)
		fromDemo = min(extra-fromPaid, demo)
	} else {
		fromDemo = min(extra, demo)
		fromPaid = min(extra-fromDemo, paid)
	}
	p.HeldDemo += fromDemo
	p.HeldPaid += fromPaid
	p.DemoDelta, p.PaidDelta = -fromDemo, -fromPaid
	return p, nil
}
