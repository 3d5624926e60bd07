package zimmer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

const platformProvision = `{"user_automation_id":123,"user_id":456,` +
	`"bot_token":"123456:AAE-secret","demo_tokens":null}`

func TestProvisionAnswer(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *Options) {
		o.Prefixes = []string{"/api/zimmer"}
		o.ServiceURL = "https://svc.example/u/{user_automation_id}?owner={user_id}"
	})
	w := h.do(t, http.MethodPost, "/api/zimmer/provision/", platformProvision)
	wantStatus(t, w, http.StatusOK)

	got := decodeAs[ProvisionAnswer](t, w)
	want := ProvisionAnswer{
		Success:           true,
		Message:           "Automation provisioned successfully",
		ProvisionedAt:     "2025-01-10T15:54:49.650619+00:00",
		IntegrationStatus: IntegrationActive,
		ServiceURL:        "https://svc.example/u/123?owner=456",
		UserAutomationID:  123,
		DemoTokens:        5,
	}
	if got != want {
		t.Fatalf("answer:\n got %+v\nwant %+v", got, want)
	}

	// demo_tokens null reaches the ledger as nil; the bot token as a flag.
	req := h.ledger.provisions[0]
	if req.DemoTokens != nil || !req.BotTokenGiven || req.UserID != 456 {
		t.Fatalf("ledger request: got %+v", req)
	}
}

func TestProvisionOmitsEmptyServiceURL(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	w := h.do(t, http.MethodPost, "/provision",
		`{"user_automation_id":1,"user_id":2,"demo_tokens":0}`)
	wantStatus(t, w, http.StatusOK)
	if strings.Contains(w.Body.String(), "service_url") {
		t.Fatalf("body %s has service_url, want none", w.Body.String())
	}
	if got := decodeAs[ProvisionAnswer](t, w); got.DemoTokens != 0 {
		t.Fatalf("demo tokens: got %d, want 0 (sent explicitly)", got.DemoTokens)
	}
}

func TestProvisionIdempotent(t *testing.T) {
	t.Parallel()
	var hookCalls int
	h := newHarness(t, func(o *Options) {
		o.Provision = hookFunc(func(context.Context, ProvisionCall) (ProvisionReply, error) {
			hookCalls++
			return ProvisionReply{}, nil
		})
	})
	first := decodeAs[ProvisionAnswer](t, h.do(t, http.MethodPost, "/provision",
		`{"user_automation_id":7,"user_id":1,"demo_tokens":10}`))

	// Spend some demo tokens, then provision again with another grant.
	wantStatus(t, h.do(t, http.MethodPost, "/usage/consume",
		`{"user_automation_id":7,"units":4,"usage_type":"a"}`), http.StatusOK)
	w := h.do(t, http.MethodPost, "/provision",
		`{"user_automation_id":"7","user_id":"1","demo_tokens":50}`)
	wantStatus(t, w, http.StatusOK)
	second := decodeAs[ProvisionAnswer](t, w)

	if first.AlreadyProvisioned || !second.AlreadyProvisioned {
		t.Fatalf("already_provisioned: got %v then %v, want false then true",
			first.AlreadyProvisioned, second.AlreadyProvisioned)
	}
	if second.DemoTokens != 6 {
		t.Fatalf("demo tokens after re-provision: got %d, want 6 (no second grant)",
			second.DemoTokens)
	}
	if second.ProvisionedAt != first.ProvisionedAt || !second.Success {
		t.Fatalf("second answer: got %+v, want success at %s", second, first.ProvisionedAt)
	}
	if hookCalls != 2 {
		t.Fatalf("hook calls: got %d, want 2 (the hook is idempotent too)", hookCalls)
	}
}

func TestProvisionHookReply(t *testing.T) {
	t.Parallel()
	var seen ProvisionCall
	h := newHarness(t, func(o *Options) {
		o.ServiceURL = "https://default/{user_automation_id}"
		o.Provision = hookFunc(func(_ context.Context, c ProvisionCall) (ProvisionReply, error) {
			seen = c
			return ProvisionReply{
				ServiceURL: "https://app/t/9", IntegrationStatus: IntegrationPending,
				Message: "queued",
			}, nil
		})
	})
	w := h.do(t, http.MethodPost, "/provision",
		`{"user_automation_id":9,"user_id":3,"bot_token":"tok","demo_tokens":"2"}`)
	wantStatus(t, w, http.StatusOK)
	got := decodeAs[ProvisionAnswer](t, w)
	if got.ServiceURL != "https://app/t/9" || got.IntegrationStatus != IntegrationPending ||
		got.Message != "queued" {
		t.Fatalf("answer: got %+v, want the hook's reply", got)
	}
	if seen.BotToken == nil || *seen.BotToken != "tok" || *seen.DemoTokens != 2 {
		t.Fatalf("hook call: got %+v", seen)
	}
}

