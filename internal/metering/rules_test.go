package metering

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name             string
		rule             DemoRule
		demo, paid, unit int64
		want             ConsumeResult
	}{
		{
			name: "whole: demo covers", rule: DemoWhole, demo: 10, paid: 5, unit: 10,
			want: ConsumeResult{Accepted: true, DemoDebited: 10, RemainingPaid: 5,
				Message: MsgConsumed},
		},
		{
			name: "whole: demo short, no spill into paid", rule: DemoWhole,
			demo: 3, paid: 100, unit: 5,
			want: ConsumeResult{RemainingDemo: 3, RemainingPaid: 100,
				Message: MsgInsufficientDemo},
		},
		{
			name: "whole: demo over, paid used", rule: DemoWhole, demo: 0, paid: 100, unit: 5,
			want: ConsumeResult{Accepted: true, PaidDebited: 5, RemainingPaid: 95,
				Message: MsgConsumed},
		},
		{
			name: "whole: paid short", rule: DemoWhole, demo: 0, paid: 4, unit: 5,
			want: ConsumeResult{RemainingPaid: 4, Message: MsgInsufficient},
		},
		{
			name: "empty rule is whole", rule: "", demo: 3, paid: 100, unit: 5,
			want: ConsumeResult{RemainingDemo: 3, RemainingPaid: 100,
				Message: MsgInsufficientDemo},
		},
		{
			name: "spill: demo then paid", rule: DemoSpill, demo: 3, paid: 100, unit: 5,
			want: ConsumeResult{Accepted: true, DemoDebited: 3, PaidDebited: 2,
				RemainingPaid: 98, Message: MsgConsumed},
		},
		{
			name: "spill: both short", rule: DemoSpill, demo: 3, paid: 1, unit: 5,
			want: ConsumeResult{RemainingDemo: 3, RemainingPaid: 1, Message: MsgInsufficient},
		},
		{
			name: "spill: exact", rule: DemoSpill, demo: 3, paid: 2, unit: 5,
			want: ConsumeResult{Accepted: true, DemoDebited: 3, PaidDebited: 2,
				Message: MsgConsumed},
		},
		{
			name: "nothing at all", rule: DemoWhole, demo: 0, paid: 0, unit: 1,
			want: ConsumeResult{Message: MsgInsufficient},
		},
		{
			name: "zero units refused", rule: DemoSpill, demo: 5, paid: 5, unit: 0,
			want: ConsumeResult{RemainingDemo: 5, RemainingPaid: 5, Message: MsgInsufficient},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Decide(tt.rule, tt.demo, tt.paid, tt.unit)
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestCheckUnits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		units, max int64
		ok         bool
	}{
		{1, 10, true}, {10, 10, true}, {11, 10, false}, {0, 10, false}, {-5, 10, false},
		{math.MinInt64, 10, false},
	}
	for _, tt := range tests {
		err := CheckUnits(tt.units, tt.max)
		if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidUnits)) {
			t.Errorf("CheckUnits(%d, %d) = %v, want ok=%v", tt.units, tt.max, err, tt.ok)
		}
	}
}

func TestCheckCredit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		paid, units int64
		ok          bool
	}{
		{0, 1, true}, {5, math.MaxInt64 - 5, true}, {6, math.MaxInt64 - 5, false},
		{0, 0, false}, {0, -1, false},
	}
	for _, tt := range tests {
		err := CheckCredit(tt.paid, tt.units)
		if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidUnits)) {
			t.Errorf("CheckCredit(%d, %d) = %v, want ok=%v", tt.paid, tt.units, err, tt.ok)
		}
	}
}

