package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"syscall"
	"time"
)

// retryDelay is the pause before the one retry of an idempotent call, so
// an app that is restarting has a moment to listen again.
const retryDelay = 100 * time.Millisecond

// appTransport is the one RoundTripper for the app, used by the reverse
// proxy and the hook client alike: the breaker decides whether a call may
// go out and learns its outcome, and an idempotent call that the app's
// connection failed before any answer arrived is sent once more. A call
// and its retry count once in the breaker, and a metered call is charged
// before it reaches the transport, so a retry is never charged again.
type appTransport struct {
	base    http.RoundTripper
	breaker *Breaker // nil: none
	retry   bool
	delay   time.Duration
}

// RoundTrip implements http.RoundTripper. A call the breaker refuses
// fails with an *OpenError without contacting the app.
func (t *appTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.breaker == nil {
		return t.send(req)
	}
	report, err := t.breaker.allow()
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close() // a RoundTripper closes the body, even on error
		}
		return nil, err
	}
	resp, err := t.send(req)
	t.breaker.done(report, outcome(req, resp, err))
	return resp, err
}

// outcome classifies a call for the breaker: errFailed when the app could
// not be reached or timed out, or answered 502, 503 or 504 (it or its own
// upstream is unavailable); errExcluded when the client went away first;
// nil otherwise. An app's own 500 is an answer about one request, not a
// sign the app is down: counting it would let any anonymous client that
// can provoke five 500s open the breaker and turn /health down.
func outcome(req *http.Request, resp *http.Response, err error) error {
	switch {
	case err != nil && errors.Is(req.Context().Err(), context.Canceled):
		return errExcluded
	case err != nil:
		return errFailed
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return errFailed
	}
	return nil
}

// send makes the call, and once more when retryable says it may.
func (t *appTransport) send(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err == nil || !t.retry || !retryable(req, err) {
		return resp, err
	}
	again, ok := rewound(req)
	if !ok {
		return nil, err
	}
	timer := time.NewTimer(t.delay)
	defer timer.Stop()
	select {
	case <-req.Context().Done():
		if again.Body != nil {
			_ = again.Body.Close()
		}
		return nil, err
	case <-timer.C:
	}
	return t.base.RoundTrip(again)
}

// retryable reports whether a failed call may be sent again: its method
// is idempotent, its body can be replayed (none, or GetBody set), its
// context is still live, and the connection failed before an answer
// arrived: refused, reset or closed. A timeout is not retried: the app
// may still be working, and a second wait would overrun the deadline.
func retryable(req *http.Request, err error) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions,
		http.MethodPut, http.MethodDelete:
	default:
		return false
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false
	}
	if req.Context().Err() != nil {
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// rewound returns a copy of req with a fresh body, or false when the body
// cannot be had again.
func rewound(req *http.Request) (*http.Request, bool) {
	again := req.Clone(req.Context())
	if req.Body == nil || req.Body == http.NoBody {
		return again, true
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, false
	}
	again.Body = body
	return again, true
}
