package bolt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// The file's layout. Keys of accounts and journal are 8-byte big-endian
// integers and their values binary records (codec.go); idempotency
// records, written only for keyed requests, are JSON.
var (
	bucketMeta     = []byte("meta")        // "schema" -> schemaVersion
	bucketAccounts = []byte("accounts")    // user_automation_id -> account v1
	bucketIdem     = []byte("idempotency") // key -> idemRecord as JSON
	bucketJournal  = []byte("journal")     // seq -> entry v1

	keySchema = []byte("schema")
)

// Idempotency records are kept until PruneIdempotency deletes them
// (prune.go); the sidecar does so after ledger.idempotency_retention.
// Journal entries are the audit trail and are kept forever: an operator
// archives them with the ledger export command.
// TODO(zimmer-sidecar): the journal still grows the file with every
// balance change; an operator-run trim of an archived journal prefix
// would bound it.

// schemaVersion names the layout above. A file with another version is
// refused rather than misread, except the older versions in upgrades.
//
// Version 2 added refunds: the refund journal kind and the usage_type and
// refunded_at fields of idempotency records. A version 1 file is a valid
// version 2 file, so opening one only rewrites its version; a binary
// that knows only version 1 then refuses the file instead of failing on
// the first refund it reads.
//
// Version 3 added settles and reconciles: their journal kinds and the
// settle field of idempotency records. Versions 1 and 2 are valid
// version 3 files and are upgraded the same way.
const schemaVersion = "3"

// upgrades are the older versions a file may have and be opened with.
var upgrades = map[string]bool{"1": true, "2": true}

// errCorrupt marks a stored value that cannot be decoded.
var errCorrupt = errors.New("corrupt ledger record")

// idemRecord is what an idempotency key claimed: the request's
// fingerprint and the first answer it got. A debit's record also keeps
// its usage type, so that its refund can be journaled with it and
// checked against the fingerprint (records of version 1 lack it), when
// the debit was refunded, and how it was settled.
type idemRecord struct {
	Kind        metering.EntryKind      `json:"kind"`
	Fingerprint []byte                  `json:"fingerprint"`
	At          time.Time               `json:"at"`
	UsageType   string                  `json:"usage_type,omitempty"`
	Consume     *metering.ConsumeResult `json:"consume,omitempty"`
	Account     *metering.Account       `json:"account,omitempty"`
	RefundedAt  *time.Time              `json:"refunded_at,omitempty"`
	Settle      *settleRecord           `json:"settle,omitempty"`
}

// settleRecord is how a debit was settled: the units asked for, the
// debit's split after the settle (what a refund then gives back) and the
// first answer's account.
type settleRecord struct {
	Units   int64            `json:"units"`
	Demo    int64            `json:"demo"`
	Paid    int64            `json:"paid"`
	Account metering.Account `json:"account"`
	At      time.Time        `json:"at"`
}

// result is the answer a settle of this record gives.
func (r *settleRecord) result() metering.SettleResult {
	return metering.SettleResult{Account: r.Account, Charged: r.Demo + r.Paid}
}

// initSchema creates the buckets of a new file and checks the schema
// version of an existing one.
func initSchema(tx *bbolt.Tx) error {
	for _, name := range [][]byte{bucketMeta, bucketAccounts, bucketIdem, bucketJournal} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	meta := tx.Bucket(bucketMeta)
	got := meta.Get(keySchema)
	switch {
	case got == nil, upgrades[string(got)]:
		return meta.Put(keySchema, []byte(schemaVersion))
	case string(got) != schemaVersion:
		return fmt.Errorf("schema version %q, want %q", got, schemaVersion)
	}
	return nil
}

// idKey encodes an account id as a bucket key.
func idKey(id int64) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(id))
}

// getAccount reads one account; ok is false when it does not exist.
func getAccount(tx *bbolt.Tx, id int64) (metering.Account, bool, error) {
	raw := tx.Bucket(bucketAccounts).Get(idKey(id))
	if raw == nil {
		return metering.Account{}, false, nil
	}
	a, err := decodeAccount(id, raw)
	if err != nil {
		return metering.Account{}, false, fmt.Errorf("account %d: %w", id, err)
	}
	return a, true, nil
}

// putAccount writes one account.
func putAccount(tx *bbolt.Tx, a metering.Account) error {
	return tx.Bucket(bucketAccounts).Put(idKey(a.UserAutomationID), encodeAccount(a))
}

