package egress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/outbox"
)

// errPanic is the failure of a call whose handler panicked.
var errPanic = errors.New("egress handler panicked")

// maxModelLen bounds Record.Model.
const maxModelLen = 256

// end closes what the call still holds, reports its lease to the pool and
// hands the rest of the finalisation to a goroutine that Wait and
// Shutdown wait for. It runs exactly once per ServeHTTP, as it returns or
// panics; the request's goroutine does not touch c afterwards.
func (c *call) end() {
	h := c.h
	c.closeBody()
	if c.started && (c.panicked || c.exit == "") {
		c.exit, c.failure = outbox.ExitUpstreamError, errPanic
	}
	if c.leaseOpen {
		o := c.outcome
		if c.result.Usage.Found {
			o.Tokens = c.result.Usage.Total
		}
		h.opts.Pool.Report(c.lease, o)
		c.leaseOpen = false
	}
	if !c.started && c.reservedUnits == 0 {
		h.track.done() // nothing to finalise
		return
	}
	go h.finalize(c)
}

// finalize settles or releases the user's budget, then enqueues the
// call's Record (for a call that reached the upstream), counts and logs
// it. A Budget or Sink failure is logged and counted, never retried here.
func (h *Handler) finalize(c *call) {
	defer h.track.done()
	defer func() {
		if p := recover(); p != nil {
			h.opts.Logger.Error("egress finalisation panic",
				slog.String("call_id", c.id), slog.String("panic", fmt.Sprintf("%T", p)))
		}
	}()

	units := h.charge(c)
	if !c.started {
		return
	}
	rec := c.record(units)
	ctx, cancel := h.finalizeContext()
	defer cancel()
	enqErr := h.opts.Sink.Enqueue(ctx, rec)
	if enqErr != nil {
		h.opts.Metrics.EgressRecordLost()
	}
	if rec.UsageKnown {
		h.opts.Metrics.Tokens(rec.Model, int(rec.PromptTokens), int(rec.CompletionTokens))
	}
	h.opts.Metrics.EgressCall(string(rec.Exit), c.appStatus)
	h.logCall(c, rec, enqErr)
}

// charge settles the call's budget hold to its cost, or releases it, and
// returns the units the Record carries: what was charged, or without a
// Budget what the call cost the named user. 0 when no user is named.
func (h *Handler) charge(c *call) int64 {
	b := h.opts.Budget
	if c.user == 0 || (b != nil && c.reservedUnits == 0) {
		return 0 // nobody to charge, or nothing held: not charged
	}
	var units int64
	if c.started {
		units = h.cost(c)
	}
	if b == nil {
		return units
	}

	ctx, cancel := h.finalizeContext()
	defer cancel()
	if units == 0 {
		if err := b.Release(ctx, c.user, c.id); err != nil {
			h.opts.Logger.Error("egress budget release failed",
				slog.String("call_id", c.id),
				slog.Int64("user_automation_id", c.user),
				slog.Int64("units", c.reservedUnits),
				slog.String("err", h.errText(err)))
		}
		return 0
	}
	charged, err := b.Settle(ctx, c.user, c.id, units)
	if err != nil {
		h.opts.Logger.Error("egress budget settle failed",
			slog.String("call_id", c.id),
			slog.Int64("user_automation_id", c.user),
			slog.Int64("units", units),
			slog.String("err", h.errText(err)))
		return units
	}
	if charged < units {
		h.opts.Metrics.EgressShortfall(units - charged)
		h.opts.Logger.Warn("egress budget shortfall",
			slog.String("call_id", c.id),
			slog.Int64("user_automation_id", c.user),
			slog.Int64("cost", units),
			slog.Int64("charged", charged),
			slog.Int64("reserved", c.reservedUnits))
	}
	return charged
}

// cost is what a call that reached the upstream costs, in units: nothing
// without a 2xx answer; its usage when the answer reported one, read
// without a failure and not zero; else, when the answer was cut short
// or its endpoint reports usage, the reservation (or the usage read, if
// larger); else (listing models, files) what it reported, usually
// nothing. See the package comment.
func (h *Handler) cost(c *call) int64 {
	r := c.result
	used := h.unitsFor(r.Usage.Total)
	switch {
	case c.status < 200 || c.status >= 300:
		return 0
	case r.Usage.Found && r.Usage.Total > 0 && r.Failures == 0:
		return used
	case !r.EOF || c.kind.metered():
		return max(used, h.unitsFor(c.reserveTokens))
	}
	return used
}

// record is the call's Record.
func (c *call) record(units int64) outbox.Record {
	u := c.result.Usage
	model := u.Model
	if model == "" {
		model = c.req.info.Model
	}
	return outbox.Record{
		ID:               c.id,
		At:               c.h.opts.Now(),
		KeyID:            c.lease.KeyID,
		Leased:           c.lease.Platform,
		Model:            truncate(model, maxModelLen),
		PromptTokens:     u.Prompt,
		CompletionTokens: u.Completion,
		TotalTokens:      u.Total,
		UsageKnown:       u.Found,
		Success:          c.status >= 200 && c.status < 300 && c.result.EOF,
		UserAutomationID: c.user,
		Units:            units,
		Endpoint:         c.endpoint,
		Exit:             c.exit,
	}
}

// logCall writes the call's line: debug for a complete success, info for
// other answers and apps that left, warn for failures, error when the
// Record was lost.
func (h *Handler) logCall(c *call, rec outbox.Record, enqErr error) {
	level := slog.LevelInfo
	switch {
	case enqErr != nil:
		level = slog.LevelError
	case rec.Exit == outbox.ExitComplete && rec.Success:
		level = slog.LevelDebug
	case rec.Exit == outbox.ExitUpstreamError, rec.Exit == outbox.ExitTimeout,
		rec.Exit == outbox.ExitShutdown:
		level = slog.LevelWarn
	}
	msg := "egress call"
	if enqErr != nil {
		msg = "egress call: usage record lost"
	}
	attrs := []slog.Attr{
		slog.String("call_id", rec.ID),
		slog.String("method", c.method),
		slog.String("endpoint", rec.Endpoint),
		slog.Int("status", c.status),
		slog.Int("app_status", c.appStatus),
		slog.String("exit", string(rec.Exit)),
		slog.Int("attempts", c.attempts),
		slog.Int64("key_id", rec.KeyID),
		slog.String("key_name", c.lease.Name),
		slog.String("model", rec.Model),
		slog.Int64("prompt_tokens", rec.PromptTokens),
		slog.Int64("completion_tokens", rec.CompletionTokens),
		slog.Int64("total_tokens", rec.TotalTokens),
		slog.Bool("usage_known", rec.UsageKnown),
		slog.Bool("success", rec.Success),
		slog.Int64("user_automation_id", rec.UserAutomationID),
		slog.Int64("units", rec.Units),
		slog.Duration("duration", elapsed(c.start)),
	}
	if c.failure != nil {
		attrs = append(attrs, slog.String("err", h.errText(c.failure)))
	}
	if c.result.Err != nil {
		attrs = append(attrs, slog.String("usage_err", h.errText(c.result.Err)))
	}
	if enqErr != nil {
		attrs = append(attrs, slog.String("enqueue_err", h.errText(enqErr)))
	}
	h.opts.Logger.LogAttrs(context.Background(), level, msg, attrs...)
}
