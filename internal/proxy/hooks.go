package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/zimmer"
)

// Field names the hook templates may use.
const (
	FieldUserAutomationID = "user_automation_id"
	FieldUserID           = "user_id"
	FieldBotToken         = "bot_token"
	FieldDemoTokens       = "demo_tokens"
)

// The fields each call offers; naming another is a compile error.
var (
	provisionFields = []string{
		FieldUserAutomationID, FieldUserID, FieldBotToken, FieldDemoTokens,
	}
	kbStatusFields = []string{FieldUserAutomationID, FieldUserID}
	kbResetFields  = []string{FieldUserAutomationID}
)

// Call is one request to the app.
type Call struct {
	Method string // an HTTP method, any case
	// Path is a URL template relative to the app URL: "/t/{user_id}/docs",
	// optionally with a query ("/docs?t={user_id}"). Path values are
	// path-escaped and must not be empty, null, "." or "..".
	Path string
	// Body is a JSON body template (see BodyTemplate); nil sends no body.
	Body map[string]any
}

// ParseCall parses "METHOD /path" (the TOML call string) into a Call
// without a body.
func ParseCall(s string) (Call, error) {
	method, p, ok := strings.Cut(strings.TrimSpace(s), " ")
	p = strings.TrimSpace(p)
	if !ok || method == "" || p == "" {
		return Call{}, fmt.Errorf("call %q: want \"METHOD /path\"", s)
	}
	return Call{Method: method, Path: p}, nil
}

// StatusError is an app call answered with a status other than 2xx. It
// holds no part of the app's answer.
type StatusError struct {
	Op     string // "provision", "kb status" or "kb reset"
	Status int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s: app answered %d", e.Op, e.Status)
}

// Is makes a KB call the app answered 404 match zimmer.ErrNotFound, so the
// platform gets a 404 for an account the app does not know rather than a
// 502. A provision hook's 404 stays an app failure.
func (e *StatusError) Is(target error) bool {
	return target == zimmer.ErrNotFound && e.Status == http.StatusNotFound &&
		e.Op != "provision"
}

// errNoReset: KB reset was called but none is configured.
var errNoReset = errors.New("kb reset: not configured")

// compiledCall is a Call ready to render.
type compiledCall struct {
	op     string
	method string
	url    *urlTemplate
	body   *BodyTemplate
}

// compileCall compiles c for op with the fields names offers.
func compileCall(op string, c Call, names []string) (*compiledCall, error) {
	m := strings.ToUpper(c.Method)
	if m == "" || strings.ContainsAny(m, " \t\r\n") {
		return nil, fmt.Errorf("%s: bad method %q", op, c.Method)
	}
	u, err := compileURLTemplate(c.Path, names)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	cc := &compiledCall{op: op, method: m, url: u}
	if c.Body != nil {
		if cc.body, err = CompileBody(c.Body, names); err != nil {
			return nil, fmt.Errorf("%s: body: %w", op, err)
		}
	}
	return cc, nil
}

// call sends one hook request and returns the app's answer body (up to
// the answer limit) when keep is set. Errors never quote the app's answer
// or the request URL (a path may carry a bot token).
func (p *Proxy) call(ctx context.Context, cc *compiledCall, v Values,
	keep bool) ([]byte, error) {
	req, err := p.newHookRequest(ctx, cc, v)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s: call app: %w", cc.op, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// Drain a little so the connection can be reused.
		_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
		return nil, &StatusError{Op: cc.op, Status: resp.StatusCode}
	}
	if !keep {
		_, _ = io.CopyN(io.Discard, resp.Body, p.answerLimit)
		return nil, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, p.answerLimit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: read answer: %w", cc.op, err)
	}
	if int64(len(body)) > p.answerLimit {
		return nil, fmt.Errorf("%s: answer over %d bytes", cc.op, p.answerLimit)
	}
	return body, nil
}

