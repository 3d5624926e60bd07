package postgres

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// errCorrupt marks a stored answer that cannot be decoded.
var errCorrupt = errors.New("corrupt ledger record")

// encodeResult encodes the first answer a key stores.
func encodeResult(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode idempotency record: %w", err)
	}
	return raw, nil
}

// decodeConsume decodes a stored consume answer. It refuses what no
// sound store writes: unknown fields, trailing data, negative numbers or
// debits that disagree with the acceptance.
func decodeConsume(raw []byte) (metering.ConsumeResult, error) {
	var res metering.ConsumeResult
	if err := strictUnmarshal(raw, &res); err != nil {
		return metering.ConsumeResult{}, err
	}
	negative := res.RemainingDemo < 0 || res.RemainingPaid < 0 ||
		res.DemoDebited < 0 || res.PaidDebited < 0
	debited := res.DemoDebited > 0 || res.PaidDebited > 0
	if negative || res.Accepted != debited {
		return metering.ConsumeResult{}, fmt.Errorf("consume answer: %w", errCorrupt)
	}
	return res, nil
}

// decodeAccount decodes a stored credit answer.
func decodeAccount(raw []byte) (metering.Account, error) {
	var a metering.Account
	if err := strictUnmarshal(raw, &a); err != nil {
		return metering.Account{}, err
	}
	if a.DemoTokens < 0 || a.PaidTokens < 0 {
		return metering.Account{}, fmt.Errorf("credit answer: %w", errCorrupt)
	}
	a.ProvisionedAt = a.ProvisionedAt.UTC()
	return a, nil
}

// strictUnmarshal decodes one JSON value with no unknown fields and
// nothing after it.
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

// settleRecord is how a debit was settled, stored with its idempotency
// record: the units asked for, the debit's split after the settle (what
// a refund then gives back), the first answer's account and the call
// that made it, so that a retry of that call answers as the original.
type settleRecord struct {
	Units   int64            `json:"units"`
	Demo    int64            `json:"demo"`
	Paid    int64            `json:"paid"`
	Account metering.Account `json:"account"`
	Call    []byte           `json:"call"`
}

// result is the answer a settle of this record gives.
func (r settleRecord) result() metering.SettleResult {
	return metering.SettleResult{Account: r.Account, Charged: r.Demo + r.Paid}
}

// decodeSettle decodes a stored settle, refusing negative numbers.
func decodeSettle(raw []byte) (settleRecord, error) {
	var r settleRecord
	if err := strictUnmarshal(raw, &r); err != nil {
		return settleRecord{}, err
	}
	if r.Units < 0 || r.Demo < 0 || r.Paid < 0 || r.Demo+r.Paid < 0 ||
		r.Account.DemoTokens < 0 || r.Account.PaidTokens < 0 {
		return settleRecord{}, fmt.Errorf("settle record: %w", errCorrupt)
	}
	r.Account.ProvisionedAt = r.Account.ProvisionedAt.UTC()
	return r, nil
}
