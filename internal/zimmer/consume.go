package zimmer

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/logging"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// ReplayedHeader is set to "true" on a consume answer that repeats an
// earlier one for the same idempotency key.
const ReplayedHeader = "Idempotent-Replayed"

// consume serves POST usage/consume:
//
//  1. take the Idempotency-Key header (present but empty: 400);
//  2. read and decode the body; without a header, meta.request_id is the
//     key;
//  3. debit the ledger, which commits the key with the debit, so a failed
//     write claims nothing and a replay gets the first answer;
//  4. answer 200 with the union body, refusals included.
func (a *API) consume(w http.ResponseWriter, r *http.Request) (int, any, error) {
	key, err := headerKey(r.Header)
	if err != nil {
		return badRequest(err)
	}
	body, status, err := a.readBody(w, r)
	if err != nil {
		return bodyFailure(status, err)
	}
	call, err := decodeConsume(body, a.opts.MaxUnits)
	if err != nil {
		return badRequest(err)
	}
	logging.FromContext(r.Context()).SetUser(call.UserAutomationID)
	if key == "" {
		key = call.RequestID
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.opts.ConsumeTimeout)
	defer cancel()

	req := metering.ConsumeRequest{
		UserAutomationID: call.UserAutomationID,
		Units:            call.Units,
		UsageType:        call.UsageType,
		IdempotencyKey:   consumeKey(call.UserAutomationID, key),
	}
	res, err := a.opts.Ledger.Consume(ctx, req)
	if err != nil {
		return ledgerFailure(fmt.Errorf("ledger consume: %w", err))
	}
	if a.opts.OnConsume != nil {
		a.opts.OnConsume(r, req, res)
	}

	if res.Replayed {
		w.Header().Set(ReplayedHeader, "true")
	}
	return http.StatusOK, consumeAnswer(call.UserAutomationID, res), nil
}

// consumeKey scopes a caller's idempotency key to /usage/consume and one
// account, so two users who both send request_id "1" do not collide, and
// no key can match a metered route's keys. "" stays "" (no idempotency).
// A scoped key longer than the ledger allows is replaced by its digest.
func consumeKey(userAutomationID int64, key string) string {
	if key == "" {
		return ""
	}
	scoped := fmt.Sprintf("consume %d %s", userAutomationID, key)
	if len(scoped) > metering.MaxIdempotencyKeyLen {
		sum := sha256.Sum256([]byte(key))
		scoped = fmt.Sprintf("consume %d sha256 %x", userAutomationID, sum)
	}
	return scoped
}

// headerKey returns the Idempotency-Key header, "" when absent. A header
// that is present must be sent once and not be empty.
func headerKey(h http.Header) (string, error) {
	const field = "Idempotency-Key"
	values, ok := h[field]
	switch {
	case !ok:
		return "", nil
	case len(values) != 1:
		return "", &RequestError{field, "must be sent once"}
	}
	return checkKey(field, strings.TrimSpace(values[0]))
}

// consumeAnswer builds the answer in both dialects from a ledger result.
func consumeAnswer(userAutomationID int64, res metering.ConsumeResult) ConsumeAnswer {
	ans := ConsumeAnswer{
		Accepted:            res.Accepted,
		RemainingDemoTokens: res.RemainingDemo,
		RemainingPaidTokens: res.RemainingPaid,
		Message:             res.Message,
		Success:             res.Accepted,
		RemainingTokens:     res.RemainingDemo + res.RemainingPaid,
		UserAutomationID:    userAutomationID,
	}
	if res.Accepted {
		ans.TokensConsumed = res.DemoDebited + res.PaidDebited
	}
	if ans.Message == "" && res.Accepted {
		ans.Message = "Tokens consumed successfully"
	}
	if ans.Message == "" {
		ans.Message = "Insufficient tokens"
	}
	return ans
}
