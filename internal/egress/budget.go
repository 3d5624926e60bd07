package egress

import (
	"errors"
	"fmt"
	"log/slog"
	"math"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/usage"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// promptBytesPerToken sizes the prompt estimate: ceil(body bytes / 4).
const promptBytesPerToken = 4

// reservation returns the tokens to reserve for a call: the prompt
// estimated from the body's size, plus the completion cap (max_tokens,
// else ReserveTokens) times n. ok is false when that overflows int64.
func (h *Handler) reservation(bodyLen int, info usage.RequestInfo) (tokens int64, ok bool) {
	prompt := (int64(bodyLen) + promptBytesPerToken - 1) / promptBytesPerToken
	limit := h.opts.ReserveTokens
	if info.MaxTokens > 0 {
		limit = info.MaxTokens
	}
	completion, ok := mulChecked(limit, max(info.N, 1))
	if !ok {
		return 0, false
	}
	return addChecked(prompt, completion)
}

// capCompletion bounds the completion of a charged call, so that its
// cost stays near its reservation: the body must be a JSON object; a cap
// the endpoint reads, when given, must be at least 1 (some servers read
// 0 as no cap); when none is given, ReserveTokens is set in the
// endpoint's member. p.info.MaxTokens is then the cap the endpoint reads
// (0 for embeddings, which have none): caps in members the endpoint
// ignores do not count.
func (h *Handler) capCompletion(p *prepared, ep endpoint) *apiError {
	if len(p.body) == 0 {
		return &errBadBody
	}
	fields := ep.capFields()
	if len(fields) == 0 {
		p.info.MaxTokens = 0
		return nil
	}
	caps, err := usage.TokenCaps(p.body)
	if err != nil {
		return bodyError(err)
	}

	var limit int64
	given := false
	for _, f := range fields {
		v, ok := caps[f]
		if !ok {
			continue
		}
		if v < 1 {
			return fieldError(f, "must be at least 1")
		}
		limit, given = max(limit, v), true
	}
	if !given {
		out, err := usage.SetCap(p.body, fields[0], h.opts.ReserveTokens)
		if err != nil {
			return bodyError(err)
		}
		p.body, limit = out, h.opts.ReserveTokens
	}
	p.info.MaxTokens = limit
	return nil
}

// sizeReservation sets c.reserveTokens for a call that spends a user's
// tokens. A charged call whose reservation overflows is refused; an
// uncharged one records the largest number.
func (h *Handler) sizeReservation(c *call) *apiError {
	if !c.spends {
		return nil
	}
	tokens, ok := h.reservation(len(c.req.body), c.req.info)
	switch {
	case !ok && c.charged:
		return &errReservationTooLarge
	case !ok:
		tokens = math.MaxInt64 // only recorded, never held
	}
	c.reserveTokens = tokens
	return nil
}

// maxCompletion is what Pool.Acquire is told: the cap times n, 0 when
// the request names none.
func maxCompletion(info usage.RequestInfo) int64 {
	if info.MaxTokens <= 0 {
		return 0
	}
	return mulSat(info.MaxTokens, max(info.N, 1))
}

// unitsFor converts tokens to budget units, rounding up.
func (h *Handler) unitsFor(tokens int64) int64 {
	if tokens <= 0 {
		return 0
	}
	per := h.opts.TokensPerUnit
	return tokens/per + min(tokens%per, 1)
}

func mulSat(a, b int64) int64 {
	if a > 0 && b > 0 && a > math.MaxInt64/b {
		return math.MaxInt64
	}
	return a * b
}

// mulChecked and addChecked multiply and add non-negative numbers; ok
// is false on overflow.
func mulChecked(a, b int64) (int64, bool) {
	if a > 0 && b > 0 && a > math.MaxInt64/b {
		return 0, false
	}
	return a * b, true
}

func addChecked(a, b int64) (int64, bool) {
	if a > math.MaxInt64-b {
		return 0, false
	}
	return a + b, true
}

// reserve holds the call's reservation when a Budget applies.
func (h *Handler) reserve(c *call) (*apiError, error) {
	b := h.opts.Budget
	if b == nil || c.reserveTokens == 0 {
		return nil, nil
	}
	units := h.unitsFor(c.reserveTokens)
	ctx, cancel := h.finalizeContext()
	defer cancel()
	ok, err := b.Reserve(ctx, c.user, c.id, units)
	switch {
	case errors.Is(err, metering.ErrUnknownAccount):
		return &errUnknownUser, nil
	case errors.Is(err, metering.ErrInvalidUnits):
		// Past the ledger's bound for one call: nothing is held.
		return &errReservationTooLarge, nil
	case err != nil:
		// The hold may exist: give it back.
		if rerr := b.Release(ctx, c.user, c.id); rerr != nil {
			// The user may keep a hold nobody will settle: an
			// operator must look.
			h.opts.Logger.Error("egress release after a failed reserve failed; "+
				"the user may stay charged the reservation",
				slog.String("call_id", c.id), slog.Int64("user_automation_id", c.user),
				slog.Int64("units", units), slog.String("err", h.errText(rerr)))
		}
		return &errBudgetDown, fmt.Errorf("reserve %d units: %w", units, err)
	case !ok:
		return &errBudget, nil
	}
	c.reservedUnits = units
	return nil, nil
}
