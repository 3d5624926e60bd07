package postgres

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

func TestDecodeRecords(t *testing.T) {
	res := metering.ConsumeResult{Accepted: true, RemainingDemo: 3, DemoDebited: 2,
		Message: metering.MsgConsumed}
	raw, err := encodeResult(res)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	if got, err := decodeConsume(raw); err != nil || got != res {
		t.Errorf("consume round trip: got %+v, %v, want %+v", got, err, res)
	}
	acct := metering.Account{UserAutomationID: 1, PaidTokens: 9,
		ProvisionedAt: time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)}
	raw, err = encodeResult(acct)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	if got, err := decodeAccount(raw); err != nil || got != acct {
		t.Errorf("account round trip: got %+v, %v, want %+v", got, err, acct)
	}

	bad := []string{
		``, `null x`, `{"accepted":true}`, // accepted without a debit
		`{"accepted":false,"demo_debited":1}`,
		`{"remaining_demo_tokens":-1}`,
		`{"accepted":true,"demo_debited":1,"extra":1}`,
		`{"accepted":true,"demo_debited":1} {}`,
	}
	for _, s := range bad {
		if _, err := decodeConsume([]byte(s)); !errors.Is(err, errCorrupt) {
			t.Errorf("consume %q: got %v, want errCorrupt", s, err)
		}
	}
	for _, s := range []string{`{"paid_tokens":-4}`, `{"x":1}`, `[]`} {
		if _, err := decodeAccount([]byte(s)); !errors.Is(err, errCorrupt) {
			t.Errorf("account %q: got %v, want errCorrupt", s, err)
		}
	}
}

// FuzzDecodeConsume: any stored bytes decode to a sound answer or to
// errCorrupt, and a sound answer survives a round trip.
func FuzzDecodeConsume(f *testing.F) {
	for _, s := range []string{
		`{"accepted":true,"remaining_demo_tokens":1,"demo_debited":2,"message":"m"}`,
		`{"accepted":false,"remaining_paid_tokens":5,"message":"insufficient tokens"}`,
		`{}`, `null`, `{"accepted":true}`, `{"demo_debited":-1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		res, err := decodeConsume(raw)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error %v does not wrap errCorrupt", err)
			}
			return
		}
		if res.RemainingDemo < 0 || res.RemainingPaid < 0 || res.DemoDebited < 0 ||
			res.PaidDebited < 0 || res.Accepted != (res.DemoDebited+res.PaidDebited > 0) {
			t.Fatalf("accepted an unsound answer %+v", res)
		}
		again, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := decodeConsume(again); err != nil || back != res {
			t.Fatalf("round trip: got %+v, %v, want %+v", back, err, res)
		}
	})
}

// FuzzDecodeAccount: as FuzzDecodeConsume, for credit answers.
func FuzzDecodeAccount(f *testing.F) {
	for _, s := range []string{
		`{"user_automation_id":1,"paid_tokens":5,"provisioned_at":"2025-01-02T03:04:05Z"}`,
		`{"provisioned_at":"bad"}`, `{"demo_tokens":-1}`, `{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		a, err := decodeAccount(raw)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error %v does not wrap errCorrupt", err)
			}
			return
		}
		if a.DemoTokens < 0 || a.PaidTokens < 0 {
			t.Fatalf("accepted negative balances %+v", a)
		}
	})
}
