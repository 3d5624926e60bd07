package bolt

import (
	"encoding/binary"
	"encoding/json"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// FuzzDecodeRecords feeds arbitrary bytes to the stored-record decoders:
// they must not panic, and whatever they accept must keep the ledger's
// promises and survive a round trip.
func FuzzDecodeRecords(f *testing.F) {
	acct, _ := json.Marshal(metering.Account{
		UserAutomationID: 1, DemoTokens: 5, ProvisionedAt: time.Unix(0, 0).UTC(),
	})
	idem, _ := json.Marshal(idemRecord{
		Kind: metering.EntryDebit, Fingerprint: []byte{1, 2},
		Consume: &metering.ConsumeResult{Accepted: true},
	})
	entry, _ := json.Marshal(metering.Entry{Seq: 3, Kind: metering.EntryCredit, PaidDelta: 4})
	for _, seed := range [][]byte{
		acct, idem, entry, nil, []byte("{}"), []byte(`{"demo_tokens":-1}`),
		[]byte(`{"kind":"credit"}`), []byte(`{} {}`), []byte(`{"x":1}`),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if a, err := decodeAccount(raw); err == nil {
			if a.DemoTokens < 0 || a.PaidTokens < 0 {
				t.Fatalf("accepted a negative balance: %+v", a)
			}
			again, _ := json.Marshal(a)
			b, err := decodeAccount(again)
			if err != nil || b.UserAutomationID != a.UserAutomationID ||
				b.DemoTokens != a.DemoTokens || b.PaidTokens != a.PaidTokens {
				t.Fatalf("round trip: got %+v, %v, want %+v", b, err, a)
			}
		}
		if rec, err := decodeIdem(raw); err == nil {
			if rec.Kind == metering.EntryDebit && rec.Consume == nil ||
				rec.Kind == metering.EntryCredit && rec.Account == nil ||
				rec.Kind != metering.EntryDebit && rec.Kind != metering.EntryCredit {
				t.Fatalf("accepted a record without its answer: %+v", rec)
			}
		}
		key := binary.BigEndian.AppendUint64(nil, 42)
		if e, err := decodeEntry(key, raw); err == nil && e.Seq != 42 {
			t.Fatalf("entry seq: got %d, want the key's 42", e.Seq)
		}
		if _, err := decodeEntry(raw, entry); err == nil && len(raw) != 8 {
			t.Fatalf("accepted a %d-byte journal key", len(raw))
		}
	})
}
