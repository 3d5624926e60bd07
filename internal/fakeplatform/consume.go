package fakeplatform

import (
	"net/http"
)

// consumeAnswer is the platform's answer to a consume, accepted or not.
type consumeAnswer struct {
	Accepted            bool   `json:"accepted"`
	RemainingDemoTokens int64  `json:"remaining_demo_tokens"`
	RemainingPaidTokens int64  `json:"remaining_paid_tokens"`
	Message             string `json:"message"`
}

// consume serves POST /api/automation-usage/consume in the platform's
// order: the body is validated first (422), then the token's presence
// (401), the account (404), the token of the account's automation (401),
// and the ledger rules decide (200, accepted or not).
func (p *Platform) consume(r *http.Request, body []byte) result {
	// Validate the body.
	o, ok := decodeObject(body)
	if !ok {
		return invalid(o)
	}
	uaID := o.int("user_automation_id", true, 0)
	units := o.int("units", true, 0)
	usageType := o.string("usage_type", true, "")
	meta := o.objectField("meta")
	if len(o.errs) > 0 {
		return invalid(o)
	}

	// Authenticate against the account's automation.
	if r.Header.Get("X-Zimmer-Service-Token") == "" {
		res, _ := checkToken(r, "")
		return res
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.accounts[uaID]
	if a == nil {
		return result{http.StatusNotFound, detail("User automation not found")}
	}
	if res, ok := checkToken(r, p.tokens[a.AutomationID]); !ok {
		return res
	}

	// Apply the ledger rules and record the ruling.
	accepted, msg := a.deduct(units)
	p.consumes = append(p.consumes, ConsumeRecord{
		UserAutomationID: uaID, Units: units, UsageType: usageType, Meta: meta,
		Accepted: accepted, Message: msg, At: p.opts.Now(),
	})
	return result{http.StatusOK, consumeAnswer{
		Accepted:            accepted,
		RemainingDemoTokens: a.DemoTokens,
		RemainingPaidTokens: a.PaidTokens,
		Message:             msg,
	}}
}

// deduct applies the platform's token rules (services/token_manager.py):
// while the demo is active and has tokens, the demo tokens must cover the
// whole request (no spill into paid tokens), and the demo ends when they
// reach zero; after the demo, paid tokens pay. The sign of units is not
// checked: negative units credit whichever balance would have paid.
func (a *Account) deduct(units int64) (bool, string) {
	if a.DemoActive && a.DemoTokens > 0 {
		if a.DemoTokens < units {
			return false, "insufficient demo tokens"
		}
		a.DemoTokens -= units
		if a.DemoTokens == 0 {
			a.DemoActive, a.DemoExpired = false, true
		}
		return true, "demo tokens used"
	}
	if a.DemoExpired && a.PaidTokens <= 0 {
		return false, "demo ended: buy a token package"
	}
	if a.PaidTokens < units {
		return false, "insufficient tokens"
	}
	a.PaidTokens -= units
	return true, "paid tokens used"
}
