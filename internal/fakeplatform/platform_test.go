package fakeplatform

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	automation = 7
	token      = "c0ffee0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
)

// clock is an injected clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is a seeded platform on a loopback server.
type env struct {
	p   *Platform
	srv *httptest.Server
	clk *clock
}

func newEnv(t *testing.T) *env {
	t.Helper()
	clk := &clock{t: time.Date(2025, 3, 14, 10, 0, 0, 0, time.UTC)}
	p := New(Options{Now: clk.Now, LeaseTTL: 5 * time.Minute})
	p.AddAutomation(automation, token)
	p.AddAutomation(8, "other-token")
	srv := httptest.NewServer(p.Handler())
	t.Cleanup(srv.Close)
	return &env{p: p, srv: srv, clk: clk}
}

// post sends body with tok (none when empty) and decodes a JSON answer.
func (e *env) post(t *testing.T, path, tok, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("X-Zimmer-Service-Token", tok)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("POST %s: answer %q is not a JSON object", path, raw)
	}
	return resp.StatusCode, m
}

const (
	leasePath   = "/api/automations/7/openai-key"
	reportPath  = "/api/automations/7/openai-usage"
	consumePath = "/api/automation-usage/consume"
)

func TestTokenOnEveryEndpoint(t *testing.T) {
	e := newEnv(t)
	e.p.AddAccount(Account{UserAutomationID: 1, AutomationID: automation, PaidTokens: 10})
	consume := `{"user_automation_id":1,"units":1,"usage_type":"chat"}`
	tests := []struct {
		name, path, tok, body string
		want                  int
		detail                string
	}{
		{"lease, none", leasePath, "", `{}`, 401, "Missing service token"},
		{"lease, wrong", leasePath, "x", `{}`, 401, "Invalid service token"},
		{"lease, other automation's", leasePath, "other-token", `{}`, 401, "Invalid service token"},
		{"lease, unknown automation", "/api/automations/99/openai-key", "x", `{}`, 404,
			"Automation not found"},
		{"report, none", reportPath, "", `{"key_id":1,"tokens_used":1}`, 401,
			"Missing service token"},
		{"report, wrong", reportPath, "x", `{"key_id":1,"tokens_used":1}`, 401,
			"Invalid service token"},
		{"consume, none", consumePath, "", consume, 401, "Missing service token"},
		{"consume, wrong", consumePath, "x", consume, 401, "Invalid service token"},
		// As the platform: the account is looked up before the token.
		{"consume, wrong, unknown account", consumePath, "x",
			`{"user_automation_id":2,"units":1,"usage_type":"chat"}`, 404,
			"User automation not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, m := e.post(t, tt.path, tt.tok, tt.body)
			if status != tt.want || m["detail"] != tt.detail {
				t.Fatalf("got %d %v, want %d %q", status, m, tt.want, tt.detail)
			}
		})
	}
	if a, _ := e.p.Account(1); a.PaidTokens != 10 || len(e.p.Consumes()) != 0 {
		t.Fatalf("refused calls changed the ledger: %+v", a)
	}
}

func TestMethodAndPath(t *testing.T) {
	e := newEnv(t)
	resp, err := e.srv.Client().Get(e.srv.URL + consumePath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
		t.Fatalf("GET: got %d Allow %q, want 405 Allow POST",
			resp.StatusCode, resp.Header.Get("Allow"))
	}
	if status, _ := e.post(t, "/api/nothing", token, `{}`); status != 404 {
		t.Fatalf("unknown path: got %d, want 404", status)
	}
	if status, m := e.post(t, "/api/automations/x/openai-key", token, `{}`); status != 422 {
		t.Fatalf("non-integer id: got %d %v, want 422", status, m)
	}
}

func TestConsumeDialects(t *testing.T) {
	tests := []struct {
		name string
		body string
		want int
	}{
		{"guide", `{"user_automation_id":1,"units":2,"usage_type":"chat","meta":{"a":1}}`, 200},
		{"numeric strings", `{"user_automation_id":"1","units":" 2 ","usage_type":"chat"}`, 200},
		{"integral float", `{"user_automation_id":1.0,"units":2,"usage_type":"chat"}`, 200},
		{"null meta, unknown field", `{"user_automation_id":1,"units":2,"usage_type":"c",` +
			`"meta":null,"session_id":"s"}`, 200},
		{"fraction", `{"user_automation_id":1,"units":2.5,"usage_type":"chat"}`, 422},
		{"fraction in a string", `{"user_automation_id":1,"units":"2.0","usage_type":"chat"}`, 422},
		{"number as usage_type", `{"user_automation_id":1,"units":2,"usage_type":5}`, 422},
		{"older dialect", `{"user_automation_id":1,"tokens_consumed":2,"action":"chat"}`, 422},
		{"meta not an object",
			`{"user_automation_id":1,"units":2,"usage_type":"c","meta":[]}`, 422},
		{"array", `[1]`, 422},
		{"null", `null`, 422},
		{"not json", `{"user_automation_id":`, 422},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.p.AddAccount(Account{UserAutomationID: 1, AutomationID: automation, PaidTokens: 10})
			status, m := e.post(t, consumePath, token, tt.body)
			if status != tt.want {
				t.Fatalf("got %d %v, want %d", status, m, tt.want)
			}
			a, _ := e.p.Account(1)
			if tt.want == 422 {
				if _, isList := m["detail"].([]any); !isList || a.PaidTokens != 10 {
					t.Fatalf("got %v, balance %d; want a detail list, balance untouched",
						m, a.PaidTokens)
				}
				return
			}
			if a.PaidTokens != 8 || m["accepted"] != true || m["remaining_paid_tokens"] != 8.0 {
				t.Fatalf("got %v, balance %d; want accepted, 8 left", m, a.PaidTokens)
			}
		})
	}
}

