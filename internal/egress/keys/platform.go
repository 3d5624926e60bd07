package keys

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxAnswerBytes bounds a lease answer read from the platform.
const maxAnswerBytes = 64 << 10

// headerServiceToken carries the service token to the platform.
const headerServiceToken = "X-Zimmer-Service-Token"

// leaseRequest is the guide's lease request body.
type leaseRequest struct {
	Model     string `json:"model"`
	MaxTokens int64  `json:"max_tokens"`
}

// leaseWire is the guide's lease answer as it travels.
type leaseWire struct {
	Success     *bool           `json:"success"`
	KeyID       json.RawMessage `json:"key_id"`
	APIKey      string          `json:"api_key"`
	Model       string          `json:"model"`
	ExpiresAt   string          `json:"expires_at"`
	UsageLimits *struct {
		RPMLimit        *int64 `json:"rpm_limit"`
		DailyTokenLimit *int64 `json:"daily_token_limit"`
	} `json:"usage_limits"`
}

// leaseAnswer is a checked lease.
type leaseAnswer struct {
	keyID     int64
	secret    Secret
	model     string
	expiresAt time.Time
	limits    Limits
}

// errNoToken: the token function gave nothing; nothing was sent. The
// breaker does not count it.
var errNoToken = errors.New("service token is empty")

// callPlatform asks the platform for one lease. Its errors match
// ErrPlatformUnavailable (no answer, 5xx, 429), ErrPlatformRefused (another
// non-200, or success false), ErrBadLease or errNoToken, and never contain
// the token, the key or the answer's body.
func (p *Leased) callPlatform(
	ctx context.Context, model string, maxTokens int64,
) (leaseAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, p.opts.CallTimeout)
	defer cancel()

	// Send the guide's request with the service token in effect.
	token := p.token()
	if token == "" {
		return leaseAnswer{}, errNoToken
	}
	body, err := json.Marshal(leaseRequest{Model: model, MaxTokens: max(maxTokens, 0)})
	if err != nil {
		return leaseAnswer{}, fmt.Errorf("encode lease request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.endpoint, bytes.NewReader(body))
	if err != nil {
		return leaseAnswer{}, fmt.Errorf("build lease request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set(headerServiceToken, token)
	resp, err := p.client.Do(req)
	if err != nil {
		return leaseAnswer{}, fmt.Errorf("%w: %w", ErrPlatformUnavailable, err)
	}
	defer resp.Body.Close()

	// Read a bounded answer and classify the status.
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err != nil {
		return leaseAnswer{}, fmt.Errorf("%w: read answer: %w", ErrPlatformUnavailable, err)
	}
	switch s := resp.StatusCode; {
	case s == http.StatusOK:
	case s == http.StatusTooManyRequests || s >= 500:
		return leaseAnswer{}, fmt.Errorf("%w: status %d", ErrPlatformUnavailable, s)
	default:
		return leaseAnswer{}, fmt.Errorf("%w: status %d", ErrPlatformRefused, s)
	}
	if len(raw) > maxAnswerBytes {
		return leaseAnswer{}, fmt.Errorf("%w: answer over %d bytes", ErrBadLease, maxAnswerBytes)
	}
	return decodeLease(raw, p.opts.Now())
}

// decodeLease checks a 200 answer's body. Its errors never quote the body.
func decodeLease(raw []byte, now time.Time) (leaseAnswer, error) {
	var w leaseWire
	if err := json.Unmarshal(raw, &w); err != nil {
		// The decoder's message may quote a value: do not wrap it.
		return leaseAnswer{}, fmt.Errorf("%w: not a JSON lease object", ErrBadLease)
	}
	if w.Success != nil && !*w.Success {
		return leaseAnswer{}, fmt.Errorf("%w: success false", ErrPlatformRefused)
	}
	id, ok := parseKeyID(w.KeyID)
	if !ok {
		return leaseAnswer{}, fmt.Errorf("%w: key_id missing or not a positive integer",
			ErrBadLease)
	}
	if strings.TrimSpace(w.APIKey) == "" {
		return leaseAnswer{}, fmt.Errorf("%w: api_key missing", ErrBadLease)
	}
	exp, ok := parseExpiry(w.ExpiresAt)
	switch {
	case !ok:
		return leaseAnswer{}, fmt.Errorf("%w: expires_at missing or not ISO 8601", ErrBadLease)
	case !exp.After(now):
		return leaseAnswer{}, fmt.Errorf("%w: lease %d already expired", ErrBadLease, id)
	}
	a := leaseAnswer{
		keyID: id, secret: NewSecret(strings.TrimSpace(w.APIKey)),
		model: w.Model, expiresAt: exp,
	}
	if u := w.UsageLimits; u != nil {
		if (u.RPMLimit != nil && *u.RPMLimit < 0) ||
			(u.DailyTokenLimit != nil && *u.DailyTokenLimit < 0) {
			return leaseAnswer{}, fmt.Errorf("%w: negative usage limit", ErrBadLease)
		}
		if u.RPMLimit != nil {
			a.limits.RPM = int(min(*u.RPMLimit, 1<<31-1))
		}
		if u.DailyTokenLimit != nil {
			a.limits.DailyTokens = *u.DailyTokenLimit
		}
	}
	return a, nil
}

// parseKeyID accepts a positive integer as a JSON number or a numeric
// string (the platform's ids are integers; some senders quote them).
func parseKeyID(raw json.RawMessage) (int64, bool) {
	s := strings.TrimSpace(string(raw))
	if unq, err := strconv.Unquote(s); err == nil && strings.HasPrefix(s, `"`) {
		s = strings.TrimSpace(unq)
	}
	id, err := strconv.ParseInt(s, 10, 64)
	return id, err == nil && id > 0
}

// expiryLayouts are the forms expires_at may take: RFC 3339 (the guide),
// and Python's isoformat without a zone, read as UTC.
var expiryLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
}

func parseExpiry(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	for _, layout := range expiryLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}
