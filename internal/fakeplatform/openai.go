package fakeplatform

import (
	"cmp"
	"net/http"
	"strconv"
	"time"
)

// usageLimits is the lease answer's usage_limits; nil is unlimited.
type usageLimits struct {
	RPMLimit        *int   `json:"rpm_limit"`
	DailyTokenLimit *int64 `json:"daily_token_limit"`
}

// leaseAnswer is the guide's lease answer.
type leaseAnswer struct {
	Success     bool        `json:"success"`
	KeyID       int64       `json:"key_id"`
	APIKey      string      `json:"api_key"`
	Model       string      `json:"model"`
	ExpiresAt   string      `json:"expires_at"`
	UsageLimits usageLimits `json:"usage_limits"`
}

// refusal is the answer when no key can be leased.
type refusal struct {
	Success bool   `json:"success"`
	Message string `json:"message"`
}

// lease serves POST /api/automations/{id}/openai-key.
func (p *Platform) lease(r *http.Request, body []byte) result {
	// Validate the path and the body (an empty body is {}: the guide's
	// own example sends none).
	id, bad := pathID(r)
	if bad != nil {
		return *bad
	}
	if len(body) == 0 {
		body = []byte("{}")
	}
	o, _ := decodeObject(body)
	model := o.string("model", false, "")
	maxTokens := o.int("max_tokens", false, 0)
	if len(o.errs) > 0 {
		return invalid(o)
	}

	// Authenticate as the automation.
	p.mu.Lock()
	defer p.mu.Unlock()
	if res, ok := p.authAutomation(r, id); !ok {
		return res
	}

	// Pick the least-used eligible key and record the lease.
	now := p.opts.Now()
	k := p.pickKey(id, now)
	rec := LeaseRecord{AutomationID: id, Model: model, MaxTokens: maxTokens, At: now}
	if k == nil {
		p.leases = append(p.leases, rec)
		return result{http.StatusOK, refusal{Message: "no OpenAI key available"}}
	}
	rec.KeyID = k.ID
	p.leases = append(p.leases, rec)
	return result{http.StatusOK, k.answer(model, now, p.opts.LeaseTTL)}
}

// authAutomation checks the token of a known automation. Called with p.mu
// held.
func (p *Platform) authAutomation(r *http.Request, id int64) (result, bool) {
	if r.Header.Get("X-Zimmer-Service-Token") == "" {
		return checkToken(r, "")
	}
	want, ok := p.tokens[id]
	if !ok {
		return result{http.StatusNotFound, detail("Automation not found")}, false
	}
	return checkToken(r, want)
}

// pickKey returns the automation's least-used eligible key, as the
// platform's key manager orders them. Called with p.mu held.
func (p *Platform) pickKey(automationID int64, now time.Time) *keyUsage {
	var best *keyUsage
	for _, k := range p.keys {
		if k.AutomationID != automationID || k.Disabled || !k.eligible(now) {
			continue
		}
		if best == nil || k.less(best) {
			best = k
		}
	}
	return best
}

// eligible applies the key's limits, opening a new minute window first.
func (k *keyUsage) eligible(now time.Time) bool {
	k.rollover(now)
	if now.Sub(k.minuteStart) >= time.Minute {
		k.minuteStart, k.minuteCalls = now, 0
	}
	if k.exhaustedDay == k.day {
		return false
	}
	if k.RPMLimit > 0 && k.minuteCalls >= k.RPMLimit {
		return false
	}
	return k.DailyTokenLimit <= 0 || k.tokensToday < k.DailyTokenLimit
}

// less orders keys: fewest calls this minute, fewest tokens today, used
// longest ago, then by id for a stable choice.
func (k *keyUsage) less(o *keyUsage) bool {
	if c := cmp.Compare(k.minuteCalls, o.minuteCalls); c != 0 {
		return c < 0
	}
	if c := cmp.Compare(k.tokensToday, o.tokensToday); c != 0 {
		return c < 0
	}
	if !k.lastUsed.Equal(o.lastUsed) {
		return k.lastUsed.Before(o.lastUsed)
	}
	return k.ID < o.ID
}

