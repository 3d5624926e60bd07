package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"sync/atomic"
	"time"
)

// maxAnswer bounds a platform answer read by the deliverer.
const maxAnswer = 64 << 10

// Headers sent to the platform.
const (
	headerServiceToken = "X-Zimmer-Service-Token"
	headerIdempotency  = "Idempotency-Key"
)

// Errors of a platform call.
var (
	// errNoToken: the token function gave nothing; nothing was sent.
	errNoToken = errors.New("no service token")
	// errUnhealthy: the platform answered a status that says it is
	// unwell or overloaded (5xx, 408, 429); the breaker counts it.
	errUnhealthy = errors.New("platform unavailable")
)

// ErrTokenRefused: the platform answered 401 or 403, which is about the
// service token (wrong, rotated or revoked), not the item. The item is
// retried, and the breaker counts the answer. Callers may match an
// Event's Err against it to alert an operator.
var ErrTokenRefused = errors.New("platform refused the service token")

// reportBody is the guide's openai-usage report.
type reportBody struct {
	KeyID            int64  `json:"key_id"`
	TokensUsed       int64  `json:"tokens_used"`
	Model            string `json:"model,omitempty"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
	Success          bool   `json:"success"`
}

// consumeBody is the platform's consume request.
type consumeBody struct {
	UserAutomationID int64       `json:"user_automation_id"`
	Units            int64       `json:"units"`
	UsageType        string      `json:"usage_type"`
	Meta             consumeMeta `json:"meta"`
}

// consumeMeta tells the platform which call a consume is for.
type consumeMeta struct {
	CallID           string `json:"call_id"`
	Model            string `json:"model,omitempty"`
	PromptTokens     int64  `json:"prompt_tokens"`
	CompletionTokens int64  `json:"completion_tokens"`
}

// consumeWire is the platform's consume answer as it travels.
type consumeWire struct {
	Accepted            *bool  `json:"accepted"`
	RemainingDemoTokens *int64 `json:"remaining_demo_tokens"`
	RemainingPaidTokens *int64 `json:"remaining_paid_tokens"`
}

// ConsumeAnswer is the platform's 200 answer to a forwarded consume.
type ConsumeAnswer struct {
	// CallID is the record's id.
	CallID           string
	UserAutomationID int64
	// Units is what was asked.
	Units int64
	// Accepted is false when the platform refused to charge (the
	// balances then did not change).
	Accepted            bool
	RemainingDemoTokens int64
	RemainingPaidTokens int64
}

// answer is what a platform call got.
type answer struct {
	status     int
	retryAfter time.Duration
	body       []byte
	// written: some of the request may have reached the platform.
	written bool
}

// reportRequest builds the report of r.
func reportRequest(r Record) reportBody {
	total := r.TotalTokens
	if total == 0 {
		total = r.PromptTokens + r.CompletionTokens
	}
	return reportBody{
		KeyID: r.KeyID, TokensUsed: total, Model: r.Model,
		PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens, Success: r.Success,
	}
}

// consumeRequest builds the consume of r.
func consumeRequest(r Record, usageType string) consumeBody {
	return consumeBody{
		UserAutomationID: r.UserAutomationID, Units: r.Units, UsageType: usageType,
		Meta: consumeMeta{
			CallID: r.ID, Model: r.Model,
			PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens,
		},
	}
}

// post sends one JSON POST with the service token (and an idempotency
// key when idemKey is set) and reads a bounded answer. It notes whether
// any of the request was handed to the connection. Its errors never hold
// the token or the answer's body.
func (d *Deliverer) post(ctx context.Context, url string, v any, idemKey string) (answer, error) {
	var a answer
	body, err := json.Marshal(v)
	if err != nil {
		return a, fmt.Errorf("encode request: %w", err)
	}
	token := d.opts.Token()
	if token == "" {
		return a, errNoToken
	}

	// Watch the writes: the first header field handed to the connection
	// means the platform may get the request.
	var written atomic.Bool
	trace := &httptrace.ClientTrace{
		WroteHeaderField: func(string, []string) { written.Store(true) },
	}
	ctx = httptrace.WithClientTrace(ctx, trace)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return a, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set(headerServiceToken, token)
	if idemKey != "" {
		req.Header.Set(headerIdempotency, idemKey)
	}
	resp, err := d.client.Do(req)
	a.written = written.Load()
	if err != nil {
		return a, err
	}
	defer resp.Body.Close()

	// Read the answer whole: a body cut short is an unknown outcome too.
	a.status = resp.StatusCode
	a.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), d.now())
	a.body, err = io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return a, fmt.Errorf("read answer (status %d): %w", a.status, err)
	}
	return a, nil
}

// call runs post through the breaker. A status that says the platform is
// unwell comes back as errUnhealthy, a 401 or 403 as ErrTokenRefused,
// with the answer; the breaker counts both.
func (d *Deliverer) call(ctx context.Context, url string, v any, idemKey string) (answer, error) {
	return d.breaker.Execute(func() (answer, error) {
		a, err := d.post(ctx, url, v, idemKey)
		switch {
		case err != nil:
		case unhealthy(a.status):
			err = fmt.Errorf("%w: status %d", errUnhealthy, a.status)
		case tokenRefused(a.status):
			err = fmt.Errorf("%w: status %d", ErrTokenRefused, a.status)
		}
		return a, err
	})
}

// tokenRefused reports whether status refuses the service token.
func tokenRefused(status int) bool {
	return status == http.StatusUnauthorized || status == http.StatusForbidden
}

// unhealthy reports whether status says the platform is unwell.
func unhealthy(status int) bool {
	return status >= 500 || status == http.StatusRequestTimeout ||
		status == http.StatusTooManyRequests
}

// decodeConsume reads a 200 consume answer. Its errors never quote the
// body.
func decodeConsume(raw []byte, r Record) (ConsumeAnswer, error) {
	var w consumeWire
	if err := json.Unmarshal(raw, &w); err != nil {
		return ConsumeAnswer{}, errors.New("consume answer is not a JSON object")
	}
	if w.Accepted == nil || w.RemainingDemoTokens == nil || w.RemainingPaidTokens == nil {
		return ConsumeAnswer{}, errors.New("consume answer lacks accepted or remaining tokens")
	}
	return ConsumeAnswer{
		CallID: r.ID, UserAutomationID: r.UserAutomationID, Units: r.Units,
		Accepted: *w.Accepted, RemainingDemoTokens: *w.RemainingDemoTokens,
		RemainingPaidTokens: *w.RemainingPaidTokens,
	}, nil
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
// It returns zero when there is none or it does not parse.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(min(s, 86400)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}
