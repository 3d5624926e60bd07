package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/zimmer"
)

// hookApp answers every request with status and body and records it.
func hookApp(t *testing.T, status int, body string) (*Proxy, *recorder) {
	t.Helper()
	rec := &recorder{}
	app := newApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.record(r)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	p, err := New(Options{AppURL: app.URL, RequestID: ctxRequestID, AnswerLimit: 4096})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p, rec
}

func TestProvisionHookBody(t *testing.T) {
	t.Parallel()
	p, rec := hookApp(t, 200, `{"tenant":{"url":"https://app.example/u/42"}}`)
	h, err := p.NewProvisionHook(ProvisionOptions{
		Call: Call{Method: "post", Path: "/internal/tenants/{user_automation_id}",
			Body: map[string]any{
				"tenant": "{user_automation_id}", "owner": "{user_id}",
				"telegram_token": "{bot_token}", "demo": "{demo_tokens}",
				"label": "user {user_id}", "static": int64(3),
			}},
		ServiceURL: Field{From: "tenant.url"},
	})
	if err != nil {
		t.Fatalf("NewProvisionHook: %v", err)
	}
	tok := "123:bot/token"
	ctx := context.WithValue(context.Background(), ctxIDKey{}, "rid-1")
	reply, err := h.Provision(ctx, zimmer.ProvisionCall{
		UserAutomationID: 42, UserID: 7, BotToken: &tok})
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if reply.ServiceURL != "https://app.example/u/42" {
		t.Errorf("ServiceURL: got %q", reply.ServiceURL)
	}
	got := rec.last(t)
	var body map[string]any
	if err := json.Unmarshal([]byte(got.Body), &body); err != nil {
		t.Fatalf("body %q: %v", got.Body, err)
	}
	want := map[string]any{"tenant": 42.0, "owner": 7.0, "telegram_token": tok,
		"demo": nil, "label": "user 7", "static": 3.0}
	if !reflect.DeepEqual(body, want) {
		t.Errorf("body: got %v, want %v", body, want)
	}
	checks := []struct{ name, got, want string }{
		{"method", got.Method, "POST"},
		{"path", got.Path, "/internal/tenants/42"},
		{"content type", got.Header.Get("Content-Type"), "application/json"},
		{"request id", got.Header.Get(RequestIDHeader), "rid-1"},
		{"token", got.Header.Get(TokenHeader), ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestProvisionHookPathEscapesValues(t *testing.T) {
	t.Parallel()
	p, rec := hookApp(t, 204, "")
	h, err := p.NewProvisionHook(ProvisionOptions{
		Call: Call{Method: "PUT", Path: "/bots/{bot_token}?owner={user_id}"},
	})
	if err != nil {
		t.Fatalf("NewProvisionHook: %v", err)
	}
	tok := "a/../b?c"
	if _, err := h.Provision(context.Background(), zimmer.ProvisionCall{
		UserAutomationID: 1, UserID: 2, BotToken: &tok}); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	got := rec.last(t)
	if got.RawPath != "/bots/a%2F..%2Fb%3Fc" || got.RawQuery != "owner=2" {
		t.Errorf("got %q ? %q, want /bots/a%%2F..%%2Fb%%3Fc ? owner=2",
			got.RawPath, got.RawQuery)
	}
	if got.Header.Get("Content-Type") != "" || got.Body != "" {
		t.Errorf("a call without a body template sent %q %q",
			got.Header.Get("Content-Type"), got.Body)
	}

	// A null bot token cannot make an empty path segment.
	_, err = h.Provision(context.Background(), zimmer.ProvisionCall{UserAutomationID: 1})
	if !errors.Is(err, errBadPathValue) {
		t.Errorf("null path value: got %v, want errBadPathValue", err)
	}
}

func TestHookErrorsHideAnswer(t *testing.T) {
	t.Parallel()
	const secretBody = `{"detail":"db password hunter2 leaked"}`
	tests := []struct {
		name       string
		status     int
		body       string
		serviceURL Field
		wantStatus int // for a StatusError, else 0
	}{
		{"500", 500, secretBody, Field{}, 500},
		{"404", 404, secretBody, Field{}, 404},
		{"redirect", 307, secretBody, Field{}, 307},
		{"not json", 200, "hunter2 <html>", Field{From: "url"}, 0},
		{"bad url", 200, `{"url":"hunter2"}`, Field{From: "url"}, 0},
		{"too big", 200, `{"url":"` + strings.Repeat("hunter2", 1000) + `"}`,
			Field{From: "url"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := hookApp(t, tt.status, tt.body)
			h, err := p.NewProvisionHook(ProvisionOptions{
				Call: Call{Method: "POST", Path: "/t"}, ServiceURL: tt.serviceURL})
			if err != nil {
				t.Fatalf("NewProvisionHook: %v", err)
			}
			_, err = h.Provision(context.Background(), zimmer.ProvisionCall{UserAutomationID: 1})
			if err == nil {
				t.Fatal("Provision: got nil error, want one")
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q echoes the app's answer", err)
			}
			var se *StatusError
			gotStatus := 0
			if errors.As(err, &se) {
				gotStatus = se.Status
			}
			if gotStatus != tt.wantStatus {
				t.Errorf("status in error: got %d, want %d (%v)", gotStatus, tt.wantStatus, err)
			}
		})
	}
}

func TestHookTransportErrors(t *testing.T) {
	t.Parallel()
	p, err := New(Options{AppURL: closedURL(t)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h, err := p.NewProvisionHook(ProvisionOptions{
		Call: Call{Method: "POST", Path: "/bots/{bot_token}"}})
	if err != nil {
		t.Fatalf("NewProvisionHook: %v", err)
	}
	tok := "bot-secret-99"
	_, err = h.Provision(context.Background(), zimmer.ProvisionCall{BotToken: &tok})
	if err == nil || strings.Contains(err.Error(), tok) {
		t.Errorf("refused: got %v, want an error without the token", err)
	}

	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	_, err = h.Provision(ctx, zimmer.ProvisionCall{BotToken: &tok})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("expired ctx: got %v, want context.DeadlineExceeded", err)
	}
}

func TestKBStatusExtraction(t *testing.T) {
	t.Parallel()
	stateMap := map[string]any{"idle": "ready", "indexing": "processing", "none": "empty"}
	full := KBOptions{
		Status:         Call{Method: "GET", Path: "/t/{user_automation_id}/docs?u={user_id}"},
		TotalDocuments: Field{From: "summary.count"},
		LastUpdated:    Field{From: "summary.indexed_at"},
		State:          Field{From: "summary.phase", Map: stateMap, Default: "ready"},
		ErrorLogs:      Field{From: "errors"},
		BackupStatus:   Field{From: "backup.ok"},
	}
	at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	tests := []struct {
		name    string
		opts    KBOptions
		answer  string
		want    zimmer.KBInfo
		wantErr bool
	}{
		{"mapped", full, `{"summary":{"count":3,"indexed_at":"2024-05-06T10:08:09+03:00",
			"phase":"indexing"},"errors":["e1"],"backup":{"ok":true}}`,
			zimmer.KBInfo{State: zimmer.KBProcessing, LastUpdated: at, TotalDocuments: 3,
				ErrorLogs: []string{"e1"}, BackupStatus: true}, false},
		{"default state, unix time", full,
			`{"summary":{"count":0,"indexed_at":1714979289}}`,
			zimmer.KBInfo{State: zimmer.KBReady, LastUpdated: at}, false},
		{"naive time", full,
			`{"summary":{"count":1,"indexed_at":"2024-05-06T07:08:09","phase":"none"}}`,
			zimmer.KBInfo{State: zimmer.KBEmpty, LastUpdated: at, TotalDocuments: 1}, false},
		{"unknown state", full, `{"summary":{"count":1,"phase":"weird"}}`,
			zimmer.KBInfo{State: zimmer.KBError, TotalDocuments: 1, ErrorLogs: []string{
				`app reported an unrecognised KB state "weird"`}}, false},
		{"derived state", KBOptions{Status: full.Status,
			TotalDocuments: Field{From: "n"}}, `{"n":2}`,
			zimmer.KBInfo{State: zimmer.KBReady, TotalDocuments: 2}, false},
		{"missing total", full, `{"summary":{}}`, zimmer.KBInfo{}, true},
		{"negative total", full, `{"summary":{"count":-1}}`, zimmer.KBInfo{}, true},
		{"bad time", full, `{"summary":{"count":1,"indexed_at":"soon"}}`,
			zimmer.KBInfo{}, true},
		{"state no default", KBOptions{Status: full.Status,
			TotalDocuments: Field{From: "n"}, State: Field{From: "s"}}, `{"n":1}`,
			zimmer.KBInfo{}, true},
		{"array answer", full, `[1]`, zimmer.KBInfo{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, rec := hookApp(t, 200, tt.answer)
			kb, err := p.NewKBBackend(tt.opts)
			if err != nil {
				t.Fatalf("NewKBBackend: %v", err)
			}
			got, err := kb.Status(context.Background(), 42, 7)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Status: got %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Status: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Status:\n got %+v\nwant %+v", got, tt.want)
			}
			if r := rec.last(t); r.Path != "/t/42/docs" || r.RawQuery != "u=7" {
				t.Errorf("call: got %s?%s, want /t/42/docs?u=7", r.Path, r.RawQuery)
			}
		})
	}
}

func TestKBReset(t *testing.T) {
	t.Parallel()
	p, rec := hookApp(t, 200, `{"ok":true}`)
	kb, err := p.NewKBBackend(KBOptions{
		Status:         Call{Method: "GET", Path: "/s"},
		TotalDocuments: Field{From: "n"},
	})
	if err != nil {
		t.Fatalf("NewKBBackend: %v", err)
	}
	if kb.SupportsReset() || kb.Reset(context.Background(), 1) == nil {
		t.Error("without a reset call: SupportsReset true or Reset succeeded")
	}

	kb, err = p.NewKBBackend(KBOptions{
		Status:         Call{Method: "GET", Path: "/s"},
		TotalDocuments: Field{From: "n"},
		Reset: &Call{Method: "POST", Path: "/t/{user_automation_id}/wipe",
			Body: map[string]any{"id": "{user_automation_id}"}},
	})
	if err != nil {
		t.Fatalf("NewKBBackend: %v", err)
	}
	if !kb.SupportsReset() {
		t.Fatal("SupportsReset: got false, want true")
	}
	if err := kb.Reset(context.Background(), 5); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if r := rec.last(t); r.Method != "POST" || r.Path != "/t/5/wipe" || r.Body != `{"id":5}` {
		t.Errorf("reset call: got %s %s %s", r.Method, r.Path, r.Body)
	}

	failing, _ := hookApp(t, 503, "down")
	kb, err = failing.NewKBBackend(KBOptions{
		Status: Call{Method: "GET", Path: "/s"}, TotalDocuments: Field{From: "n"},
		Reset: &Call{Method: "POST", Path: "/w"}})
	if err != nil {
		t.Fatalf("NewKBBackend: %v", err)
	}
	var se *StatusError
	if err := kb.Reset(context.Background(), 5); !errors.As(err, &se) || se.Status != 503 {
		t.Errorf("Reset on 503: got %v, want a StatusError 503", err)
	}
}

func TestHookCompileErrors(t *testing.T) {
	t.Parallel()
	p, err := New(Options{AppURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	status := Call{Method: "GET", Path: "/s"}
	badKB := []KBOptions{
		{Status: Call{Method: "GET", Path: "/s/{bot_token}"}, TotalDocuments: Field{From: "n"}},
		{Status: status},
		{Status: status, TotalDocuments: Field{From: "a..b"}},
		{Status: status, TotalDocuments: Field{From: "n"},
			Reset: &Call{Method: "POST", Path: "/w/{user_id}"}},
		{Status: Call{Method: "", Path: "/s"}, TotalDocuments: Field{From: "n"}},
	}
	for i, o := range badKB {
		if _, err := p.NewKBBackend(o); err == nil {
			t.Errorf("NewKBBackend #%d: got nil error, want one", i)
		}
	}
	if _, err := p.NewProvisionHook(ProvisionOptions{Call: Call{Method: "POST",
		Path: "/t", Body: map[string]any{"x": "{typo}"}}}); err == nil {
		t.Error("NewProvisionHook with {typo}: got nil error, want one")
	}

	for s, want := range map[string]Call{
		"POST /internal/tenants": {Method: "POST", Path: "/internal/tenants"},
		"  GET   /a/{user_id} ":  {Method: "GET", Path: "/a/{user_id}"},
	} {
		got, err := ParseCall(s)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseCall(%q): got %+v, %v; want %+v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "POST", "/x"} {
		if _, err := ParseCall(s); err == nil {
			t.Errorf("ParseCall(%q): got nil error, want one", s)
		}
	}
}

func TestStatusErrorNotFoundOnlyForKB(t *testing.T) {
	tests := []struct {
		op     string
		status int
		want   bool
	}{
		{"kb status", http.StatusNotFound, true},
		{"kb reset", http.StatusNotFound, true},
		{"kb status", http.StatusInternalServerError, false},
		{"provision", http.StatusNotFound, false},
	}
	for _, tt := range tests {
		err := fmt.Errorf("wrapped: %w", &StatusError{Op: tt.op, Status: tt.status})
		if got := errors.Is(err, zimmer.ErrNotFound); got != tt.want {
			t.Errorf("%s %d: errors.Is(ErrNotFound) = %v, want %v",
				tt.op, tt.status, got, tt.want)
		}
	}
}
