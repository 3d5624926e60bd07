package metering

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestPlanSettle(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name               string
		heldDemo, heldPaid int64
		demo, paid, units  int64
		want               SettlePlan
		wantCharged        int64
	}{
		{name: "same units: nothing moves", heldDemo: 10, demo: 5, paid: 5, units: 10,
			want: SettlePlan{HeldDemo: 10}, wantCharged: 10},
		{name: "down, demo debit", heldDemo: 10, demo: 5, paid: 7, units: 4,
			want: SettlePlan{HeldDemo: 4, DemoDelta: 6}, wantCharged: 4},
		{name: "down to zero", heldDemo: 3, heldPaid: 2, units: 0,
			want: SettlePlan{DemoDelta: 3, PaidDelta: 2}, wantCharged: 0},
		{name: "down: paid goes back first", heldDemo: 3, heldPaid: 5, units: 4,
			want: SettlePlan{HeldDemo: 3, HeldPaid: 1, PaidDelta: 4}, wantCharged: 4},
		{name: "down: past the paid part into demo", heldDemo: 3, heldPaid: 5, units: 2,
			want: SettlePlan{HeldDemo: 2, DemoDelta: 1, PaidDelta: 5}, wantCharged: 2},
		{name: "up, demo debit, demo covers", heldDemo: 10, demo: 20, paid: 20, units: 15,
			want: SettlePlan{HeldDemo: 15, DemoDelta: -5}, wantCharged: 15},
		{name: "up, demo debit, then paid", heldDemo: 10, demo: 2, paid: 20, units: 15,
			want:        SettlePlan{HeldDemo: 12, HeldPaid: 3, DemoDelta: -2, PaidDelta: -3},
			wantCharged: 15},
		{name: "up, paid debit, paid first", heldPaid: 10, demo: 20, paid: 20, units: 15,
			want: SettlePlan{HeldPaid: 15, PaidDelta: -5}, wantCharged: 15},
		{name: "up, paid debit, then demo", heldPaid: 10, demo: 20, paid: 1, units: 15,
			want:        SettlePlan{HeldDemo: 4, HeldPaid: 11, DemoDelta: -4, PaidDelta: -1},
			wantCharged: 15},
		{name: "up, mixed debit: paid first", heldDemo: 3, heldPaid: 2, demo: 9, paid: 9,
			units: 8, want: SettlePlan{HeldDemo: 3, HeldPaid: 5, PaidDelta: -3}, wantCharged: 8},
		{name: "up beyond both balances", heldDemo: 10, demo: 2, paid: 1, units: 15,
			want:        SettlePlan{HeldDemo: 12, HeldPaid: 1, DemoDelta: -2, PaidDelta: -1},
			wantCharged: 13},
		{name: "up with nothing left", heldDemo: 10, units: math.MaxInt64,
			want: SettlePlan{HeldDemo: 10}, wantCharged: 10},
	}
	for _, tt := range tests {
		got, err := PlanSettle(tt.heldDemo, tt.heldPaid, tt.demo, tt.paid, tt.units)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got != tt.want || got.Charged() != tt.wantCharged {
			t.Errorf("%s: got %+v (charged %d), want %+v (charged %d)",
				tt.name, got, got.Charged(), tt.want, tt.wantCharged)
		}
	}
}

func TestPlanSettleRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                           string
		heldDemo, heldPaid, demo, paid int64
		units                          int64
	}{
		{name: "negative units", heldDemo: 1, units: -1},
		{name: "negative balance", heldDemo: 1, demo: -1, units: 1},
		{name: "negative hold", heldPaid: -1, units: 1},
		{name: "paid would overflow", heldPaid: 5, paid: math.MaxInt64 - 2, units: 1},
		{name: "demo would overflow", heldDemo: 5, demo: math.MaxInt64, units: 4},
		{name: "hold overflows", heldDemo: math.MaxInt64, heldPaid: 1, units: 1},
	}
	for _, tt := range tests {
		_, err := PlanSettle(tt.heldDemo, tt.heldPaid, tt.demo, tt.paid, tt.units)
		if !errors.Is(err, ErrInvalidUnits) {
			t.Errorf("%s: got %v, want ErrInvalidUnits", tt.name, err)
		}
	}
}