func TestGrantFor(t *testing.T) {
	t.Parallel()
	seven, negative := int64(7), int64(-1)
	tests := []struct {
		name string
		req  *int64
		want int64
		err  bool
	}{
		{name: "nil means default", req: nil, want: 5},
		{name: "explicit", req: &seven, want: 7},
		{name: "negative", req: &negative, err: true},
	}
	for _, tt := range tests {
		got, err := GrantFor(ProvisionRequest{DemoTokens: tt.req}, 5)
		if tt.err {
			if !errors.Is(err, ErrInvalidUnits) {
				t.Errorf("%s: got err %v, want ErrInvalidUnits", tt.name, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: got %d, %v, want %d", tt.name, got, err, tt.want)
		}
	}
}

func TestCheckIdempotencyKey(t *testing.T) {
	t.Parallel()
	const secretish = "k-\x00-hidden"
	tests := []struct {
		key string
		ok  bool
	}{
		{"", true}, {"k1", true}, {"550e8400-e29b-41d4-a716-446655440000", true},
		{strings.Repeat("a", MaxIdempotencyKeyLen), true},
		{strings.Repeat("a", MaxIdempotencyKeyLen+1), false},
		{secretish, false}, {"caf\u00e9", false}, {"tab\there", false},
	}
	for _, tt := range tests {
		err := CheckIdempotencyKey(tt.key)
		if tt.ok != (err == nil) {
			t.Errorf("CheckIdempotencyKey(%q) = %v, want ok=%v", tt.key, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidIdempotencyKey) {
			t.Errorf("CheckIdempotencyKey(%q) = %v, want ErrInvalidIdempotencyKey", tt.key, err)
		}
		if err != nil && strings.Contains(err.Error(), "hidden") {
			t.Errorf("error %q repeats the key", err)
		}
	}
}

func TestOptions(t *testing.T) {
	t.Parallel()
	d := Options{}.WithDefaults()
	if d.MaxUnits != DefaultMaxUnits || d.DemoRule != DemoWhole || d.Now == nil {
		t.Errorf("zero options with defaults: got %+v", d)
	}
	if d.DefaultDemoTokens != 0 {
		t.Errorf("default demo tokens: got %d, want 0", d.DefaultDemoTokens)
	}
	fixed := time.Unix(100, 0)
	kept := Options{MaxUnits: 7, DemoRule: DemoSpill, Now: func() time.Time { return fixed }}
	kept = kept.WithDefaults()
	if kept.MaxUnits != 7 || kept.DemoRule != DemoSpill || !kept.Now().Equal(fixed) {
		t.Errorf("set options changed by defaults: got %+v", kept)
	}

	bad := []Options{
		{DefaultDemoTokens: -1}, {MaxUnits: -1}, {DemoRule: "half"},
	}
	for _, o := range bad {
		if err := o.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", o)
		}
	}
	if err := (Options{}).Validate(); err != nil {
		t.Errorf("Validate(zero) = %v, want nil", err)
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	base := ConsumeRequest{UserAutomationID: 1, Units: 10, UsageType: "chat", IdempotencyKey: "a"}
	sameButKey := base
	sameButKey.IdempotencyKey = "b"
	if base.Fingerprint() != sameButKey.Fingerprint() {
		t.Error("fingerprint depends on the idempotency key")
	}
	others := []ConsumeRequest{
		{UserAutomationID: 2, Units: 10, UsageType: "chat"},
		{UserAutomationID: 1, Units: 11, UsageType: "chat"},
		{UserAutomationID: 1, Units: 10, UsageType: "chat2"},
	}
	for _, o := range others {
		if o.Fingerprint() == base.Fingerprint() {
			t.Errorf("%+v has the fingerprint of %+v", o, base)
		}
	}
	credit := CreditRequest{UserAutomationID: 1, Units: 10, Reason: "chat"}
	if credit.Fingerprint() == base.Fingerprint() {
		t.Error("a credit has the fingerprint of a consume with the same fields")
	}
}

// FuzzDecide checks Decide's invariants for any balances and units: no
// negative balance, debits add up to the units, refusals change nothing,
// and the whole rule never mixes demo and paid tokens.
func FuzzDecide(f *testing.F) {
	f.Add(int64(3), int64(100), int64(5), false)
	f.Add(int64(0), int64(100), int64(5), false)
	f.Add(int64(3), int64(2), int64(5), true)
	f.Add(int64(math.MaxInt64), int64(math.MaxInt64), int64(math.MaxInt64), true)
	f.Add(int64(-1), int64(5), int64(1), true)
	f.Fuzz(func(t *testing.T, demo, paid, units int64, spill bool) {
		rule := DemoWhole
		if spill {
			rule = DemoSpill
		}
		got := Decide(rule, demo, paid, units)
		if !got.Accepted {
			if got.RemainingDemo != demo || got.RemainingPaid != paid ||
				got.DemoDebited != 0 || got.PaidDebited != 0 || got.Message == MsgConsumed {
				t.Fatalf("refusal changed something: %+v", got)
			}
			return
		}
		if got.RemainingDemo < 0 || got.RemainingPaid < 0 || got.DemoDebited < 0 ||
			got.PaidDebited < 0 {
			t.Fatalf("negative value: %+v", got)
		}
		if got.DemoDebited+got.PaidDebited != units {
			t.Fatalf("debited %d+%d, want %d", got.DemoDebited, got.PaidDebited, units)
		}
		if got.RemainingDemo != demo-got.DemoDebited || got.RemainingPaid != paid-got.PaidDebited {
			t.Fatalf("remaining does not match debits: %+v from %d/%d", got, demo, paid)
		}
		if rule == DemoWhole && got.DemoDebited > 0 && got.PaidDebited > 0 {
			t.Fatalf("whole rule spilled: %+v", got)
		}
	})
}

// FuzzCheckIdempotencyKey checks that accepted keys are bounded and
// printable, so a backend may store them as they are.
func FuzzCheckIdempotencyKey(f *testing.F) {
	for _, s := range []string{"", "k1", "\x00", "caf\u00e9", strings.Repeat("z", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if CheckIdempotencyKey(key) != nil {
			return
		}
		if len(key) > MaxIdempotencyKeyLen {
			t.Fatalf("accepted a %d-byte key", len(key))
		}
		for _, r := range key {
			if r < 0x20 || r > 0x7e {
				t.Fatalf("accepted key with %U", r)
			}
		}
	})
}
