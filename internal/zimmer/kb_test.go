package zimmer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// kbHarness returns a harness whose KB answers info for every account and
// records the ids it was asked about.
func kbHarness(t *testing.T, info KBInfo, canReset bool) (*harness, *[]string) {
	t.Helper()
	var calls []string
	kb := &kbFake{
		canReset: canReset,
		status: func(_ context.Context, uaID, userID int64) (KBInfo, error) {
			calls = append(calls, fmt.Sprintf("status %d %d", uaID, userID))
			return info, nil
		},
		reset: func(_ context.Context, uaID int64) error {
			calls = append(calls, fmt.Sprintf("reset %d", uaID))
			return nil
		},
	}
	return newHarness(t, func(o *Options) { o.KB = kb }), &calls
}

func TestKBStatusDialects(t *testing.T) {
	t.Parallel()
	updated := time.Date(2025, 1, 9, 8, 0, 0, 0, time.UTC)
	tests := []struct {
		state       string
		wantGET     string
		wantPOST    string
		wantHealthy bool
	}{
		{KBReady, "ready", "healthy", true},
		{KBEmpty, "empty", "healthy", true},
		{KBProcessing, "processing", "warning", true},
		{KBError, "error", "error", false},
	}
	for _, tt := range tests {
		t.Run(tt.state, func(t *testing.T) {
			t.Parallel()
			h, calls := kbHarness(t, KBInfo{
				State: tt.state, LastUpdated: updated, TotalDocuments: 15,
				ErrorLogs: []string{"x"}, BackupStatus: true,
			}, true)

			get := h.do(t, http.MethodGet, "/kb/status?user_automation_id=123", "")
			post := h.do(t, http.MethodPost, "/kb/status",
				`{"user_id":456,"user_automation_id":123}`)
			wantStatus(t, get, http.StatusOK)
			wantStatus(t, post, http.StatusOK)

			want := KBStatusAnswer{
				Status: tt.wantGET, KBState: tt.state,
				LastUpdated:    "2025-01-09T08:00:00.000000+00:00",
				TotalDocuments: 15, Healthy: tt.wantHealthy, BackupStatus: true,
				ErrorLogs: []string{"x"}, SupportsReset: true, UserAutomationID: 123,
			}
			checkKBAnswer(t, decodeAs[KBStatusAnswer](t, get), want)
			want.Status = tt.wantPOST
			checkKBAnswer(t, decodeAs[KBStatusAnswer](t, post), want)

			if got := strings.Join(*calls, ","); got != "status 123 0,status 123 456" {
				t.Fatalf("backend calls: got %q", got)
			}
		})
	}
}

// checkKBAnswer compares two KB status answers field by field.
func checkKBAnswer(t *testing.T, got, want KBStatusAnswer) {
	t.Helper()
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Fatalf("answer:\n got %+v\nwant %+v", got, want)
	}
}

// TestKBStatusDefaults: an app that reports little still yields an
// object with a time, an empty list and a false backup status.
func TestKBStatusDefaults(t *testing.T) {
	t.Parallel()
	h, _ := kbHarness(t, KBInfo{State: KBEmpty}, false)
	w := h.do(t, http.MethodPost, "/kb/status", `{"user_automation_id":"5"}`)
	wantStatus(t, w, http.StatusOK)
	body := w.Body.String()
	for _, want := range []string{
		`"error_logs":[]`, `"backup_status":false`, `"supports_reset":false`,
		`"last_updated":"` + FormatTime(fixedNow) + `"`, `"status":"healthy"`,
		`"total_documents":0`, `"healthy":true`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("body %s: missing %s", body, want)
		}
	}
	if !strings.HasPrefix(body, "{") {
		t.Fatalf("body is not an object: %s", body)
	}
}

func TestKBStatusQueryOnPOST(t *testing.T) {
	t.Parallel()
	h, calls := kbHarness(t, KBInfo{State: KBReady}, false)
	wantStatus(t, h.do(t, http.MethodPost, "/kb/status?user_automation_id=8", ""),
		http.StatusOK)
	if got := strings.Join(*calls, ","); got != "status 8 0" {
		t.Fatalf("backend calls: got %q", got)
	}
}

func TestKBNotConfigured(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	for _, tt := range []struct{ method, target, body string }{
		{http.MethodGet, "/kb/status?user_automation_id=1", ""},
		{http.MethodPost, "/kb/status", `{"user_automation_id":1}`},
		{http.MethodPost, "/kb/reset?user_automation_id=1", ""},
		{http.MethodPost, "/kb/reset/", `{"user_automation_id":1}`},
	} {
		w := h.do(t, tt.method, tt.target, tt.body)
		wantStatus(t, w, http.StatusNotFound)
		wantDetail(t, w, detailNoKB)
	}
}

