package e2etest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/health"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/zimmer"
)

// TokenHeader is the header the platform sends the service token in.
const TokenHeader = "X-Zimmer-Service-Token"

// maxAnswer bounds how much of an answer the client reads.
const maxAnswer = 4 << 20

// Platform plays the Zimmer platform (and bot users) against a sidecar's
// public listener: it never follows redirects, as the platform's client
// does not, and it sends the service token only when asked to.
type Platform struct {
	Base  string // e.g. "http://127.0.0.1:1234"
	Token string // the service token
	HTTP  *http.Client
}

// NewPlatform returns a client of base whose HTTP client never follows a
// redirect (a 3xx comes back as the answer) and gives up after 30 s.
func NewPlatform(base, token string) *Platform {
	return &Platform{Base: base, Token: token, HTTP: NoRedirectClient()}
}

// NoRedirectClient returns an HTTP client with its own transport that
// returns every redirect as the answer instead of following it.
func NoRedirectClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return &http.Client{
		Transport: tr,
		Timeout:   30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Request is one call. Body, when not nil, is sent as JSON; RawBody is
// sent as it is.
type Request struct {
	Method  string
	Path    string // with query, appended to Base
	Header  http.Header
	Body    any
	RawBody string
	// WithToken sends the service token in its header.
	WithToken bool
}

// Response is a fully read answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// String shows the status and body, for failure messages.
func (r *Response) String() string {
	if r == nil {
		return "<no answer>"
	}
	return fmt.Sprintf("%d %s", r.Status, bytes.TrimSpace(r.Body))
}

// JSON decodes the body into v.
func (r *Response) JSON(v any) error {
	if err := json.Unmarshal(r.Body, v); err != nil {
		return fmt.Errorf("decode %q: %w", r.Body, err)
	}
	return nil
}

// Detail returns the "detail" field of a JSON error body, or "".
func (r *Response) Detail() string {
	var e zimmer.ErrorAnswer
	_ = json.Unmarshal(r.Body, &e)
	return e.Detail
}

// Do sends req and reads the whole answer.
func (p *Platform) Do(ctx context.Context, req Request) (*Response, error) {
	var body io.Reader
	switch {
	case req.Body != nil:
		b, err := json.Marshal(req.Body)
		if err != nil {
			return nil, fmt.Errorf("encode body: %w", err)
		}
		body = bytes.NewReader(b)
	case req.RawBody != "":
		body = strings.NewReader(req.RawBody)
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, p.Base+req.Path, body)
	if err != nil {
		return nil, fmt.Errorf("new request: %w", err)
	}
	for k, vs := range req.Header {
		hr.Header[k] = vs // as given: a test may spell names oddly
	}
	if body != nil && hr.Header.Get("Content-Type") == "" {
		hr.Header.Set("Content-Type", "application/json")
	}
	if req.WithToken {
		hr.Header.Set(TokenHeader, p.Token)
	}
	resp, err := p.HTTP.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", req.Method, req.Path, err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// Health gets path (a /health URL path) without a token, as the platform
// does, and returns the answer with the platform classifier's verdict.
func (p *Platform) Health(ctx context.Context, path string) (*Response, string, error) {
	r, err := p.Do(ctx, Request{Method: http.MethodGet, Path: path})
	if err != nil {
		return nil, "", err
	}
	return r, health.Classify(r.Status, r.Body), nil
}

// ProvisionBody is what the platform posts to provision. Fields are any
// so a test can send numeric strings or nulls.
type ProvisionBody struct {
	UserAutomationID any `json:"user_automation_id"`
	UserID           any `json:"user_id"`
	BotToken         any `json:"bot_token"`
	DemoTokens       any `json:"demo_tokens"`
}

// Provision posts body to path with the token; the answer is decoded when
// the status is 200.
func (p *Platform) Provision(ctx context.Context, path string, body ProvisionBody) (
	*Response, zimmer.ProvisionAnswer, error) {
	var a zimmer.ProvisionAnswer
	r, err := p.call(ctx, path, body, nil, &a)
	return r, a, err
}

// ConsumeBody is the guide's usage consume request.
type ConsumeBody struct {
	UserAutomationID int64  `json:"user_automation_id"`
	Units            int64  `json:"units"`
	UsageType        string `json:"usage_type"`
}

// Consume posts body to path with the token and, when key is not empty,
// an Idempotency-Key; the answer is decoded when the status is 200.
func (p *Platform) Consume(ctx context.Context, path string, body ConsumeBody, key string) (
	*Response, zimmer.ConsumeAnswer, error) {
	var h http.Header
	if key != "" {
		h = http.Header{"Idempotency-Key": {key}}
	}
	var a zimmer.ConsumeAnswer
	r, err := p.call(ctx, path, body, h, &a)
	return r, a, err
}

// KBStatusGET asks in the guide's dialect: GET ?user_automation_id=N.
func (p *Platform) KBStatusGET(ctx context.Context, path string, id int64) (
	*Response, zimmer.KBStatusAnswer, error) {
	var a zimmer.KBStatusAnswer
	r, err := p.Do(ctx, Request{Method: http.MethodGet,
		Path: fmt.Sprintf("%s?user_automation_id=%d", path, id), WithToken: true})
	if err == nil && r.Status == http.StatusOK {
		err = r.JSON(&a)
	}
	return r, a, err
}

// KBStatusPOST asks in the platform's dialect: POST {user_id,
// user_automation_id}.
func (p *Platform) KBStatusPOST(ctx context.Context, path string, userID, id int64) (
	*Response, zimmer.KBStatusAnswer, error) {
	var a zimmer.KBStatusAnswer
	body := map[string]int64{"user_id": userID, "user_automation_id": id}
	r, err := p.call(ctx, path, body, nil, &a)
	return r, a, err
}

// KBReset posts {user_automation_id} to path, as the platform does.
func (p *Platform) KBReset(ctx context.Context, path string, id int64) (
	*Response, zimmer.KBResetAnswer, error) {
	var a zimmer.KBResetAnswer
	r, err := p.call(ctx, path, map[string]int64{"user_automation_id": id}, nil, &a)
	return r, a, err
}

// call posts body with the token and decodes a 200 answer into out.
func (p *Platform) call(ctx context.Context, path string, body any, h http.Header,
	out any) (*Response, error) {
	r, err := p.Do(ctx, Request{Method: http.MethodPost, Path: path, Body: body,
		Header: h, WithToken: true})
	if err == nil && r.Status == http.StatusOK {
		err = r.JSON(out)
	}
	return r, err
}
