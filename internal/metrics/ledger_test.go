package metrics

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// fakeLedger answers each method through a function field; a nil field
// answers the zero value and err.
type fakeLedger struct {
	err       error
	consume   metering.ConsumeResult
	entries   []metering.Entry
	advance   func() // called inside every method, to let time pass
	closeCall int
}

var _ metering.Ledger = (*fakeLedger)(nil)

func (f *fakeLedger) tick() {
	if f.advance != nil {
		f.advance()
	}
}

func (f *fakeLedger) Provision(context.Context,
	metering.ProvisionRequest) (metering.ProvisionResult, error) {
	f.tick()
	return metering.ProvisionResult{Created: true}, f.err
}

func (f *fakeLedger) Consume(context.Context,
	metering.ConsumeRequest) (metering.ConsumeResult, error) {
	f.tick()
	return f.consume, f.err
}

func (f *fakeLedger) Credit(context.Context, metering.CreditRequest) (metering.Account, error) {
	f.tick()
	return metering.Account{PaidTokens: 9}, f.err
}

func (f *fakeLedger) Account(_ context.Context, id int64) (metering.Account, error) {
	f.tick()
	return metering.Account{UserAutomationID: id}, f.err
}

func (f *fakeLedger) Journal(_ context.Context, _ uint64, _ int,
	fn func(metering.Entry) error) error {
	f.tick()
	for _, e := range f.entries {
		if err := fn(e); err != nil {
			return err
		}
	}
	return f.err
}

func (f *fakeLedger) Refund(context.Context, metering.RefundRequest) (metering.Account, error) {
	f.tick()
	return metering.Account{DemoTokens: 3}, f.err
}

func (f *fakeLedger) Settle(context.Context,
	metering.SettleRequest) (metering.SettleResult, error) {
	f.tick()
	return metering.SettleResult{Charged: 4}, f.err
}

func (f *fakeLedger) Reconcile(context.Context,
	metering.ReconcileRequest) (metering.Account, error) {
	f.tick()
	return metering.Account{PaidTokens: 5}, f.err
}

func (f *fakeLedger) Close() error {
	f.tick()
	f.closeCall++
	return f.err
}

// opRecorder is a Recorder that keeps the ledger operations it saw.
type opRecorder struct {
	Nop // every other method does nothing
	mu  sync.Mutex
	ops []string // "op outcome duration"
}

func (r *opRecorder) LedgerOp(op, outcome string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, fmt.Sprintf("%s %s %s", op, outcome, d))
}

// stepClock advances by step on every advance call.
type stepClock struct {
	now  time.Time
	step time.Duration
}

func (c *stepClock) Now() time.Time { return c.now }
func (c *stepClock) advance()       { c.now = c.now.Add(c.step) }

// newTestLedger wraps f with a recorder and a clock that moves 7 ms
// during each call.
func newTestLedger(f *fakeLedger) (*ledger, *opRecorder) {
	clk := &stepClock{now: time.Unix(1_700_000_000, 0), step: 7 * time.Millisecond}
	f.advance = clk.advance
	rec := &opRecorder{}
	return &ledger{next: f, rec: rec, now: clk.Now}, rec
}

