package zimmer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// Fixed client messages. Causes go to OnError, never into an answer.
const (
	detailTooLarge       = "request body too large"
	detailUnreadable     = "could not read request body"
	detailNoKB           = "This automation has no knowledge base"
	detailNoReset        = "This automation does not support knowledge base reset"
	detailUnknown        = "unknown user_automation_id"
	detailConflict       = "Idempotency-Key was already used with a different request"
	detailLedger         = "internal error"
	detailUnavailable    = "ledger unavailable, try again"
	detailAppTimeout     = "app did not answer in time"
	detailAppUnavailable = "App unavailable (circuit open); retry after the Retry-After delay"
	detailProvisionApp   = "app provisioning failed"
	detailKBStatusApp    = "knowledge base status failed"
	detailKBResetApp     = "knowledge base reset failed"
)

// fail is the result of an endpointFunc that answers {"detail": detail}.
func fail(status int, detail string, cause error) (int, any, error) {
	return status, ErrorAnswer{Detail: detail}, cause
}

// badRequest answers 400 for a refused request; its detail names the
// field and never echoes the value.
func badRequest(err error) (int, any, error) {
	return fail(http.StatusBadRequest, err.Error(), err)
}

// readBody reads the request body up to MaxBody. A declared length over
// the limit is refused before anything is read, so a client that sent
// "Expect: 100-continue" never gets a 100 Continue.
func (a *API) readBody(w http.ResponseWriter, r *http.Request) ([]byte, int, error) {
	if r.Body == nil {
		return nil, http.StatusOK, nil
	}
	if r.ContentLength > a.opts.MaxBody {
		return nil, http.StatusRequestEntityTooLarge,
			fmt.Errorf("content length %d over limit %d", r.ContentLength, a.opts.MaxBody)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.opts.MaxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("read body: %w", err)
		}
		return nil, http.StatusBadRequest, fmt.Errorf("read body: %w", err)
	}
	return body, http.StatusOK, nil
}

// bodyFailure answers a readBody failure.
func bodyFailure(status int, err error) (int, any, error) {
	if status == http.StatusRequestEntityTooLarge {
		return fail(status, detailTooLarge, err)
	}
	return fail(status, detailUnreadable, err)
}

// ledgerFailure maps a ledger error to its answer: unknown account 404,
// key conflict 409, invalid units 400, closed or too slow 503, anything
// else 500 with a fixed message.
func ledgerFailure(err error) (int, any, error) {
	switch {
	case errors.Is(err, metering.ErrUnknownAccount):
		return fail(http.StatusNotFound, detailUnknown, err)
	case errors.Is(err, metering.ErrIdempotencyConflict):
		return fail(http.StatusConflict, detailConflict, err)
	case errors.Is(err, metering.ErrInvalidUnits):
		return fail(http.StatusBadRequest, "units must be a positive integer", err)
	case errors.Is(err, metering.ErrInvalidIdempotencyKey):
		return fail(http.StatusBadRequest,
			"Idempotency-Key must be at most 255 printable ASCII characters", err)
	case errors.Is(err, metering.ErrClosed),
		errors.Is(err, context.DeadlineExceeded):
		return fail(http.StatusServiceUnavailable, detailUnavailable, err)
	}
	return fail(http.StatusInternalServerError, detailLedger, err)
}

// retryAfterer is an app error that knows when the app may be tried
// again: the proxy's open circuit breaker.
type retryAfterer interface {
	RetryAfter() time.Duration
}

// appFailure maps an app (hook or KB backend) error to its answer: 503
// when the app was not called because its circuit is open (the endpoint
// wrapper adds Retry-After), 504 when it ran out of time, 502 otherwise.
// ans carries the endpoint's failure fields.
func appFailure(err error, detail string, ans FailureAnswer) (int, any, error) {
	status := http.StatusBadGateway
	var ra retryAfterer
	switch {
	case errors.As(err, &ra):
		status, detail = http.StatusServiceUnavailable, detailAppUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		status, detail = http.StatusGatewayTimeout, detailAppTimeout
	}
	ans.Detail, ans.Success, ans.Message = detail, false, detail
	return status, ans, err
}
