package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"
)

// maxProbeBody bounds how much of an answer a check reads before closing.
const maxProbeBody = 64 << 10

// userAgent names the sidecar's probes in the app's access log.
const userAgent = "zimmer-sidecar-probe"

// newProbeClient returns the private client used when Options.Client is
// nil: its own transport (never http.DefaultTransport), no proxy from the
// environment, no connection reuse (each check exercises the app's accept
// path and never trips on a connection the app closed while idle), and no
// redirects followed.
func newProbeClient() *http.Client {
	tr := &http.Transport{
		Proxy: nil,
		// Each check's context bounds dial, handshake and answer.
		DialContext:       (&net.Dialer{KeepAlive: -1}).DialContext,
		DisableKeepAlives: true,
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: noRedirect,
	}
}

// noRedirect makes a client return a redirect answer as it is.
func noRedirect(*http.Request, []*http.Request) error {
	return http.ErrUseLastResponse
}

// check runs one probe against target and returns its result. It returns
// ok false when ctx itself ended: such a check says nothing about the app
// and must not be recorded.
func (m *Monitor) check(
	ctx context.Context, target string, o ProbeOptions,
) (Result, bool) {
	cctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	start := m.now()
	res := Result{At: start}
	req, err := http.NewRequestWithContext(cctx, o.Method, target, nil)
	if err != nil {
		// Options were validated; this is unreachable in practice.
		res.Error = "bad request"
		return res, true
	}
	req.Header.Set("User-Agent", userAgent)

	resp, err := m.client.Do(req)
	res.Latency = m.now().Sub(start)
	if err != nil {
		if ctx.Err() != nil {
			return res, false
		}
		res.Error = describeErr(err, o.Timeout)
		return res, true
	}
	defer resp.Body.Close()

	// Drain a bounded part of the body so a stalled body is a failure.
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, maxProbeBody))
	switch {
	case err != nil && ctx.Err() != nil:
		return res, false
	case resp.StatusCode != o.ExpectStatus:
		res.Error = "status " + strconv.Itoa(resp.StatusCode)
	case err != nil:
		res.Error = describeErr(err, o.Timeout)
	default:
		res.OK = true
	}
	return res, true
}

// describeErr turns a transport error into a short reason that names no
// URL, host, header or body, so it is safe to publish in /health.
// The checks go from the most specific to the most general.
func describeErr(err error, timeout time.Duration) string {
	var netErr net.Error
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var recErr tls.RecordHeaderError
	var unkAuth x509.UnknownAuthorityError
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return "timeout after " + timeout.String()
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.As(err, &dnsErr):
		return "dns lookup failed"
	case errors.As(err, &certErr), errors.As(err, &recErr),
		errors.As(err, &unkAuth):
		return "tls error"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	default:
		return "request failed"
	}
}