// newHookRequest renders the call into a request to the app.
func (p *Proxy) newHookRequest(ctx context.Context, cc *compiledCall,
	v Values) (*http.Request, error) {
	target, err := cc.url.render(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cc.op, err)
	}
	u := *p.target
	base := strings.TrimSuffix(p.target.Path, "/")
	u.Path = base + target.path
	u.RawPath = strings.TrimSuffix(p.target.EscapedPath(), "/") + target.rawPath
	u.RawQuery = target.rawQuery

	var body io.Reader
	if cc.body != nil {
		b, err := cc.body.Render(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cc.op, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, cc.method, u.String(), body)
	if err != nil {
		// The error would quote the URL, which may carry a bot token.
		return nil, fmt.Errorf("%s: build request: bad method or URL", cc.op)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if p.requestID != nil {
		if id := p.requestID(ctx); id != "" {
			req.Header.Set(RequestIDHeader, id)
		}
	}
	return req, nil
}

// ProvisionOptions configure the provision hook.
type ProvisionOptions struct {
	Call Call
	// ServiceURL, when configured, takes service_url from the app's JSON
	// answer. Missing or null leaves the sidecar's default; a value that
	// is not an absolute http(s) URL fails the provisioning.
	ServiceURL Field
	// IntegrationStatus, when configured, takes integration_status
	// ("active", "pending" or "failed") from the answer; any other value
	// fails the provisioning.
	IntegrationStatus Field
	// Message, when configured, takes the answer's message text.
	Message Field
}

// ProvisionHook calls the app when an account is provisioned. It
// implements zimmer.ProvisionHook and is safe for concurrent use.
type ProvisionHook struct {
	p          *Proxy
	call       *compiledCall
	serviceURL *Extractor // nil: not configured
	status     *Extractor // nil: not configured
	message    *Extractor // nil: not configured
}

var _ zimmer.ProvisionHook = (*ProvisionHook)(nil)

// NewProvisionHook compiles o into a hook that calls the app through p's
// transport. Templates may name user_automation_id, user_id, bot_token
// and demo_tokens; bot_token and demo_tokens are null when absent.
func (p *Proxy) NewProvisionHook(o ProvisionOptions) (*ProvisionHook, error) {
	cc, err := compileCall("provision", o.Call, provisionFields)
	if err != nil {
		return nil, err
	}
	h := &ProvisionHook{p: p, call: cc}
	if !o.ServiceURL.IsZero() {
		if h.serviceURL, err = CompileField(o.ServiceURL); err != nil {
			return nil, fmt.Errorf("provision: service_url: %w", err)
		}
	}
	if !o.IntegrationStatus.IsZero() {
		if h.status, err = CompileField(o.IntegrationStatus); err != nil {
			return nil, fmt.Errorf("provision: integration_status: %w", err)
		}
	}
	if !o.Message.IsZero() {
		if h.message, err = CompileField(o.Message); err != nil {
			return nil, fmt.Errorf("provision: message: %w", err)
		}
	}
	return h, nil
}

// wantsAnswer reports whether any answer field is extracted.
func (h *ProvisionHook) wantsAnswer() bool {
	return h.serviceURL != nil || h.status != nil || h.message != nil
}

// Provision calls the app. Any transport error or non-2xx answer is an
// error; the reply carries only what the answer supplied.
func (h *ProvisionHook) Provision(ctx context.Context,
	c zimmer.ProvisionCall) (zimmer.ProvisionReply, error) {
	v := Values{
		FieldUserAutomationID: c.UserAutomationID,
		FieldUserID:           c.UserID,
		FieldBotToken:         nil,
		FieldDemoTokens:       nil,
	}
	if c.BotToken != nil {
		v[FieldBotToken] = *c.BotToken
	}
	if c.DemoTokens != nil {
		v[FieldDemoTokens] = *c.DemoTokens
	}
	body, err := h.p.call(ctx, h.call, v, h.wantsAnswer())
	if err != nil {
		return zimmer.ProvisionReply{}, err
	}
	if !h.wantsAnswer() || len(bytes.TrimSpace(body)) == 0 {
		return zimmer.ProvisionReply{}, nil
	}
	doc, err := DecodeJSON(body)
	if err != nil {
		return zimmer.ProvisionReply{}, fmt.Errorf("provision: answer: %w", err)
	}
	return h.reply(doc)
}

// reply extracts the configured answer fields from the app's JSON.
func (h *ProvisionHook) reply(doc any) (zimmer.ProvisionReply, error) {
	var out zimmer.ProvisionReply
	if s, ok, err := extractString(h.serviceURL, doc); err != nil {
		return out, fmt.Errorf("provision: service_url: %w", err)
	} else if ok {
		if err := checkServiceURL(s); err != nil {
			return out, fmt.Errorf("provision: service_url: %w", err)
		}
		out.ServiceURL = s
	}
	if s, ok, err := extractString(h.status, doc); err != nil {
		return out, fmt.Errorf("provision: integration_status: %w", err)
	} else if ok {
		switch s {
		case zimmer.IntegrationActive, zimmer.IntegrationPending, zimmer.IntegrationFailed:
			out.IntegrationStatus = s
		default:
			return out, errors.New("provision: integration_status: " +
				"want active, pending or failed")
		}
	}
	if s, ok, err := extractString(h.message, doc); err != nil {
		return out, fmt.Errorf("provision: message: %w", err)
	} else if ok {
		out.Message = s
	}
	return out, nil
}

// extractString applies x (nil: not configured) to doc as a string.
func extractString(x *Extractor, doc any) (string, bool, error) {
	if x == nil {
		return "", false, nil
	}
	raw, ok := x.Extract(doc)
	if !ok {
		return "", false, nil
	}
	s, err := ToString(raw)
	if err != nil {
		return "", false, err
	}
	return s, true, nil
}

// checkServiceURL accepts an absolute http or https URL.
func checkServiceURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("not an absolute http(s) URL")
	}
	return nil
}

