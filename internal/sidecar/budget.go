package sidecar

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/outbox"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metrics"
)

// ledgerBudget is the egress Budget on the sidecar's ledger: a reservation
// is a keyed debit, settled to the call's real cost or refunded.
//
// With the platform's ledger on (forward), the local balances mirror the
// platform's: each answer to a forwarded consume carries the platform's
// balances after it. An answer is taken only when nothing of that user is
// open here: no reservation held, and no consume this process forwarded
// still unanswered (including those a previous run left in the outbox).
// Answers arrive in no guaranteed order, so the lowest balances answered
// while something was open are kept and taken when the user is clear; the
// platform's balances only fall between purchases, so the lowest answer is
// the latest one, and a purchase made meanwhile shows at the next
// reconciliation (an error against the user, briefly). A reservation and a
// reconciliation of one user never interleave (a per-user lock), so a
// reconciliation cannot erase a hold taken an instant earlier.
//
// Something open whose end this process cannot see (an Enqueue that
// failed, a settle that timed out) lapses after openLapse, so the user is
// never left unreconciled for good.
//
// Replicas sharing a PostgreSQL ledger and outbox count only their own
// held reservations: a consume is answered to whichever replica delivered
// it. A replica may then copy the platform's balances while another
// replica holds a reservation or has a consume waiting, so the local
// mirror can briefly show more than the user has; a call admitted that way
// is refused by the platform's ledger, which is logged and counted as a
// refused consume.
type ledgerBudget struct {
	ledger    metering.Ledger
	usageType string
	forward   bool // the platform's ledger is on: track what is open
	shared    bool // replicas share the outbox: forwarded consumes are not tracked
	log       *slog.Logger
	rec       metrics.EgressRecorder
	now       func() time.Time

	seed    maphash.Seed
	stripes [64]sync.Mutex // per-user order of reservations and reconciliations

	mu        sync.Mutex
	open      map[int64]map[string]time.Time // user -> open ids -> since when
	forwarded map[string]int64               // consume item id -> user
	lowest    map[int64]balances             // user -> lowest balances answered since
}

// openLapse is how long something open may stay unseen before it stops
// holding its user's reconciliation back.
const openLapse = time.Hour

// balances are one platform answer's remaining tokens.
type balances struct{ demo, paid int64 }

func newLedgerBudget(l metering.Ledger, c config.EgressBudget, log *slog.Logger,
	rec metrics.EgressRecorder, shared bool) *ledgerBudget {
	return &ledgerBudget{
		ledger:    l,
		usageType: c.UsageType,
		forward:   c.PlatformLedger,
		shared:    shared,
		log:       log,
		rec:       rec,
		now:       time.Now,
		seed:      maphash.MakeSeed(),
		open:      map[int64]map[string]time.Time{},
		forwarded: map[string]int64{},
		lowest:    map[int64]balances{},
	}
}

var _ egress.Budget = (*ledgerBudget)(nil)

// debitKey is the idempotency key of call id's reservation.
func debitKey(id string) string { return "egress " + id }

// stripe returns the lock ordering user's reservations and
// reconciliations.
func (b *ledgerBudget) stripe(user int64) *sync.Mutex {
	var buf [8]byte
	for i := range buf {
		buf[i] = byte(user >> (8 * i))
	}
	return &b.stripes[maphash.Bytes(b.seed, buf[:])%uint64(len(b.stripes))]
}