// getIdem reads the record an idempotency key claimed; ok is false when
// the key is free.
func getIdem(tx *bbolt.Tx, key string) (idemRecord, bool, error) {
	raw := tx.Bucket(bucketIdem).Get([]byte(key))
	if raw == nil {
		return idemRecord{}, false, nil
	}
	rec, err := decodeIdem(raw)
	if err != nil {
		return idemRecord{}, false, fmt.Errorf("idempotency record: %w", err)
	}
	return rec, true, nil
}

// putIdem claims key with rec.
func putIdem(tx *bbolt.Tx, key string, rec idemRecord) error {
	raw, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode idempotency record: %w", err)
	}
	return tx.Bucket(bucketIdem).Put([]byte(key), raw)
}

// decodeIdem decodes a stored idempotency record; it must carry the
// answer that fits its kind.
func decodeIdem(raw []byte) (idemRecord, error) {
	var rec idemRecord
	if err := strictUnmarshal(raw, &rec); err != nil {
		return idemRecord{}, err
	}
	switch {
	case rec.Kind == metering.EntryDebit && rec.Consume != nil:
	case rec.Kind == metering.EntryCredit && rec.Account != nil:
	default:
		return idemRecord{}, fmt.Errorf("kind %q without its answer: %w", rec.Kind, errCorrupt)
	}
	if rec.RefundedAt != nil && !rec.acceptedDebit() {
		return idemRecord{}, fmt.Errorf("refund of no accepted debit: %w", errCorrupt)
	}
	if st := rec.Settle; st != nil {
		switch {
		case !rec.acceptedDebit():
			return idemRecord{}, fmt.Errorf("settle of no accepted debit: %w", errCorrupt)
		case st.Units < 0 || st.Demo < 0 || st.Paid < 0 || st.Demo+st.Paid < 0 ||
			st.Account.DemoTokens < 0 || st.Account.PaidTokens < 0:
			return idemRecord{}, fmt.Errorf("settle record: negative number: %w", errCorrupt)
		}
	}
	return rec, nil
}

// held is what the accepted debit in rec holds now: its demo and paid
// tokens as debited, or as settled once it was.
func (rec idemRecord) held() (demo, paid int64) {
	if rec.Settle != nil {
		return rec.Settle.Demo, rec.Settle.Paid
	}
	return rec.Consume.DemoDebited, rec.Consume.PaidDebited
}

// acceptedDebit reports whether rec holds an accepted debit.
func (rec idemRecord) acceptedDebit() bool {
	return rec.Kind == metering.EntryDebit && rec.Consume != nil && rec.Consume.Accepted
}

// debitOf reports whether rec holds an accepted debit of account id: the
// fingerprint of the debit rebuilt for id must be the one it claimed.
func (rec idemRecord) debitOf(id int64) bool {
	if !rec.acceptedDebit() {
		return false
	}
	req := metering.ConsumeRequest{
		UserAutomationID: id,
		Units:            rec.Consume.DemoDebited + rec.Consume.PaidDebited,
		UsageType:        rec.UsageType,
	}
	return rec.matches(metering.EntryDebit, req.Fingerprint())
}

// matches reports whether rec was claimed by a request of this kind and
// fingerprint.
func (rec idemRecord) matches(kind metering.EntryKind, fp metering.Fingerprint) bool {
	return rec.Kind == kind && bytes.Equal(rec.Fingerprint, fp[:])
}

// appendEntry gives e the journal's next sequence number and stores it.
func appendEntry(tx *bbolt.Tx, e metering.Entry) error {
	b := tx.Bucket(bucketJournal)
	b.FillPercent = 1 // keys only ever grow: pack pages full
	seq, err := b.NextSequence()
	if err != nil {
		return fmt.Errorf("journal sequence: %w", err)
	}
	raw, err := encodeEntry(e)
	if err != nil {
		return err
	}
	return b.Put(binary.BigEndian.AppendUint64(nil, seq), raw)
}

// readJournal returns up to n entries with Seq > after, in order.
func readJournal(tx *bbolt.Tx, after uint64, n int) ([]metering.Entry, error) {
	if after == ^uint64(0) {
		return nil, nil // nothing can follow the last sequence number
	}
	var out []metering.Entry
	c := tx.Bucket(bucketJournal).Cursor()
	start := binary.BigEndian.AppendUint64(nil, after+1)
	for k, v := c.Seek(start); k != nil && len(out) < n; k, v = c.Next() {
		e, err := decodeEntry(k, v)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// strictUnmarshal decodes one JSON value with no unknown fields and
// nothing after it, so a damaged or foreign record is refused.
func strictUnmarshal(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", errCorrupt, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("trailing data: %w", errCorrupt)
	}
	return nil
}
