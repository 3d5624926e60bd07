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
