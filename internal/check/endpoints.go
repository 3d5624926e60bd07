package check

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// usageType is the usage_type (and action) of the check's consume calls.
const usageType = "zimmer_check"

// run performs every check in order: health first, then the probes that
// send no valid token, then the real calls (provision before consume and
// KB, which need the account).
func (r *runner) run(ctx context.Context) {
	steps := []func(context.Context){
		r.checkHealth,
		r.checkHealthSlash,
		r.checkMethods,
		r.checkAuth,
		r.checkProvision,
		r.checkConsume,
		r.checkKB,
		r.checkSlashes,
	}
	for _, step := range steps {
		if ctx.Err() != nil {
			return
		}
		step(ctx)
	}
}

// provisionBody is the platform's provision request.
func (r *runner) provisionBody() map[string]any {
	return map[string]any{"user_automation_id": r.uaid, "user_id": r.uid,
		"bot_token": nil, "demo_tokens": nil}
}

// consumeBody is the guide's consume request for one unit.
func (r *runner) consumeBody() map[string]any {
	return map[string]any{"user_automation_id": r.uaid, "units": 1,
		"usage_type": usageType, "meta": map[string]any{"source": userAgent}}
}

// checkMethods sends the bare unauthenticated GET of the platform's URL
// checker to provision and consume (KB reset waits until the KB is known
// to exist).
func (r *runner) checkMethods(ctx context.Context) {
	r.checkMethodOf(ctx, Provision)
	r.checkMethodOf(ctx, Consume)
}

// checkMethodOf sends the URL checker's GET to the POST-only endpoint ep:
// the platform accepts 200 or 405, and a 405 should name what is allowed.
func (r *runner) checkMethodOf(ctx context.Context, ep Endpoint) {
	c := call{endpoint: ep, check: "GET without token (URL checker)",
		method: http.MethodGet, url: r.urls[ep]}
	r.exchange(ctx, c, func(a answer, v *verdict) {
		switch a.status {
		case http.StatusMethodNotAllowed:
			if a.header.Get("Allow") == "" {
				v.warn("405 without an Allow header")
				return
			}
			v.note("405, Allow: %s", a.header.Get("Allow"))
		case http.StatusOK:
			v.note("200")
		default:
			v.fail("status %d: the platform's URL checker accepts only 200 or 405",
				a.status)
		}
	})
}

// checkAuth calls provision and consume without a token and with a wrong
// one, each with a valid body so nothing but the token is amiss.
func (r *runner) checkAuth(ctx context.Context) {
	r.checkAuthOf(ctx, Provision, r.provisionBody())
	r.checkAuthOf(ctx, Consume, r.consumeBody())
}

// checkAuthOf sends body to ep with no token and with a wrong one; both
// must be refused, with 401 and a JSON detail.
func (r *runner) checkAuthOf(ctx context.Context, ep Endpoint, body any) {
	for _, tc := range []struct {
		name  string
		token tokenMode
	}{{"no token", noToken}, {"wrong token", wrongToken}} {
		c := call{endpoint: ep, check: tc.name, method: http.MethodPost,
			url: r.urls[ep], body: body, token: tc.token}
		r.exchange(ctx, c, func(a answer, v *verdict) { judgeAuth(a, v) })
	}
}

// judgeAuth wants a refusal: 401 with a JSON detail. Any success or a
// server error fails; another refusal (403, 422, ...) warns.
func judgeAuth(a answer, v *verdict) {
	switch {
	case a.status >= 200 && a.status < 300:
		v.fail("status %d: accepted the call without a valid token", a.status)
		return
	case a.status >= 500:
		v.fail("status %d: want 401", a.status)
		return
	case a.status == http.StatusTooManyRequests:
		v.warn("429: failed-authentication limit reached; rerun in a minute")
		return
	case a.status != http.StatusUnauthorized:
		v.warn("status %d: the guide answers 401", a.status)
		return
	}
	var e struct {
		Detail *string `json:"detail"`
	}
	if json.Unmarshal(a.body, &e) != nil || e.Detail == nil {
		v.warn("401 without a JSON detail: %s", snippet(a.body))
		return
	}
	v.note("401 %q", clip(*e.Detail))
}

// provisionFields are what the guide documents in a provision answer.
var provisionFields = []field{
	required("success", kindBool),
	required("message", kindString),
	required("provisioned_at", kindTime),
	required("integration_status", kindEnum, "active", "pending", "failed"),
	optional("service_url", kindString),
}