// TestProvisionHookFailure: the hook runs first, and when it fails the
// ledger is never called and the platform gets a non-200.
func TestProvisionHookFailure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		hook       hookFunc
		wantStatus int
		wantDetail string
	}{
		{
			name: "error",
			hook: func(context.Context, ProvisionCall) (ProvisionReply, error) {
				return ProvisionReply{}, errors.New("app said 500: token 123456:AAE-secret")
			},
			wantStatus: http.StatusBadGateway,
			wantDetail: detailProvisionApp,
		},
		{
			name: "failed status",
			hook: func(context.Context, ProvisionCall) (ProvisionReply, error) {
				return ProvisionReply{IntegrationStatus: IntegrationFailed}, nil
			},
			wantStatus: http.StatusBadGateway,
			wantDetail: detailProvisionApp,
		},
		{
			name: "timeout",
			hook: func(ctx context.Context, _ ProvisionCall) (ProvisionReply, error) {
				<-ctx.Done()
				return ProvisionReply{}, ctx.Err()
			},
			wantStatus: http.StatusGatewayTimeout,
			wantDetail: detailAppTimeout,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(o *Options) {
				o.Provision = tt.hook
				o.ProvisionTimeout = time.Millisecond
			})
			w := h.do(t, http.MethodPost, "/provision", platformProvision)
			wantStatus(t, w, tt.wantStatus)

			got := decodeAs[FailureAnswer](t, w)
			want := FailureAnswer{Detail: tt.wantDetail, Success: false,
				Message: tt.wantDetail, IntegrationStatus: IntegrationFailed}
			if got != want {
				t.Fatalf("answer: got %+v, want %+v", got, want)
			}
			if strings.Contains(w.Body.String(), "secret") {
				t.Fatalf("answer leaks the cause: %s", w.Body.String())
			}
			if p, _ := h.ledger.counts(); p != 0 {
				t.Fatalf("ledger provisions: got %d, want 0", p)
			}
			if e := h.lastError(t); e.ep != EndpointProvision || e.status != tt.wantStatus {
				t.Fatalf("OnError: got %+v", e)
			}
		})
	}
}

func TestProvisionLedgerFailure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		err    error
		status int
		detail string
	}{
		{"disk", errors.New("write /data/ledger.db: no space left"),
			http.StatusInternalServerError, detailLedger},
		{"closed", metering.ErrClosed, http.StatusServiceUnavailable, detailUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, nil)
			h.ledger.setFail(tt.err)
			w := h.do(t, http.MethodPost, "/provision", platformProvision)
			wantStatus(t, w, tt.status)
			wantDetail(t, w, tt.detail)
			wantErrorIs(t, h.lastError(t).err, tt.err)
		})
	}
}

func TestProvisionBadRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tests := []struct{ body, detail string }{
		{``, "request body is required"},
		{`{"user_id":1}`, "user_automation_id is required"},
		{`{"user_automation_id":1,"user_id":1,"demo_tokens":-1}`,
			"demo_tokens must not be negative"},
		{`not json`, "request body must be a JSON object"},
	}
	for _, tt := range tests {
		w := h.do(t, http.MethodPost, "/provision", tt.body)
		wantStatus(t, w, http.StatusBadRequest)
		wantDetail(t, w, tt.detail)
	}
	if p, _ := h.ledger.counts(); p != 0 {
		t.Fatalf("ledger provisions: got %d, want 0", p)
	}
}

// TestProvisionConcurrent provisions one account from many goroutines:
// every answer is 200 and exactly one created it.
func TestProvisionConcurrent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	var wg sync.WaitGroup
	answers := make([]ProvisionAnswer, 16)
	for i := range answers {
		wg.Go(func() {
			w := h.do(t, http.MethodPost, "/provision", platformProvision)
			if w.Code == http.StatusOK {
				_ = json.Unmarshal(w.Body.Bytes(), &answers[i])
			}
		})
	}
	wg.Wait()
	created := 0
	for _, a := range answers {
		if !a.Success {
			t.Fatalf("an answer was not a success: %+v", a)
		}
		if !a.AlreadyProvisioned {
			created++
		}
	}
	if created != 1 {
		t.Fatalf("creations: got %d, want 1", created)
	}
}

// openCircuit is an app error the way the proxy's open breaker reports it.
type openCircuit struct{ wait time.Duration }

func (e openCircuit) Error() string             { return "circuit open" }
func (e openCircuit) RetryAfter() time.Duration { return e.wait }

func TestProvisionCircuitOpen(t *testing.T) {
	t.Parallel()
	hook := hookFunc(func(context.Context, ProvisionCall) (ProvisionReply, error) {
		return ProvisionReply{}, fmt.Errorf("call app: %w", openCircuit{1500 * time.Millisecond})
	})
	h := newHarness(t, func(o *Options) { o.Provision = hook })
	w := h.do(t, http.MethodPost, "/provision", `{"user_automation_id":1,"user_id":2}`)
	wantStatus(t, w, http.StatusServiceUnavailable)
	if got := w.Header().Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After: got %q, want 2 (1.5s rounded up)", got)
	}
	if _, err := h.ledger.Account(context.Background(), 1); err == nil {
		t.Error("the account was created although the app was not told")
	}
}