func TestConsumeDemoRule(t *testing.T) {
	e := newEnv(t)
	e.p.AddAccount(Account{UserAutomationID: 1, AutomationID: automation,
		DemoTokens: 5, DemoActive: true, PaidTokens: 100})
	steps := []struct {
		units      int
		accepted   bool
		demo, paid float64
		note       string
	}{
		{3, true, 2, 100, "demo pays"},
		{3, false, 2, 100, "demo must cover the whole request: no spill into paid"},
		{2, true, 0, 100, "demo reaches zero and ends"},
		{3, true, 0, 97, "paid after the demo"},
		{-10, true, 0, 107, "no sign check: negative units credit"},
		{108, false, 0, 107, "insufficient paid"},
		{107, true, 0, 0, "all of it"},
		{1, false, 0, 0, "demo over, nothing paid"},
	}
	for _, s := range steps {
		body := `{"user_automation_id":1,"units":` + itoa(s.units) + `,"usage_type":"chat"}`
		status, m := e.post(t, consumePath, token, body)
		if status != 200 || m["accepted"] != s.accepted || m["remaining_demo_tokens"] != s.demo ||
			m["remaining_paid_tokens"] != s.paid || m["message"] == "" {
			t.Fatalf("%s: got %d %v, want accepted=%t demo=%v paid=%v",
				s.note, status, m, s.accepted, s.demo, s.paid)
		}
	}
	a, _ := e.p.Account(1)
	if a.DemoActive || !a.DemoExpired {
		t.Fatalf("account: got %+v, want the demo ended", a)
	}
	if n := len(e.p.Consumes()); n != len(steps) {
		t.Fatalf("consumes recorded: got %d, want %d", n, len(steps))
	}
}

func TestConsumeHasNoIdempotency(t *testing.T) {
	e := newEnv(t)
	e.p.AddAccount(Account{UserAutomationID: 1, AutomationID: automation, PaidTokens: 100})
	body := `{"user_automation_id":1,"units":10,"usage_type":"chat","meta":{"request_id":"r1"}}`

	// The first try is applied, then its answer is lost; the retry is
	// charged again, as on the real platform.
	e.p.SetFault(EndpointConsume, Fault{Status: 500, AfterApply: true, Times: 1})
	if status, _ := e.post(t, consumePath, token, body); status != 500 {
		t.Fatalf("first try: got %d, want the injected 500", status)
	}
	status, m := e.post(t, consumePath, token, body)
	if status != 200 || m["remaining_paid_tokens"] != 80.0 {
		t.Fatalf("retry: got %d %v, want accepted with 80 left", status, m)
	}
	if n := len(e.p.Consumes()); n != 2 {
		t.Fatalf("consumes: got %d, want 2", n)
	}
	if c := e.p.Consumes()[0]; string(c.Meta) != `{"request_id":"r1"}` || c.UsageType != "chat" {
		t.Fatalf("record: got %+v, want the meta and usage type kept", c)
	}
}