// checkProvision provisions the test account in the platform's dialect,
// then repeats it in the guide's and with numeric-string ids: every call
// must answer exactly 200 with a JSON object (idempotency).
func (r *runner) checkProvision(ctx context.Context) {
	// 1. The platform's call.
	first := r.provisionCall(ctx, "platform dialect", r.provisionBody(), true)

	// 2. The guide's call (demo_tokens 5, no bot_token), a repeat.
	guide := map[string]any{"user_automation_id": r.uaid, "user_id": r.uid,
		"demo_tokens": 5}
	second := r.provisionCall(ctx, "repeated, guide dialect", guide, true)
	if first != nil && second != nil {
		r.compareGrants(first, second)
	}

	// 3. Numeric strings and an extra field, as other senders send: a
	// warning only, the platform itself sends ints.
	strs := map[string]any{
		"user_automation_id": strconv.FormatInt(r.uaid, 10),
		"user_id":            strconv.FormatInt(r.uid, 10),
		"bot_token":          nil, "demo_tokens": nil, "user_name": "zimmer-check",
	}
	r.provisionCall(ctx, "repeated, numeric-string ids", strs, false)
}

// provisionCall sends one provision and returns the answer object when
// the status was 200. strict false turns its failures into warnings.
func (r *runner) provisionCall(ctx context.Context, name string, body any,
	strict bool) map[string]json.RawMessage {
	c := call{endpoint: Provision, check: name, method: http.MethodPost,
		url: r.urls[Provision], body: body, token: validToken}
	var obj map[string]json.RawMessage
	r.exchange(ctx, c, func(a answer, v *verdict) {
		var w verdict
		if a.status != http.StatusOK {
			w.fail("status %d: the platform accepts only exactly 200; %s",
				a.status, snippet(a.body))
			softenInto(v, &w, strict)
			return
		}
		o, err := decodeObject(a.body)
		if err != nil {
			w.fail("answer is %v (an older platform parses it): %s",
				err, snippet(a.body))
			softenInto(v, &w, strict)
			return
		}
		obj = o
		checkFields(o, "the guide", &w, provisionFields...)
		if s, ok := o["success"]; ok && string(s) == "false" {
			w.warn("200 with \"success\": false")
		}
		softenInto(v, &w, strict)
		if !v.failed() {
			v.note("200, JSON object")
		}
	})
	return obj
}

// softenInto copies w into v; when strict is false, failures become
// warnings.
func softenInto(v, w *verdict, strict bool) {
	if strict {
		v.fails = append(v.fails, w.fails...)
	} else {
		v.warns = append(v.warns, w.fails...)
	}
	v.warns = append(v.warns, w.warns...)
	v.notes = append(v.notes, w.notes...)
}

// compareGrants warns when a repeated provision changed the demo grant
// that both answers report (an extension field the sidecar answers).
func (r *runner) compareGrants(first, second map[string]json.RawMessage) {
	a, okA := first["demo_tokens"]
	b, okB := second["demo_tokens"]
	if !okA || !okB || string(a) == string(b) {
		return
	}
	last := &r.report.Results[len(r.report.Results)-1]
	msg := "a repeated provision changed demo_tokens from " + string(a) + " to " +
		string(b) + ": provisioning must be idempotent"
	if last.Status == StatusOK {
		last.Status = StatusWarn
	}
	last.Reason = joinReason(msg, last.Reason)
}

func joinReason(a, b string) string {
	if b == "" {
		return a
	}
	return a + "; " + b
}

// consumeFields are the guide's consume answer; olderFields the older
// dialect's.
var (
	consumeFields = []field{
		required("accepted", kindBool),
		required("remaining_demo_tokens", kindInt),
		required("remaining_paid_tokens", kindInt),
		required("message", kindString),
	}
	olderConsumeFields = []field{
		optional("success", kindBool),
		optional("tokens_consumed", kindInt),
		optional("remaining_tokens", kindInt),
	}
)

// checkConsume spends one unit in each dialect. A refusal is fine but
// must be a 200 with accepted false.
func (r *runner) checkConsume(ctx context.Context) {
	r.consumeCall(ctx, "guide dialect", r.consumeBody(), true)
	older := map[string]any{"user_automation_id": r.uaid, "tokens_consumed": 1,
		"action": usageType, "session_id": "zimmer-check",
		"timestamp": r.now().UTC().Format(time.RFC3339)}
	r.consumeCall(ctx, "older dialect (tokens_consumed)", older, false)
}

func (r *runner) consumeCall(ctx context.Context, name string, body any, guide bool) {
	c := call{endpoint: Consume, check: name, method: http.MethodPost,
		url: r.urls[Consume], body: body, token: validToken}
	r.exchange(ctx, c, func(a answer, v *verdict) {
		var w verdict
		defer func() { softenInto(v, &w, guide) }()
		if a.status != http.StatusOK {
			w.fail("status %d: want 200, even for a refusal; %s", a.status, snippet(a.body))
			return
		}
		o, err := decodeObject(a.body)
		if err != nil {
			w.fail("answer is %v: %s", err, snippet(a.body))
			return
		}
		checkFields(o, "the guide", &w, consumeFields...)
		if !guide {
			checkFields(o, "older automations' callers", &w, olderConsumeFields...)
		}
		if len(w.fails) == 0 && len(w.warns) == 0 {
			w.note("accepted %s", o["accepted"])
		}
	})
}