// KBOptions configure the KB backend.
type KBOptions struct {
	// Status is the app call answering KB status; templates may name
	// user_automation_id and user_id.
	Status Call
	// TotalDocuments is required; a missing or null value without a
	// default fails the status call.
	TotalDocuments Field
	// LastUpdated: ISO 8601 or unix seconds; missing leaves the zero time.
	LastUpdated Field
	// State must end as one of the zimmer.KB* values after its map. Not
	// configured: "ready" when there are documents, else "empty". Missing
	// without a default fails the call. A value that is not a KB state
	// becomes "error" with an error_logs line naming it: the app did
	// answer, and the platform shows error_logs to the operator.
	State Field
	// ErrorLogs (a list or one string) and BackupStatus (a boolean) are
	// optional; missing means none and false.
	ErrorLogs    Field
	BackupStatus Field
	// Reset, when not nil, empties one account's KB; templates may name
	// user_automation_id.
	Reset *Call
}

// KBBackend answers KB status and reset from the app. It implements
// zimmer.KBBackend and is safe for concurrent use.
type KBBackend struct {
	p      *Proxy
	status *compiledCall
	reset  *compiledCall // nil: no reset
	total  *Extractor
	last   *Extractor // nil: not configured
	state  *Extractor // nil: derived from total
	logs   *Extractor // nil: not configured
	backup *Extractor // nil: not configured
}

var _ zimmer.KBBackend = (*KBBackend)(nil)

// NewKBBackend compiles o into a backend calling the app through p's
// transport.
func (p *Proxy) NewKBBackend(o KBOptions) (*KBBackend, error) {
	kb := &KBBackend{p: p}
	var err error
	if kb.status, err = compileCall("kb status", o.Status, kbStatusFields); err != nil {
		return nil, err
	}
	if o.TotalDocuments.IsZero() {
		return nil, errors.New("kb status: total_documents is required")
	}
	fields := []struct {
		name string
		f    Field
		dst  **Extractor
	}{
		{"total_documents", o.TotalDocuments, &kb.total},
		{"last_updated", o.LastUpdated, &kb.last},
		{"state", o.State, &kb.state},
		{"error_logs", o.ErrorLogs, &kb.logs},
		{"backup_status", o.BackupStatus, &kb.backup},
	}
	for _, fd := range fields {
		if fd.f.IsZero() {
			continue
		}
		if *fd.dst, err = CompileField(fd.f); err != nil {
			return nil, fmt.Errorf("kb status: %s: %w", fd.name, err)
		}
	}
	if o.Reset != nil {
		if kb.reset, err = compileCall("kb reset", *o.Reset, kbResetFields); err != nil {
			return nil, err
		}
	}
	return kb, nil
}

