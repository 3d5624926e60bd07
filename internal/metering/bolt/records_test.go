package bolt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

func TestRecordRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 6, 7, 8, 9, 10, 11, time.UTC)
	accounts := []metering.Account{
		{UserAutomationID: 42, UserID: 7, DemoTokens: 5, PaidTokens: 9,
			BotTokenGiven: true, ProvisionedAt: at},
		{UserAutomationID: -1},
	}
	for _, a := range accounts {
		got, err := decodeAccount(a.UserAutomationID, encodeAccount(a))
		if err != nil || got != a {
			t.Errorf("account round trip: got %+v, %v, want %+v", got, err, a)
		}
	}
	entries := []metering.Entry{
		{Seq: 3, Time: at, Kind: metering.EntryDebit, UserAutomationID: 42,
			DemoDelta: -2, PaidDelta: -1, UsageType: "chat", IdempotencyKey: "k"},
		{Seq: 4, Kind: metering.EntryCredit, PaidDelta: 5, Reason: "buy"},
		{Seq: 5, Kind: metering.EntryProvision, DemoDelta: 0},
		{Seq: 6, Time: at, Kind: metering.EntryRefund, UserAutomationID: 42,
			DemoDelta: 2, PaidDelta: 1, UsageType: "chat", IdempotencyKey: "k",
			Reason: "app failed"},
		{Seq: 7, Time: at, Kind: metering.EntrySettle, UserAutomationID: 42,
			DemoDelta: 1, PaidDelta: -3, UsageType: "chat", IdempotencyKey: "k",
			Reason: "actual"},
		{Seq: 8, Time: at, Kind: metering.EntryReconcile, UserAutomationID: 42,
			DemoDelta: -9, PaidDelta: 4, Reason: "platform"},
	}
	for _, e := range entries {
		raw, err := encodeEntry(e)
		if err != nil {
			t.Fatalf("encode %+v: %v", e, err)
		}
		got, err := decodeEntry(binary.BigEndian.AppendUint64(nil, e.Seq), raw)
		if err != nil || got != e {
			t.Errorf("entry round trip: got %+v, %v, want %+v", got, err, e)
		}
	}
	if _, err := encodeEntry(metering.Entry{Kind: "gift"}); err == nil {
		t.Error("encode of an unknown kind: got nil error")
	}
}

// FuzzDecodeRecords feeds arbitrary bytes to the stored-record decoders:
// they must not panic, and whatever they accept must keep the ledger's
// promises and encode back to the same bytes.
func FuzzDecodeRecords(f *testing.F) {
	acct := encodeAccount(metering.Account{DemoTokens: 5, ProvisionedAt: time.Unix(9, 0)})
	entry, _ := encodeEntry(metering.Entry{
		Kind: metering.EntryDebit, DemoDelta: -4, UsageType: "chat", IdempotencyKey: "k",
	})
	idem, _ := json.Marshal(idemRecord{
		Kind: metering.EntryDebit, Fingerprint: []byte{1, 2},
		Consume: &metering.ConsumeResult{Accepted: true},
	})
	refunded, _ := json.Marshal(idemRecord{
		Kind: metering.EntryDebit, Fingerprint: []byte{1, 2}, UsageType: "chat",
		Consume:    &metering.ConsumeResult{Accepted: true, DemoDebited: 4},
		RefundedAt: &time.Time{},
	})
	settled, _ := json.Marshal(idemRecord{
		Kind: metering.EntryDebit, Fingerprint: []byte{1, 2}, UsageType: "chat",
		Consume: &metering.ConsumeResult{Accepted: true, DemoDebited: 4},
		Settle:  &settleRecord{Units: 6, Demo: 4, Paid: 2},
	})
	for _, seed := range [][]byte{
		acct, entry, idem, refunded, settled, nil,
		[]byte(`{"kind":"credit","account":{},"settle":{"units":1}}`),
		[]byte(`{"kind":"debit","consume":{"accepted":true,"demo_debited":1},` +
			`"settle":{"units":1,"demo":-1,"paid":2}}`),
		[]byte(`{"kind":"debit","consume":{"accepted":false},` +
			`"refunded_at":"2025-01-01T00:00:00Z"}`), []byte("{}"), []byte(`{"kind":"credit"}`),
		[]byte(`{} {}`), []byte(`{"x":1}`), entry[:len(entry)-1],
		// a zero-length reason written as a two-byte uvarint
		append(append([]byte(nil), entry[:len(entry)-1]...), 0x80, 0x00),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if a, err := decodeAccount(1, raw); err == nil {
			if a.DemoTokens < 0 || a.PaidTokens < 0 {
				t.Fatalf("accepted a negative balance: %+v", a)
			}
			if again := encodeAccount(a); !bytes.Equal(again, raw) {
				t.Fatalf("account re-encodes as %x, was %x", again, raw)
			}
		}
		key := binary.BigEndian.AppendUint64(nil, 42)
		if e, err := decodeEntry(key, raw); err == nil {
			if e.Seq != 42 {
				t.Fatalf("entry seq: got %d, want the key's 42", e.Seq)
			}
			if again, err := encodeEntry(e); err != nil || !bytes.Equal(again, raw) {
				t.Fatalf("entry re-encodes as %x, %v, was %x", again, err, raw)
			}
		}
		if _, err := decodeEntry(raw, entry); err == nil && len(raw) != 8 {
			t.Fatalf("accepted a %d-byte journal key", len(raw))
		}
		if rec, err := decodeIdem(raw); err == nil {
			if rec.Kind == metering.EntryDebit && rec.Consume == nil ||
				rec.Kind == metering.EntryCredit && rec.Account == nil ||
				rec.Kind != metering.EntryDebit && rec.Kind != metering.EntryCredit {
				t.Fatalf("accepted a record without its answer: %+v", rec)
			}
			if rec.RefundedAt != nil && !rec.acceptedDebit() {
				t.Fatalf("accepted a refund of no accepted debit: %+v", rec)
			}
			if st := rec.Settle; st != nil {
				demo, paid := rec.held()
				if !rec.acceptedDebit() || demo < 0 || paid < 0 || demo+paid < 0 {
					t.Fatalf("accepted a settle of no debit or a negative hold: %+v", rec)
				}
			}
		}
	})
}
