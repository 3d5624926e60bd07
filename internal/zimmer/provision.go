package zimmer

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/logging"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// provision serves POST provision:
//
//  1. read and decode the body (400/413 on bad input, nothing changed);
//  2. call the provision hook, when set; its failure, or a reply with
//     integration status "failed", answers 502 (504 on timeout) and
//     leaves the ledger untouched;
//  3. provision the ledger account (idempotent: no second demo grant);
//  4. answer exactly 200 with the union body.
func (a *API) provision(w http.ResponseWriter, r *http.Request) (int, any, error) {
	body, status, err := a.readBody(w, r)
	if err != nil {
		return bodyFailure(status, err)
	}
	call, err := decodeProvision(body)
	if err != nil {
		return badRequest(err)
	}
	logging.FromContext(r.Context()).SetUser(call.UserAutomationID)
	ctx, cancel := context.WithTimeout(r.Context(), a.opts.ProvisionTimeout)
	defer cancel()

	// Tell the app first: if it fails there is no ledger change to undo.
	var reply ProvisionReply
	if a.opts.Provision != nil {
		reply, err = a.opts.Provision.Provision(ctx, call)
		if err == nil && reply.IntegrationStatus == IntegrationFailed {
			err = errors.New("app reported integration status failed")
		}
		if err != nil {
			return appFailure(fmt.Errorf("provision hook: %w", err),
				detailProvisionApp,
				FailureAnswer{IntegrationStatus: IntegrationFailed})
		}
	}

	res, err := a.opts.Ledger.Provision(ctx, metering.ProvisionRequest{
		UserAutomationID: call.UserAutomationID,
		UserID:           call.UserID,
		DemoTokens:       call.DemoTokens,
		BotTokenGiven:    call.BotToken != nil && *call.BotToken != "",
	})
	if err != nil {
		return ledgerFailure(fmt.Errorf("ledger provision: %w", err))
	}
	return http.StatusOK, a.provisionAnswer(call, reply, res), nil
}

// provisionAnswer builds the 200 answer; the hook's reply wins over the
// sidecar's defaults where it is not empty.
func (a *API) provisionAnswer(
	call ProvisionCall,
	reply ProvisionReply,
	res metering.ProvisionResult,
) ProvisionAnswer {
	ans := ProvisionAnswer{
		Success:            true,
		Message:            "Automation provisioned successfully",
		ProvisionedAt:      FormatTime(res.Account.ProvisionedAt),
		IntegrationStatus:  IntegrationActive,
		ServiceURL:         a.serviceURL(call.UserAutomationID, call.UserID),
		UserAutomationID:   call.UserAutomationID,
		DemoTokens:         res.Account.DemoTokens,
		PaidTokens:         res.Account.PaidTokens,
		AlreadyProvisioned: !res.Created,
	}
	if !res.Created {
		ans.Message = "Automation already provisioned"
	}
	if res.Account.ProvisionedAt.IsZero() {
		ans.ProvisionedAt = FormatTime(a.opts.Now())
	}
	if reply.Message != "" {
		ans.Message = reply.Message
	}
	if reply.ServiceURL != "" {
		ans.ServiceURL = reply.ServiceURL
	}
	if reply.IntegrationStatus == IntegrationPending {
		ans.IntegrationStatus = IntegrationPending
	}
	return ans
}