// loadPending counts the consumes an earlier run left pending in the
// outbox as open, so their answers are not taken for the latest.
func (b *ledgerBudget) loadPending(ctx context.Context, store outbox.Store, max int) error {
	items, err := store.List(ctx, outbox.Filter{
		Kind: outbox.KindConsume, State: outbox.StatePending, Limit: max})
	if err != nil {
		return fmt.Errorf("egress outbox: list pending consumes: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, it := range items {
		u := it.Record.UserAutomationID
		b.openLocked(u, it.ID)
		b.forwarded[it.ID] = u
	}
	return nil
}

// Reserve implements egress.Budget.
func (b *ledgerBudget) Reserve(ctx context.Context, user int64, id string,
	units int64) (bool, error) {
	if b.forward {
		l := b.stripe(user)
		l.Lock()
		defer l.Unlock()
	}
	res, err := b.ledger.Consume(ctx, metering.ConsumeRequest{
		UserAutomationID: user,
		Units:            units,
		UsageType:        b.usageType,
		IdempotencyKey:   debitKey(id),
	})
	if b.forward && (err != nil || res.Accepted) {
		// A failed debit may still have committed: count it open until
		// its Release (which the handler makes) or the lapse.
		b.mu.Lock()
		b.openLocked(user, id)
		b.mu.Unlock()
	}
	if err != nil {
		return false, err
	}
	return res.Accepted, nil
}

// Settle implements egress.Budget.
func (b *ledgerBudget) Settle(ctx context.Context, user int64, id string,
	units int64) (int64, error) {
	res, err := b.ledger.Settle(ctx, metering.SettleRequest{
		UserAutomationID: user,
		IdempotencyKey:   debitKey(id),
		Units:            units,
		Reason:           "egress usage",
	})
	if b.forward {
		b.mu.Lock()
		b.closeLocked(user, id)
		if err == nil && !b.shared && res.Charged > 0 {
			// Open until the platform answers the consume the outbox
			// forwards for this call.
			item := outbox.ItemID(outbox.KindConsume, id)
			b.openLocked(user, item)
			b.forwarded[item] = user
		}
		b.mu.Unlock()
	}
	if err != nil {
		return 0, err
	}
	return res.Charged, nil
}

// Release implements egress.Budget.
func (b *ledgerBudget) Release(ctx context.Context, user int64, id string) error {
	_, err := b.ledger.Refund(ctx, metering.RefundRequest{
		UserAutomationID: user,
		IdempotencyKey:   debitKey(id),
		Reason:           "egress call used nothing",
	})
	if b.forward {
		b.mu.Lock()
		b.closeLocked(user, id)
		b.mu.Unlock()
	}
	if errors.Is(err, metering.ErrUnknownDebit) {
		return nil // nothing was held, or it was already given back
	}
	return err
}

// openLocked marks id open for user.
func (b *ledgerBudget) openLocked(user int64, id string) {
	ids := b.open[user]
	if ids == nil {
		ids = map[string]time.Time{}
		b.open[user] = ids
	}
	ids[id] = b.now()
}

// closeLocked ends id for user.
func (b *ledgerBudget) closeLocked(user int64, id string) {
	if ids := b.open[user]; ids != nil {
		delete(ids, id)
		if len(ids) == 0 {
			delete(b.open, user)
		}
	}
}

// busyLocked reports whether anything of user's is open, dropping what
// has lapsed.
func (b *ledgerBudget) busyLocked(user int64) bool {
	now := b.now()
	for id, since := range b.open[user] {
		if now.Sub(since) > openLapse {
			b.log.Warn("egress: an open call or consume lapsed unseen; "+
				"the platform's balances may be taken without it",
				slog.Int64("user_automation_id", user), slog.String("id", id))
			delete(b.open[user], id)
			delete(b.forwarded, id)
		}
	}
	if len(b.open[user]) == 0 {
		delete(b.open, user)
		return false
	}
	return true
}

// forwardEnded closes a forwarded consume whose delivery ended (answered,
// or parked as unknown or failed).
func (b *ledgerBudget) forwardEnded(itemID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if user, ok := b.forwarded[itemID]; ok {
		delete(b.forwarded, itemID)
		b.closeLocked(user, itemID)
	}
}

// platformAnswered takes the platform ledger's balances for a user once
// nothing of that user's is open here (see ledgerBudget).
func (b *ledgerBudget) platformAnswered(a outbox.ConsumeAnswer) {
	b.forwardEnded(outbox.ItemID(outbox.KindConsume, a.CallID))
	if !a.Accepted {
		// The platform refused to charge a call its user already made:
		// the platform's own balance could not cover it.
		b.rec.OutboxDelivery(string(outbox.KindConsume), "refused")
		b.log.Warn("egress: the platform's ledger refused a forwarded consume; "+
			"the call went uncharged there",
			slog.String("call_id", a.CallID),
			slog.Int64("user_automation_id", a.UserAutomationID),
			slog.Int64("units", a.Units))
	}
	user := a.UserAutomationID
	got := balances{demo: max(a.RemainingDemoTokens, 0), paid: max(a.RemainingPaidTokens, 0)}

	l := b.stripe(user)
	l.Lock()
	defer l.Unlock()
	b.mu.Lock()
	if low, ok := b.lowest[user]; ok {
		got = balances{demo: min(low.demo, got.demo), paid: min(low.paid, got.paid)}
	}
	if b.busyLocked(user) {
		b.lowest[user] = got
		b.mu.Unlock()
		return
	}
	delete(b.lowest, user)
	b.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := b.ledger.Reconcile(ctx, metering.ReconcileRequest{
		UserAutomationID: user,
		DemoTokens:       got.demo,
		PaidTokens:       got.paid,
		Reason:           "platform ledger answer",
	})
	if err != nil {
		b.log.Error("egress: local balances not updated from the platform",
			slog.Int64("user_automation_id", user), slog.Any("err", err))
	}
}
