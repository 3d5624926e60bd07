package egress

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
)

// apiError is an answer the handler gives itself, in OpenAI's error shape
// so that OpenAI clients show its message.
type apiError struct {
	status  int
	typ     string
	code    string
	message string
	// param names the request member at fault, "" for none.
	param string
	// outcome is the Metrics outcome of a refusal.
	outcome string
	// retryAfter, when positive, is sent as Retry-After.
	retryAfter time.Duration
}

// OpenAI error types used by the handler.
const (
	typeInvalidRequest = "invalid_request_error"
	typePermission     = "permission_error"
	typeQuota          = "insufficient_quota"
	typeServer         = "server_error"
)

// The handler's own answers. Messages are fixed: causes go to the log.
var (
	errForbiddenHost = apiError{
		status: http.StatusForbidden, typ: typePermission, code: "upstream_not_allowed",
		message: "the egress forwards only to its configured upstream",
		outcome: RefusedForbidden,
	}
	errNoUpgrade = apiError{
		status: http.StatusNotImplemented, typ: typeInvalidRequest,
		code:    "upgrade_not_supported",
		message: "the egress does not forward protocol upgrades (WebSocket)",
		outcome: RefusedForbidden,
	}
	errBadPath = apiError{
		status: http.StatusBadRequest, typ: typeInvalidRequest, code: "invalid_path",
		message: `the request path must start with "/" and have no empty, "." or ".." ` +
			"segment",
		outcome: RefusedBadRequest,
	}
	errBrowser = apiError{
		status: http.StatusForbidden, typ: typePermission, code: "browser_request_refused",
		message: "the egress serves server-side clients only: a request with an Origin or " +
			"a browser's Sec-Fetch-* header is refused",
		outcome: RefusedForbidden,
	}
	errUnmetered = apiError{
		status: http.StatusForbidden, typ: typePermission, code: "unmetered_endpoint",
		message: "the egress cannot read the token usage of this endpoint, so a call " +
			"charged to a user's budget cannot go to it",
		outcome: RefusedForbidden,
	}
	errBodyTimeout = apiError{
		status: http.StatusRequestTimeout, typ: typeInvalidRequest, code: "request_timeout",
		message: "the request body did not arrive in time",
		outcome: RefusedBadRequest,
	}
	errBadUser = apiError{
		status: http.StatusBadRequest, typ: typeInvalidRequest, code: "invalid_user",
		message: "the user header must hold one positive integer user_automation_id",
		outcome: RefusedBadRequest,
	}
	errUserRequired = apiError{
		status: http.StatusBadRequest, typ: typeInvalidRequest, code: "user_required",
		message: "the egress requires the user header naming the user_automation_id",
		outcome: RefusedBadRequest,
	}
	errBadBody = apiError{
		status: http.StatusBadRequest, typ: typeInvalidRequest, code: "invalid_request_body",
		message: "the request body is not a JSON object the egress can read",
		outcome: RefusedBadRequest,
	}
	errEncoding = apiError{
		status: http.StatusUnsupportedMediaType, typ: typeInvalidRequest,
		code:    "unsupported_content_encoding",
		message: "the egress reads request bodies only uncompressed (no Content-Encoding)",
		outcome: RefusedBadRequest,
	}
	errBodyRead = apiError{
		status: http.StatusBadRequest, typ: typeInvalidRequest, code: "invalid_request_body",
		message: "the request body could not be read",
		outcome: RefusedBadRequest,
	}
	errTooLarge = apiError{
		status: http.StatusRequestEntityTooLarge, typ: typeInvalidRequest,
		code: "request_too_large", message: "the request body is over the egress limit",
		outcome: RefusedTooLarge,
	}
	errBudget = apiError{
		status: http.StatusPaymentRequired, typ: typeQuota, code: "budget_exceeded",
		message: "the user's balance cannot cover this call",
		outcome: RefusedBudget,
	}
	errUnknownUser = apiError{
		status: http.StatusPaymentRequired, typ: typeQuota, code: "unknown_user",
		message: "no balance exists for this user_automation_id",
		outcome: RefusedBudget,
	}
	errReservationTooLarge = apiError{
		status: http.StatusBadRequest, typ: typeInvalidRequest, code: "reservation_too_large",
		message: "this call would reserve more of the user's budget than one call may: " +
			"lower max_tokens (max_completion_tokens, max_output_tokens) or n, " +
			"or send a shorter request",
		outcome: RefusedBadRequest,
	}
	errBudgetDown = apiError{
		status: http.StatusServiceUnavailable, typ: typeServer, code: "budget_unavailable",
		message:    "the egress could not check the user's balance",
		outcome:    RefusedBudgetError,
		retryAfter: DefaultRetryAfter,
	}
	errBacklog = apiError{
		status: http.StatusServiceUnavailable, typ: typeServer, code: "usage_backlog_full",
		message:    "the egress cannot record more usage until its backlog is delivered",
		outcome:    RefusedBacklog,
		retryAfter: DefaultRetryAfter,
	}
	errShutdown = apiError{
		status: http.StatusServiceUnavailable, typ: typeServer, code: "shutting_down",
		message:    "the egress is shutting down",
		outcome:    RefusedShutdown,
		retryAfter: DefaultRetryAfter,
	}
	errUnreachable = apiError{
		status: http.StatusBadGateway, typ: typeServer, code: "upstream_unreachable",
		message: "the upstream did not answer",
	}
	errUpstreamTimeout = apiError{
		status: http.StatusGatewayTimeout, typ: typeServer, code: "upstream_timeout",
		message: "the upstream did not answer in time",
	}
	errUpstreamBody = apiError{
		status: http.StatusBadGateway, typ: typeServer, code: "upstream_error",
		message: "the upstream answered with an error the egress could not pass on",
	}
)

// noKey is the answer when the pool has no key: 503 with Retry-After
// when a key is expected back. Only counts go to the app, never the
// cause.
func noKey(retryAfter time.Duration) apiError {
	return apiError{
		status: http.StatusServiceUnavailable, typ: typeServer, code: "no_key_available",
		message:    "no OpenAI key can serve this call now",
		outcome:    RefusedNoKey,
		retryAfter: retryAfter,
	}
}

// wireError is OpenAI's error body.
type wireError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

// write answers e.
func (e apiError) write(w http.ResponseWriter) {
	var body wireError
	body.Error.Message = e.message
	body.Error.Type = e.typ
	body.Error.Code = e.code
	if e.param != "" {
		body.Error.Param = &e.param
	}
	b, _ := json.Marshal(body) // cannot fail: strings only
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if e.retryAfter > 0 {
		h.Set("Retry-After", httpx.RetryAfter(e.retryAfter))
	}
	w.WriteHeader(e.status)
	_, _ = w.Write(append(b, '\n'))
}
