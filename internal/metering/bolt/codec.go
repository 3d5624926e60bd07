package bolt

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// Accounts and journal entries are written on every debit, so they use a
// small fixed binary layout rather than JSON: a batch then dirties fewer
// pages, which is what a commit's fsync pays for. Integers are big-endian;
// times are Unix nanoseconds in UTC (zero time as math.MinInt64); strings
// are a uvarint length and the bytes.
//
//	account v1: version 1 | user_id i64 | demo i64 | paid i64 |
//	            flags u8 (bit 0: bot token given) | provisioned_at i64
//	entry v1:   version 1 | kind u8 | time i64 | user_automation_id i64 |
//	            demo_delta i64 | paid_delta i64 |
//	            usage_type str | idempotency_key str | reason str
//
// The account's id and the entry's sequence number are their keys.
const recordV1 = 1

// accountV1Len is the exact length of an account v1 record.
const accountV1Len = 1 + 8 + 8 + 8 + 1 + 8

const flagBotToken = 1 << 0

// The journal's entry kinds on disk.
var kindCodes = map[metering.EntryKind]byte{
	metering.EntryProvision: 1,
	metering.EntryDebit:     2,
	metering.EntryCredit:    3,
	metering.EntryRefund:    4,
	metering.EntrySettle:    5,
	metering.EntryReconcile: 6,
}

// encodeAccount lays out an account; its id is the key, not in the value.
func encodeAccount(a metering.Account) []byte {
	buf := make([]byte, 0, accountV1Len)
	buf = append(buf, recordV1)
	buf = binary.BigEndian.AppendUint64(buf, uint64(a.UserID))
	buf = binary.BigEndian.AppendUint64(buf, uint64(a.DemoTokens))
	buf = binary.BigEndian.AppendUint64(buf, uint64(a.PaidTokens))
	var flags byte
	if a.BotTokenGiven {
		flags |= flagBotToken
	}
	buf = append(buf, flags)
	return binary.BigEndian.AppendUint64(buf, uint64(unixNano(a.ProvisionedAt)))
}

// decodeAccount decodes the account stored under id and checks what the
// ledger promises about it: balances are never negative.
func decodeAccount(id int64, raw []byte) (metering.Account, error) {
	if len(raw) != accountV1Len || raw[0] != recordV1 {
		err := fmt.Errorf("account record of %d bytes: %w", len(raw), errCorrupt)
		return metering.Account{}, err
	}
	r := reader{buf: raw[1:]}
	a := metering.Account{
		UserAutomationID: id,
		UserID:           r.int64(),
		DemoTokens:       r.int64(),
		PaidTokens:       r.int64(),
	}
	flags := r.byte()
	a.BotTokenGiven = flags&flagBotToken != 0
	a.ProvisionedAt = fromUnixNano(r.int64())
	switch {
	case flags&^flagBotToken != 0:
		return metering.Account{}, fmt.Errorf("account flags %#x: %w", flags, errCorrupt)
	case a.DemoTokens < 0 || a.PaidTokens < 0:
		return metering.Account{}, fmt.Errorf("negative balance: %w", errCorrupt)
	}
	return a, nil
}

// encodeEntry lays out a journal entry; its Seq is the key.
func encodeEntry(e metering.Entry) ([]byte, error) {
	code, ok := kindCodes[e.Kind]
	if !ok {
		return nil, fmt.Errorf("journal entry kind %q", e.Kind)
	}
	n := 2 + 5*8 + 3*binary.MaxVarintLen64 + len(e.UsageType) + len(e.IdempotencyKey) +
		len(e.Reason)
	buf := make([]byte, 0, n)
	buf = append(buf, recordV1, code)
	buf = binary.BigEndian.AppendUint64(buf, uint64(unixNano(e.Time)))
	buf = binary.BigEndian.AppendUint64(buf, uint64(e.UserAutomationID))
	buf = binary.BigEndian.AppendUint64(buf, uint64(e.DemoDelta))
	buf = binary.BigEndian.AppendUint64(buf, uint64(e.PaidDelta))
	for _, s := range []string{e.UsageType, e.IdempotencyKey, e.Reason} {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	return buf, nil
}

// decodeEntry decodes a journal entry; its 8-byte key is its Seq.
func decodeEntry(k, v []byte) (metering.Entry, error) {
	if len(k) != 8 {
		return metering.Entry{}, fmt.Errorf("journal key of %d bytes: %w", len(k), errCorrupt)
	}
	if len(v) < 2+4*8 || v[0] != recordV1 {
		return metering.Entry{}, fmt.Errorf("journal record of %d bytes: %w", len(v), errCorrupt)
	}
	var kind metering.EntryKind
	for name, code := range kindCodes {
		if code == v[1] {
			kind = name
		}
	}
	if kind == "" {
		return metering.Entry{}, fmt.Errorf("journal kind %d: %w", v[1], errCorrupt)
	}
	r := reader{buf: v[2:]}
	e := metering.Entry{
		Seq:              binary.BigEndian.Uint64(k),
		Kind:             kind,
		Time:             fromUnixNano(r.int64()),
		UserAutomationID: r.int64(),
		DemoDelta:        r.int64(),
		PaidDelta:        r.int64(),
		UsageType:        r.string(),
		IdempotencyKey:   r.string(),
		Reason:           r.string(),
	}
	if r.bad || len(r.buf) != 0 {
		return metering.Entry{}, fmt.Errorf("journal entry %d: %w", e.Seq, errCorrupt)
	}
	return e, nil
}

// reader takes fields off the front of a record; reading past its end
// sets bad and yields zero values.
type reader struct {
	buf []byte
	bad bool
}

func (r *reader) byte() byte {
	if len(r.buf) < 1 {
		r.bad = true
		return 0
	}
	b := r.buf[0]
	r.buf = r.buf[1:]
	return b
}

func (r *reader) int64() int64 {
	if len(r.buf) < 8 {
		r.bad = true
		return 0
	}
	v := binary.BigEndian.Uint64(r.buf)
	r.buf = r.buf[8:]
	return int64(v)
}

func (r *reader) string() string {
	n, size := binary.Uvarint(r.buf)
	var minimal [binary.MaxVarintLen64]byte
	if size <= 0 || n > uint64(len(r.buf)-size) ||
		size != binary.PutUvarint(minimal[:], n) { // one encoding per length
		r.bad = true
		return ""
	}
	s := string(r.buf[size : size+int(n)])
	r.buf = r.buf[size+int(n):]
	return s
}

// unixNano is t in Unix nanoseconds, with the zero time as math.MinInt64.
// Times outside the years 1678-2262 do not fit; the ledger's clock gives
// none.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return math.MinInt64
	}
	return t.UnixNano()
}

// fromUnixNano undoes unixNano, in UTC.
func fromUnixNano(n int64) time.Time {
	if n == math.MinInt64 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