func TestLedgerTimesAndCountsEveryMethod(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	calls := []struct {
		op   string
		call func(l metering.Ledger) error
	}{
		{OpProvision, func(l metering.Ledger) error {
			_, err := l.Provision(ctx, metering.ProvisionRequest{UserAutomationID: 1})
			return err
		}},
		{OpConsume, func(l metering.Ledger) error {
			_, err := l.Consume(ctx, metering.ConsumeRequest{UserAutomationID: 1, Units: 1})
			return err
		}},
		{OpCredit, func(l metering.Ledger) error {
			_, err := l.Credit(ctx, metering.CreditRequest{UserAutomationID: 1, Units: 1})
			return err
		}},
		{OpAccount, func(l metering.Ledger) error {
			_, err := l.Account(ctx, 1)
			return err
		}},
		{OpJournal, func(l metering.Ledger) error {
			return l.Journal(ctx, 0, 0, func(metering.Entry) error { return nil })
		}},
		{OpRefund, func(l metering.Ledger) error {
			_, err := l.Refund(ctx, metering.RefundRequest{UserAutomationID: 1,
				IdempotencyKey: "k"})
			return err
		}},
		{OpSettle, func(l metering.Ledger) error {
			_, err := l.Settle(ctx, metering.SettleRequest{UserAutomationID: 1,
				IdempotencyKey: "k", Units: 1})
			return err
		}},
		{OpReconcile, func(l metering.Ledger) error {
			_, err := l.Reconcile(ctx, metering.ReconcileRequest{UserAutomationID: 1})
			return err
		}},
		{OpClose, func(l metering.Ledger) error { return l.Close() }},
	}
	errs := []struct {
		err  error
		want string
	}{
		{nil, OutcomeOK},
		{fmt.Errorf("bolt: %w", metering.ErrUnknownAccount), OutcomeUnknownAccount},
		{fmt.Errorf("x: %w", metering.ErrClosed), OutcomeClosed},
		{errors.New("disk on fire"), OutcomeError},
	}
	for _, c := range calls {
		for _, e := range errs {
			t.Run(c.op+"/"+e.want, func(t *testing.T) {
				t.Parallel()
				f := &fakeLedger{err: e.err, consume: metering.ConsumeResult{Accepted: true}}
				l, rec := newTestLedger(f)
				err := c.call(l)
				if !errors.Is(err, e.err) || (e.err == nil) != (err == nil) {
					t.Fatalf("error = %v, want %v passed through", err, e.err)
				}
				want := []string{c.op + " " + e.want + " 7ms"}
				if fmt.Sprint(rec.ops) != fmt.Sprint(want) {
					t.Errorf("recorded %v, want %v", rec.ops, want)
				}
			})
		}
	}
}

func TestLedgerPassesAnswersThrough(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := &fakeLedger{consume: metering.ConsumeResult{Accepted: true, RemainingPaid: 41}}
	l, _ := newTestLedger(f)

	if res, _ := l.Provision(ctx, metering.ProvisionRequest{}); !res.Created {
		t.Error("Provision result lost")
	}
	if res, _ := l.Consume(ctx, metering.ConsumeRequest{}); res.RemainingPaid != 41 {
		t.Errorf("Consume RemainingPaid = %d, want 41", res.RemainingPaid)
	}
	if acc, _ := l.Credit(ctx, metering.CreditRequest{}); acc.PaidTokens != 9 {
		t.Errorf("Credit PaidTokens = %d, want 9", acc.PaidTokens)
	}
	if acc, _ := l.Account(ctx, 12); acc.UserAutomationID != 12 {
		t.Errorf("Account id = %d, want 12", acc.UserAutomationID)
	}
	if acc, _ := l.Refund(ctx, metering.RefundRequest{}); acc.DemoTokens != 3 {
		t.Errorf("Refund DemoTokens = %d, want 3", acc.DemoTokens)
	}
	if res, _ := l.Settle(ctx, metering.SettleRequest{}); res.Charged != 4 {
		t.Errorf("Settle Charged = %d, want 4", res.Charged)
	}
	if acc, _ := l.Reconcile(ctx, metering.ReconcileRequest{}); acc.PaidTokens != 5 {
		t.Errorf("Reconcile PaidTokens = %d, want 5", acc.PaidTokens)
	}
	_ = l.Close()
	if f.closeCall != 1 {
		t.Errorf("Close reached the ledger %d times, want 1", f.closeCall)
	}
}

