package check

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// TokenHeader carries the service token.
const TokenHeader = "X-Zimmer-Service-Token"

// maxAnswer bounds how much of an answer is read.
const maxAnswer = 1 << 20

// userAgent names the checker in the automation's access log.
const userAgent = "zimmer-sidecar-check/1"

// tokenMode says which token a call sends.
type tokenMode int

const (
	noToken tokenMode = iota
	validToken
	wrongToken
)

// call is one request of a check.
type call struct {
	endpoint Endpoint
	check    string
	method   string
	url      string
	body     any // nil: no body; a []byte is sent as it is
	token    tokenMode
}

// answer is a fully read response, or the error that stood in its way.
type answer struct {
	status  int
	header  http.Header
	body    []byte
	elapsed time.Duration
	err     error
}

// runner holds one Run's state. It is used by one goroutine.
type runner struct {
	urls    map[Endpoint]string
	token   string
	wrong   string // a random token that is not Token
	uaid    int64
	uid     int64
	kb      KBMode
	client  *http.Client
	budgets Budgets
	now     func() time.Time
	report  *Report

	// Learned along the way.
	kbPresent     bool
	supportsReset *bool
}

func newRunner(opts Options) (*runner, error) {
	if opts.Token == "" {
		return nil, fmt.Errorf("%w: no service token", ErrOptions)
	}
	if opts.UserAutomationID < 0 || opts.UserID < 0 {
		return nil, fmt.Errorf("%w: test account ids must be positive", ErrOptions)
	}
	urls, err := resolveURLs(opts)
	if err != nil {
		return nil, err
	}
	if opts.KB == KBRequire && urls[KBStatus] == "" {
		return nil, fmt.Errorf("%w: KB required but no base URL and no KB status URL",
			ErrOptions)
	}
	r := &runner{
		urls:    urls,
		token:   opts.Token,
		wrong:   randomToken(opts.Token),
		uaid:    orDefault(opts.UserAutomationID),
		uid:     orDefault(opts.UserID),
		kb:      opts.KB,
		client:  noRedirect(opts.HTTPClient),
		budgets: opts.Budgets.withDefaults(),
		now:     opts.Now,
	}
	if r.now == nil {
		r.now = time.Now
	}
	r.report = &Report{
		Version:          1,
		UserAutomationID: r.uaid,
		UserID:           r.uid,
		Endpoints:        urls,
		Results:          []Result{},
	}
	return r, nil
}

func orDefault(id int64) int64 {
	if id == 0 {
		return DefaultTestID
	}
	return id
}

// randomToken returns 64 random hex characters that differ from token.
func randomToken(token string) string {
	for {
		var b [32]byte
		_, _ = rand.Read(b[:])
		if s := hex.EncodeToString(b[:]); s != token {
			return s
		}
	}
}

// noRedirect returns a copy of c (or a new client when nil) that returns
// every redirect as the answer. A new client has its own transport with
// no proxy, so calls go only to the URLs given.
func noRedirect(c *http.Client) *http.Client {
	var out http.Client
	if c != nil {
		out = *c
	} else {
		out.Transport = &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: 0, // the call's deadline bounds it
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       30 * time.Second,
			ForceAttemptHTTP2:     true,
		}
	}
	out.CheckRedirect = func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}
	return &out
}