func TestCheckSettleAndReconcile(t *testing.T) {
	t.Parallel()
	settles := []struct {
		req  SettleRequest
		want error
	}{
		{SettleRequest{IdempotencyKey: "k", Units: 0}, nil},
		{SettleRequest{IdempotencyKey: "k", Units: math.MaxInt64}, nil},
		{SettleRequest{IdempotencyKey: "k", Units: -1}, ErrInvalidUnits},
		{SettleRequest{IdempotencyKey: "", Units: 1}, ErrUnknownDebit},
		{SettleRequest{IdempotencyKey: "a\tb", Units: 1}, ErrInvalidIdempotencyKey},
		{SettleRequest{IdempotencyKey: strings.Repeat("k", MaxIdempotencyKeyLen+1)},
			ErrInvalidIdempotencyKey},
	}
	for _, tt := range settles {
		err := CheckSettle(tt.req)
		if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("CheckSettle(%+v) = %v, want %v", tt.req, err, tt.want)
		}
	}
	reconciles := []struct {
		demo, paid int64
		ok         bool
	}{{0, 0, true}, {5, math.MaxInt64, true}, {-1, 0, false}, {0, -1, false}}
	for _, tt := range reconciles {
		err := CheckReconcile(ReconcileRequest{DemoTokens: tt.demo, PaidTokens: tt.paid})
		if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidUnits)) {
			t.Errorf("CheckReconcile(%d, %d) = %v, want ok %v", tt.demo, tt.paid, err, tt.ok)
		}
	}
}

// FuzzPlanSettle checks what every settle must keep: nothing negative,
// the balances and the hold move by the same amounts in opposite
// directions, the charge is the units when the balances allow it and
// never more, and going down gives back paid tokens before demo ones.
func FuzzPlanSettle(f *testing.F) {
	f.Add(int64(10), int64(0), int64(5), int64(5), int64(15))
	f.Add(int64(3), int64(5), int64(0), int64(0), int64(2))
	f.Add(int64(0), int64(10), int64(1), int64(0), int64(20))
	f.Add(int64(1), int64(1), int64(math.MaxInt64), int64(math.MaxInt64), int64(0))
	f.Fuzz(func(t *testing.T, heldDemo, heldPaid, demo, paid, units int64) {
		p, err := PlanSettle(heldDemo, heldPaid, demo, paid, units)
		if err != nil {
			if !errors.Is(err, ErrInvalidUnits) {
				t.Fatalf("error %v is not ErrInvalidUnits", err)
			}
			return
		}
		if p.HeldDemo < 0 || p.HeldPaid < 0 || demo+p.DemoDelta < 0 || paid+p.PaidDelta < 0 {
			t.Fatalf("negative value: %+v from %d/%d on %d/%d", p, heldDemo, heldPaid, demo, paid)
		}
		if p.HeldDemo-heldDemo != -p.DemoDelta || p.HeldPaid-heldPaid != -p.PaidDelta {
			t.Fatalf("hold and balances disagree: %+v from %d/%d", p, heldDemo, heldPaid)
		}
		held := heldDemo + heldPaid
		switch {
		case units <= held:
			if p.Charged() != units || p.DemoDelta < 0 || p.PaidDelta < 0 {
				t.Fatalf("down to %d: %+v", units, p)
			}
			if p.DemoDelta > 0 && p.HeldPaid > 0 {
				t.Fatalf("demo went back before paid: %+v", p)
			}
		default:
			want := min(units, held+demo+paid)
			if demo > math.MaxInt64-paid || held > math.MaxInt64-demo-paid {
				want = units // the balances together cannot be short
			}
			if p.Charged() != want || p.DemoDelta > 0 || p.PaidDelta > 0 {
				t.Fatalf("up to %d from %d/%d on %d/%d: %+v, want charged %d",
					units, heldDemo, heldPaid, demo, paid, p, want)
			}
		}
	})
}