// answer builds the lease answer for k.
func (k *keyUsage) answer(model string, now time.Time, ttl time.Duration) leaseAnswer {
	if k.TTL > 0 {
		ttl = k.TTL
	}
	if k.Model != "" {
		model = k.Model
	}
	a := leaseAnswer{
		Success: true, KeyID: k.ID, APIKey: k.APIKey, Model: model,
		ExpiresAt: now.Add(ttl).UTC().Format(time.RFC3339),
	}
	if k.RPMLimit > 0 {
		rpm := k.RPMLimit
		a.UsageLimits.RPMLimit = &rpm
	}
	if k.DailyTokenLimit > 0 {
		daily := k.DailyTokenLimit
		a.UsageLimits.DailyTokenLimit = &daily
	}
	return a
}

// reportAnswer acknowledges a usage report.
type reportAnswer struct {
	Success bool   `json:"success"`
	Message string `json:"message"`
}

// report serves POST /api/automations/{id}/openai-usage.
func (p *Platform) report(r *http.Request, body []byte) result {
	// Validate the path and the body.
	id, bad := pathID(r)
	if bad != nil {
		return *bad
	}
	o, ok := decodeObject(body)
	if !ok {
		return invalid(o)
	}
	rep := UsageReport{
		AutomationID:     id,
		KeyID:            o.int("key_id", true, 0),
		TokensUsed:       o.int("tokens_used", true, 0),
		Model:            o.string("model", false, "unknown"),
		PromptTokens:     o.int("prompt_tokens", false, 0),
		CompletionTokens: o.int("completion_tokens", false, 0),
		Success:          o.bool("success", true),
	}
	if len(o.errs) > 0 {
		return invalid(o)
	}

	// Authenticate; answer a known Idempotency-Key as it was answered.
	p.mu.Lock()
	defer p.mu.Unlock()
	if res, ok := p.authAutomation(r, id); !ok {
		return res
	}
	rep.IdempotencyKey = r.Header.Get("Idempotency-Key")
	rk := reportKey{automationID: id, key: rep.IdempotencyKey}
	if first, ok := p.reportKeys[rk]; ok && rk.key != "" {
		p.replays++
		return first
	}

	// Find the key and record the report against it.
	k := p.keys[rep.KeyID]
	if k == nil || k.AutomationID != id {
		return result{http.StatusNotFound, detail("OpenAI key not found")}
	}
	now := p.opts.Now()
	rep.At = now
	p.reports = append(p.reports, rep)
	k.record(rep.TokensUsed, now)
	res := result{http.StatusOK, reportAnswer{Success: true, Message: "usage recorded"}}
	if rk.key != "" {
		p.reportKeys[rk] = res
	}
	return res
}

// record counts one call's usage as the platform's key manager does, and
// marks the key exhausted for the day at its daily token limit.
func (k *keyUsage) record(tokens int64, now time.Time) {
	k.eligible(now) // roll the day and the minute window
	k.minuteCalls++
	k.tokensToday += tokens
	k.lastUsed = now
	if k.DailyTokenLimit > 0 && k.tokensToday >= k.DailyTokenLimit {
		k.exhaustedDay = k.day
	}
}

// pathID reads the {id} path segment as FastAPI reads an int parameter.
func pathID(r *http.Request) (int64, *result) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		res := result{http.StatusUnprocessableEntity, validationError{Detail: []fieldError{{
			Loc: []any{"path", "automation_id"}, Msg: "value is not a valid integer",
			Type: "int_parsing",
		}}}}
		return 0, &res
	}
	return id, nil
}

// invalid is the 422 answer for a body's errors.
func invalid(o *object) result {
	return result{http.StatusUnprocessableEntity, validationError{Detail: o.errs}}
}