func TestLeaseEndpoint(t *testing.T) {
	e := newEnv(t)
	e.p.AddKey(Key{ID: 1, AutomationID: automation, APIKey: "sk-one", RPMLimit: 60,
		DailyTokenLimit: 1000})
	e.p.AddKey(Key{ID: 2, AutomationID: automation, APIKey: "sk-two", Model: "gpt-4o-mini"})
	e.p.AddKey(Key{ID: 3, AutomationID: 8, APIKey: "sk-other"})

	// The guide's answer, for the least-used key; limits as sent.
	status, m := e.post(t, leasePath, token, `{"model":"gpt-4","max_tokens":150}`)
	lim, _ := m["usage_limits"].(map[string]any)
	if status != 200 || m["success"] != true || m["key_id"] != 1.0 || m["api_key"] != "sk-one" ||
		m["model"] != "gpt-4" || m["expires_at"] != "2025-03-14T10:05:00Z" ||
		lim["rpm_limit"] != 60.0 || lim["daily_token_limit"] != 1000.0 {
		t.Fatalf("got %d %v", status, m)
	}

	// Usage reported to key 1 makes key 2 the least used; its limits are
	// null (unlimited) and it answers its own model.
	report := `{"key_id":1,"tokens_used":45,"model":"gpt-4","prompt_tokens":20,` +
		`"completion_tokens":25,"success":true}`
	if status, m := e.post(t, reportPath, token, report); status != 200 || m["success"] != true {
		t.Fatalf("report: got %d %v", status, m)
	}
	_, m = e.post(t, leasePath, token, ``) // the guide's example sends no body
	lim, _ = m["usage_limits"].(map[string]any)
	if m["key_id"] != 2.0 || m["model"] != "gpt-4o-mini" || lim["rpm_limit"] != nil {
		t.Fatalf("second lease: got %v, want key 2 with null limits", m)
	}

	// A disabled key is never leased; none left is success false.
	e.p.SetKeyDisabled(1, true)
	e.p.SetKeyDisabled(2, true)
	status, m = e.post(t, leasePath, token, `{}`)
	if status != 200 || m["success"] != false {
		t.Fatalf("no key: got %d %v, want 200 success false", status, m)
	}
	if recs := e.p.Leases(); len(recs) != 3 || recs[0].MaxTokens != 150 || recs[2].KeyID != 0 {
		t.Fatalf("lease records: got %+v", recs)
	}
}

func TestLeaseHonoursDailyLimitUntilNextDay(t *testing.T) {
	e := newEnv(t)
	e.p.AddKey(Key{ID: 1, AutomationID: automation, APIKey: "sk-one", DailyTokenLimit: 100})
	e.post(t, reportPath, token, `{"key_id":"1","tokens_used":"100"}`)
	if _, m := e.post(t, leasePath, token, `{}`); m["success"] != false {
		t.Fatalf("exhausted key: got %v, want success false", m)
	}
	e.clk.Advance(14 * time.Hour) // past UTC midnight
	if _, m := e.post(t, leasePath, token, `{}`); m["key_id"] != 1.0 {
		t.Fatalf("next day: got %v, want key 1 again", m)
	}
}

func TestReportEndpoint(t *testing.T) {
	e := newEnv(t)
	e.p.AddKey(Key{ID: 1, AutomationID: automation, APIKey: "sk-one"})
	e.p.AddKey(Key{ID: 3, AutomationID: 8, APIKey: "sk-other"})
	tests := []struct {
		name, body string
		want       int
	}{
		{"guide's minimal", `{"key_id":1,"tokens_used":45}`, 200},
		{"full", `{"key_id":1,"tokens_used":45,"model":"gpt-4","prompt_tokens":20,` +
			`"completion_tokens":25,"success":false}`, 200},
		{"another automation's key", `{"key_id":3,"tokens_used":1}`, 404},
		{"unknown key", `{"key_id":99,"tokens_used":1}`, 404},
		{"missing tokens_used", `{"key_id":1}`, 422},
		{"bad success", `{"key_id":1,"tokens_used":1,"success":"maybe"}`, 422},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if status, m := e.post(t, reportPath, token, tt.body); status != tt.want {
				t.Fatalf("got %d %v, want %d", status, m, tt.want)
			}
		})
	}
	reps := e.p.Reports()
	want := UsageReport{AutomationID: automation, KeyID: 1, TokensUsed: 45, Model: "gpt-4",
		PromptTokens: 20, CompletionTokens: 25, Success: false, At: e.clk.Now()}
	if len(reps) != 2 || reps[1] != want || reps[0].Model != "unknown" || !reps[0].Success {
		t.Fatalf("reports: got %+v, want 2, the second %+v", reps, want)
	}
	if n := e.p.KeyTokensToday(1); n != 90 {
		t.Fatalf("key tokens today: got %d, want 90", n)
	}
}