func TestKBResetNotSupported(t *testing.T) {
	t.Parallel()
	h, calls := kbHarness(t, KBInfo{State: KBReady}, false)
	w := h.do(t, http.MethodPost, "/kb/reset?user_automation_id=1", "")
	wantStatus(t, w, http.StatusNotFound)
	wantDetail(t, w, detailNoReset)
	if len(*calls) != 0 {
		t.Fatalf("backend calls: got %v, want none", *calls)
	}
}

func TestKBStatusFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status func(ctx context.Context, uaID, userID int64) (KBInfo, error)
		code   int
		detail string
	}{
		{
			name: "app error",
			status: func(context.Context, int64, int64) (KBInfo, error) {
				return KBInfo{}, errors.New("app answered 500")
			},
			code: http.StatusBadGateway, detail: detailKBStatusApp,
		},
		{
			name: "unknown account",
			status: func(context.Context, int64, int64) (KBInfo, error) {
				return KBInfo{}, fmt.Errorf("tenant 1: %w", ErrNotFound)
			},
			code: http.StatusNotFound, detail: detailUnknown,
		},
		{
			name: "unknown state",
			status: func(context.Context, int64, int64) (KBInfo, error) {
				return KBInfo{State: "indexing"}, nil
			},
			code: http.StatusBadGateway, detail: detailKBStatusApp,
		},
		{
			name: "timeout",
			status: func(ctx context.Context, _, _ int64) (KBInfo, error) {
				<-ctx.Done()
				return KBInfo{}, ctx.Err()
			},
			code: http.StatusGatewayTimeout, detail: detailAppTimeout,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(o *Options) {
				o.KB = &kbFake{status: tt.status}
				o.KBTimeout = time.Millisecond
			})
			w := h.do(t, http.MethodGet, "/kb/status?user_automation_id=1", "")
			wantStatus(t, w, tt.code)
			wantDetail(t, w, tt.detail)
			if e := h.lastError(t); e.ep != EndpointKBStatus || e.status != tt.code {
				t.Fatalf("OnError: got %+v", e)
			}
		})
	}
}

func TestKBStatusBadRequests(t *testing.T) {
	t.Parallel()
	h, calls := kbHarness(t, KBInfo{State: KBReady}, true)
	tests := []struct{ method, target, body, detail string }{
		{http.MethodGet, "/kb/status", "", "user_automation_id is required"},
		{http.MethodGet, "/kb/status?user_automation_id=x", "",
			"user_automation_id must be an integer"},
		{http.MethodPost, "/kb/status", `[{"user_automation_id":1}]`,
			"request body must be a JSON object"},
		{http.MethodPost, "/kb/status", `{"user_id":1}`, "user_automation_id is required"},
	}
	for _, tt := range tests {
		w := h.do(t, tt.method, tt.target, tt.body)
		wantStatus(t, w, http.StatusBadRequest)
		wantDetail(t, w, tt.detail)
	}
	if len(*calls) != 0 {
		t.Fatalf("backend calls: got %v, want none", *calls)
	}
}

func TestKBReset(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, target, body string
		wantID             int64
	}{
		{"guide query", "/kb/reset?user_automation_id=123", "", 123},
		{"platform body", "/kb/reset", `{"user_automation_id":123}`, 123},
		{"both", "/kb/reset/?user_automation_id=7", `{"user_automation_id":"7"}`, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, calls := kbHarness(t, KBInfo{}, true)
			w := h.do(t, http.MethodPost, tt.target, tt.body)
			wantStatus(t, w, http.StatusOK)
			got := decodeAs[KBResetAnswer](t, w)
			want := KBResetAnswer{
				Success: true, Status: "success",
				Message: "Knowledge base reset successfully",
				ResetAt: FormatTime(fixedNow), UserAutomationID: tt.wantID,
			}
			wantCall := fmt.Sprintf("reset %d", tt.wantID)
			if got != want || strings.Join(*calls, ",") != wantCall {
				t.Fatalf("got %+v after %v; want %+v after %s", got, *calls, want, wantCall)
			}
		})
	}
}

func TestKBResetFailures(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(o *Options) {
		o.KB = &kbFake{canReset: true, reset: func(context.Context, int64) error {
			return errors.New("wipe failed: disk")
		}}
	})
	w := h.do(t, http.MethodPost, "/kb/reset?user_automation_id=1", "")
	wantStatus(t, w, http.StatusBadGateway)
	got := decodeAs[FailureAnswer](t, w)
	want := FailureAnswer{Detail: detailKBResetApp, Success: false,
		Message: detailKBResetApp, Status: KBFailing}
	if got != want {
		t.Fatalf("answer: got %+v, want %+v", got, want)
	}

	w = h.do(t, http.MethodPost, "/kb/reset?user_automation_id=1", `{"user_automation_id":2}`)
	wantStatus(t, w, http.StatusBadRequest)
	wantDetail(t, w, "user_automation_id differs between query and body")
}