func TestLedgerConsumeOutcomes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		res  metering.ConsumeResult
		err  error
		want string
	}{
		{"accepted", metering.ConsumeResult{Accepted: true}, nil, OutcomeOK},
		{"refused", metering.ConsumeResult{}, nil, OutcomeRefused},
		{"replayed accept", metering.ConsumeResult{Accepted: true, Replayed: true}, nil,
			OutcomeReplayed},
		{"replayed refusal", metering.ConsumeResult{Replayed: true}, nil, OutcomeReplayed},
		{"conflict", metering.ConsumeResult{}, metering.ErrIdempotencyConflict,
			OutcomeConflict},
		{"error wins over a result", metering.ConsumeResult{Accepted: true},
			metering.ErrInvalidUnits, OutcomeInvalidUnits},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, rec := newTestLedger(&fakeLedger{consume: tt.res, err: tt.err})
			_, _ = l.Consume(context.Background(), metering.ConsumeRequest{})
			want := []string{"consume " + tt.want + " 7ms"}
			if fmt.Sprint(rec.ops) != fmt.Sprint(want) {
				t.Errorf("recorded %v, want %v", rec.ops, want)
			}
		})
	}
}

func TestLedgerJournalStopped(t *testing.T) {
	t.Parallel()
	stop := errors.New("enough")
	f := &fakeLedger{entries: []metering.Entry{{Seq: 1}, {Seq: 2}}}
	l, rec := newTestLedger(f)
	var seen []uint64
	err := l.Journal(context.Background(), 0, 0, func(e metering.Entry) error {
		seen = append(seen, e.Seq)
		return stop
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Journal error = %v, want the callback's", err)
	}
	if fmt.Sprint(seen) != "[1]" {
		t.Errorf("callback saw %v, want [1]", seen)
	}
	if want := "[journal stopped 7ms]"; fmt.Sprint(rec.ops) != want {
		t.Errorf("recorded %v, want %v", rec.ops, want)
	}
}

func TestLedgerOutcome(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want string
	}{
		{nil, OutcomeOK},
		{metering.ErrUnknownAccount, OutcomeUnknownAccount},
		{metering.ErrInvalidUnits, OutcomeInvalidUnits},
		{metering.ErrInvalidIdempotencyKey, OutcomeInvalidKey},
		{metering.ErrIdempotencyConflict, OutcomeConflict},
		{metering.ErrUnknownDebit, OutcomeUnknownDebit},
		{metering.ErrClosed, OutcomeClosed},
		{fmt.Errorf("pg: %w", context.Canceled), OutcomeCanceled},
		{fmt.Errorf("pg: %w", context.DeadlineExceeded), OutcomeDeadline},
		{errors.New("connection reset"), OutcomeError},
	}
	for _, tt := range tests {
		if got := LedgerOutcome(tt.err); got != tt.want {
			t.Errorf("LedgerOutcome(%v) = %q, want %q", tt.err, got, tt.want)
		}
		if pick(tt.want, ledgerOutcomes) != tt.want {
			t.Errorf("outcome %q is not in the label vocabulary", tt.want)
		}
	}
}

func TestWrapLedgerDisabled(t *testing.T) {
	t.Parallel()
	f := &fakeLedger{}
	if got := WrapLedger(f, Nop{}); got != metering.Ledger(f) {
		t.Errorf("WrapLedger with Nop = %T, want the ledger itself", got)
	}
	if got := WrapLedger(f, nil); got != metering.Ledger(f) {
		t.Errorf("WrapLedger with nil = %T, want the ledger itself", got)
	}
	if _, ok := WrapLedger(f, New(Options{})).(*ledger); !ok {
		t.Error("WrapLedger with a Prometheus recorder did not instrument")
	}
}

func TestWrapLedgerFeedsPrometheus(t *testing.T) {
	t.Parallel()
	p := New(Options{})
	l := WrapLedger(&fakeLedger{err: metering.ErrUnknownDebit}, p)
	_, _ = l.Refund(context.Background(), metering.RefundRequest{IdempotencyKey: "k"})
	fams := gather(t, p.Registry())
	wantValue(t, fams, "zimmer_sidecar_ledger_ops_total", "op=refund,outcome=unknown_debit", 1)
	wantValue(t, fams, "zimmer_sidecar_ledger_op_duration_seconds", "op=refund", 1)
}