func TestReportIdempotencyKey(t *testing.T) {
	e := newEnv(t)
	e.p.AddKey(Key{ID: 1, AutomationID: automation, APIKey: "sk-one"})
	e.p.AddKey(Key{ID: 2, AutomationID: 8, APIKey: "sk-two"})
	send := func(path, tok, key, body string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(body))
		req.Header.Set("X-Zimmer-Service-Token", tok)
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	const first = `{"key_id":1,"tokens_used":10}`
	const other8 = "/api/automations/8/openai-usage"
	steps := []struct {
		name, path, tok, key, body string
		want                       int
	}{
		{"first", reportPath, token, "k1", first, 200},
		{"repeat", reportPath, token, "k1", first, 200},
		{"repeat with another body", reportPath, token, "k1",
			`{"key_id":1,"tokens_used":99}`, 200},
		{"refused does not take a key", reportPath, token, "k2",
			`{"key_id":42,"tokens_used":1}`, 404},
		{"then the key records", reportPath, token, "k2", `{"key_id":1,"tokens_used":5}`, 200},
		{"wrong token is still refused", reportPath, "nope", "k1", first, 401},
		{"keys are per automation", other8, "other-token", "k1",
			`{"key_id":2,"tokens_used":3}`, 200},
		{"no key: no dedupe", reportPath, token, "", first, 200},
		{"no key again", reportPath, token, "", first, 200},
	}
	for _, s := range steps {
		if got := send(s.path, s.tok, s.key, s.body); got != s.want {
			t.Fatalf("%s: got %d, want %d", s.name, got, s.want)
		}
	}
	var keys []string
	for _, r := range e.p.Reports() {
		keys = append(keys, r.IdempotencyKey)
	}
	if got, want := strings.Join(keys, ","), "k1,k2,k1,,"; got != want {
		t.Fatalf("recorded keys: got %q, want %q", got, want)
	}
	if got := e.p.ReportReplays(); got != 2 {
		t.Fatalf("replays: got %d, want 2", got)
	}
	if got := e.p.KeyTokensToday(1); got != 10+5+10+10 {
		t.Fatalf("key tokens today: got %d, want 35", got)
	}
}

func TestFaults(t *testing.T) {
	report := `{"key_id":1,"tokens_used":5}`
	tests := []struct {
		name        string
		fault       Fault
		wantStatus  int // 0: no answer
		wantApplied bool
	}{
		{"down", Fault{Down: true}, 0, false},
		{"down after applying", Fault{Down: true, AfterApply: true}, 0, true},
		{"500", Fault{Status: 500}, 500, false},
		{"500 after applying", Fault{Status: 500, AfterApply: true}, 500, true},
		{"401", Fault{Status: 401}, 401, false},
		{"slow but answers", Fault{Delay: time.Millisecond}, 200, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.p.AddKey(Key{ID: 1, AutomationID: automation, APIKey: "sk-one"})
			tt.fault.Times = 1
			e.p.SetFault(EndpointReport, tt.fault)

			status, err := rawPost(e, reportPath, report)
			if tt.wantStatus == 0 && err == nil {
				t.Fatalf("got %d, want the connection dropped", status)
			}
			if tt.wantStatus != 0 && (err != nil || status != tt.wantStatus) {
				t.Fatalf("got %d, %v; want %d", status, err, tt.wantStatus)
			}
			if applied := len(e.p.Reports()) == 1; applied != tt.wantApplied {
				t.Fatalf("applied: got %t, want %t", applied, tt.wantApplied)
			}

			// Times: 1 — the next request is served normally.
			if status, err := rawPost(e, reportPath, report); err != nil || status != 200 {
				t.Fatalf("after the fault: got %d, %v; want 200", status, err)
			}
			if n := e.p.Calls(EndpointReport); n != 2 {
				t.Fatalf("calls: got %d, want 2", n)
			}
		})
	}
}

func TestSlowFaultOutlastsTheClient(t *testing.T) {
	e := newEnv(t)
	e.p.AddKey(Key{ID: 1, AutomationID: automation, APIKey: "sk-one"})
	e.p.SetFault(EndpointLease, Fault{Delay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+leasePath,
		strings.NewReader(`{}`))
	req.Header.Set("X-Zimmer-Service-Token", token)
	_, err := e.srv.Client().Do(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the client's deadline", err)
	}
	if n := len(e.p.Leases()); n != 0 {
		t.Fatalf("leases: got %d, want none", n)
	}
}

// rawPost posts with the token and returns the status or the error.
func rawPost(e *env, path, body string) (int, error) {
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, bytes.NewReader([]byte(body)))
	req.Header.Set("X-Zimmer-Service-Token", token)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func FuzzDecodeObject(f *testing.F) {
	f.Add(`{"user_automation_id":"1","units":2.0,"usage_type":"x","meta":{"a":[1]}}`)
	f.Add(`{"key_id":1,"tokens_used":-5,"success":"yes"}`)
	f.Add(`[`)
	f.Add(`{"units":1e400}`)
	f.Fuzz(func(t *testing.T, body string) {
		o, ok := decodeObject([]byte(body))
		if !ok {
			if len(o.errs) == 0 {
				t.Fatal("refused without a reason")
			}
			return
		}
		o.int("units", true, 0)
		o.string("usage_type", false, "")
		o.bool("success", true)
		o.objectField("meta")
		for _, e := range o.errs {
			if e.Type == "" || len(e.Loc) == 0 {
				t.Fatalf("incomplete error %+v", e)
			}
		}
	})
}