// Status calls the app and maps its answer into a KBInfo.
func (kb *KBBackend) Status(ctx context.Context,
	userAutomationID, userID int64) (zimmer.KBInfo, error) {
	body, err := kb.p.call(ctx, kb.status, Values{
		FieldUserAutomationID: userAutomationID,
		FieldUserID:           userID,
	}, true)
	if err != nil {
		return zimmer.KBInfo{}, err
	}
	doc, err := DecodeJSON(body)
	if err != nil {
		return zimmer.KBInfo{}, fmt.Errorf("kb status: answer: %w", err)
	}
	info, err := kb.extract(doc)
	if err != nil {
		return zimmer.KBInfo{}, fmt.Errorf("kb status: %w", err)
	}
	return info, nil
}

// extract maps a decoded answer, field by field.
func (kb *KBBackend) extract(doc any) (zimmer.KBInfo, error) {
	var info zimmer.KBInfo
	raw, ok := kb.total.Extract(doc)
	if !ok {
		return info, errors.New("total_documents: missing in answer")
	}
	n, err := ToInt64(raw)
	if err != nil || n < 0 {
		return info, fmt.Errorf("total_documents: %w", errConvert)
	}
	info.TotalDocuments = n

	if raw, ok := extractOpt(kb.last, doc); ok {
		if info.LastUpdated, err = ToTime(raw); err != nil {
			return info, fmt.Errorf("last_updated: %w", err)
		}
	}
	if raw, ok := extractOpt(kb.logs, doc); ok {
		if info.ErrorLogs, err = ToStrings(raw); err != nil {
			return info, fmt.Errorf("error_logs: %w", err)
		}
	}
	if raw, ok := extractOpt(kb.backup, doc); ok {
		if info.BackupStatus, err = ToBool(raw); err != nil {
			return info, fmt.Errorf("backup_status: %w", err)
		}
	}
	return info, kb.extractState(doc, &info)
}

// extractOpt extracts with a possibly unconfigured extractor.
func extractOpt(e *Extractor, doc any) (any, bool) {
	if e == nil {
		return nil, false
	}
	return e.Extract(doc)
}

// extractState sets info.State, deriving it when not configured.
func (kb *KBBackend) extractState(doc any, info *zimmer.KBInfo) error {
	if kb.state == nil {
		info.State = zimmer.KBEmpty
		if info.TotalDocuments > 0 {
			info.State = zimmer.KBReady
		}
		return nil
	}
	raw, ok := kb.state.Extract(doc)
	if !ok {
		return errors.New("state: missing in answer")
	}
	s, err := ToString(raw)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	switch s {
	case zimmer.KBEmpty, zimmer.KBReady, zimmer.KBProcessing, zimmer.KBError:
		info.State = s
	default:
		info.State = zimmer.KBError
		info.ErrorLogs = append(info.ErrorLogs,
			"app reported an unrecognised KB state "+quoteShort(s))
	}
	return nil
}

// quoteShort quotes at most 64 bytes of s for a message.
func quoteShort(s string) string {
	if len(s) > 64 {
		s = s[:64]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		return strconv.Quote(s) + "..."
	}
	return strconv.Quote(s)
}

// Reset calls the app's reset. Without a configured reset it returns an
// error; callers check SupportsReset first.
func (kb *KBBackend) Reset(ctx context.Context, userAutomationID int64) error {
	if kb.reset == nil {
		return errNoReset
	}
	v := Values{FieldUserAutomationID: userAutomationID}
	_, err := kb.p.call(ctx, kb.reset, v, false)
	return err
}

// SupportsReset reports whether a reset call is configured.
func (kb *KBBackend) SupportsReset() bool { return kb.reset != nil }