// do sends c with the endpoint's budget as its deadline and reads the
// whole answer, timed with the injected clock.
func (r *runner) do(ctx context.Context, c call) answer {
	ctx, cancel := context.WithTimeout(ctx, r.budgets.of(c.endpoint))
	defer cancel()

	req, err := r.newRequest(ctx, c)
	if err != nil {
		return answer{err: err}
	}
	start := r.now()
	resp, err := r.client.Do(req)
	if err != nil {
		return answer{err: r.transportError(ctx, err), elapsed: r.now().Sub(start)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	// An answer that echoes the token loses it before any part of it can
	// be quoted (a quote is cut to a prefix, which could hold part of it).
	if r.token != "" {
		body = bytes.ReplaceAll(body, []byte(r.token), []byte("[service token]"))
	}
	a := answer{status: resp.StatusCode, header: resp.Header, body: body,
		elapsed: r.now().Sub(start)}
	if err != nil {
		a.err = fmt.Errorf("read answer: %w", r.transportError(ctx, err))
	}
	return a
}

func (r *runner) newRequest(ctx context.Context, c call) (*http.Request, error) {
	var body io.Reader
	switch b := c.body.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("encode body: %w", err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, c.url, body)
	if err != nil {
		return nil, fmt.Errorf("new request: %w", err)
	}
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch c.token {
	case validToken:
		req.Header.Set(TokenHeader, r.token)
	case wrongToken:
		req.Header.Set(TokenHeader, r.wrong)
	}
	return req, nil
}

// transportError shortens a client error to its cause: a deadline is
// named as the budget it ran out of.
func (r *runner) transportError(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return errors.New("no answer within the budget")
	}
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err // drop the "Post \"url\":" prefix: the row names the URL
	}
	return err
}

// verdict collects what one call showed.
type verdict struct {
	fails, warns, notes []string
}

func (v *verdict) fail(format string, args ...any) {
	v.fails = append(v.fails, fmt.Sprintf(format, args...))
}

func (v *verdict) warn(format string, args ...any) {
	v.warns = append(v.warns, fmt.Sprintf(format, args...))
}

func (v *verdict) note(format string, args ...any) {
	v.notes = append(v.notes, fmt.Sprintf(format, args...))
}

func (v *verdict) failed() bool { return len(v.fails) > 0 }

// status and reason of the verdict: failures first, then warnings, then
// notes.
func (v *verdict) outcome() (Status, string) {
	all := append(append(append([]string{}, v.fails...), v.warns...), v.notes...)
	reason := strings.Join(all, "; ")
	switch {
	case len(v.fails) > 0:
		return StatusFail, reason
	case len(v.warns) > 0:
		return StatusWarn, reason
	default:
		return StatusOK, reason
	}
}

// exchange sends c, applies the checks every call shares (an answer, no
// redirect, inside the budget) and then eval, unless the call got no
// answer or was redirected. It records the row and returns the answer.
func (r *runner) exchange(ctx context.Context, c call,
	eval func(a answer, v *verdict)) answer {
	a := r.do(ctx, c)
	var v verdict
	budget := r.budgets.of(c.endpoint)
	switch {
	case a.err != nil && a.status == 0:
		v.fail("no answer: %v", a.err)
	case a.err != nil:
		v.fail("answer cut short: %v", a.err)
	case a.status >= 300 && a.status < 400:
		v.fail("redirects (%d to %q): the platform never follows redirects",
			a.status, a.header.Get("Location"))
	default:
		eval(a, &v)
	}
	if a.err == nil && a.elapsed > budget {
		v.fail("took %s, over the %s budget", a.elapsed.Round(time.Millisecond), budget)
	}
	r.record(c, a, &v)
	return a
}

// record appends the row for c, with the token cut from its reason.
func (r *runner) record(c call, a answer, v *verdict) {
	status, reason := v.outcome()
	r.report.Results = append(r.report.Results, Result{
		Endpoint:   c.endpoint,
		Check:      c.check,
		Method:     c.method,
		URL:        c.url,
		Status:     status,
		HTTPStatus: a.status,
		Duration:   a.elapsed,
		Budget:     r.budgets.of(c.endpoint),
		Reason:     r.redact(reason),
	})
}

// skip records a row that was not run and why.
func (r *runner) skip(ep Endpoint, check, why string) {
	r.report.Results = append(r.report.Results, Result{
		Endpoint: ep, Check: check, Status: StatusSkip, Reason: why,
	})
}

// redact cuts the service token out of s.
func (r *runner) redact(s string) string {
	return strings.ReplaceAll(s, r.token, "[service token]")
}

// snippet shows the start of a body in a reason: valid UTF-8, quoted,
// at most 120 bytes.
func snippet(body []byte) string {
	const limit = 120
	s := strings.ToValidUTF8(string(bytes.TrimSpace(body)), "\uFFFD")
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return fmt.Sprintf("%q", s)
}
