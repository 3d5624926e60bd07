package zimmer

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// provisioned returns a harness with account 1 holding demo tokens.
func provisioned(t *testing.T, demo string, edit func(*Options)) *harness {
	t.Helper()
	h := newHarness(t, edit)
	w := h.do(t, http.MethodPost, "/provision",
		`{"user_automation_id":1,"user_id":1,"demo_tokens":`+demo+`}`)
	wantStatus(t, w, http.StatusOK)
	return h
}

func TestConsumeAnswers(t *testing.T) {
	t.Parallel()
	h := provisioned(t, "5", nil)

	tests := []struct {
		name string
		body string
		want ConsumeAnswer
	}{
		{
			name: "guide accepted",
			body: `{"user_automation_id":1,"units":2,"usage_type":"chat_session"}`,
			want: ConsumeAnswer{Accepted: true, RemainingDemoTokens: 3,
				Message: "Tokens consumed successfully", Success: true,
				TokensConsumed: 2, RemainingTokens: 3, UserAutomationID: 1},
		},
		{
			name: "older dialect accepted",
			body: `{"user_automation_id":"1","tokens_consumed":3,"action":"reply"}`,
			want: ConsumeAnswer{Accepted: true, RemainingDemoTokens: 0,
				Message: "Tokens consumed successfully", Success: true,
				TokensConsumed: 3, RemainingTokens: 0, UserAutomationID: 1},
		},
		{
			name: "refused",
			body: `{"user_automation_id":1,"units":1,"usage_type":"chat_session"}`,
			want: ConsumeAnswer{Accepted: false, Message: "Insufficient tokens",
				Success: false, TokensConsumed: 0, UserAutomationID: 1},
		},
	}
	for _, tt := range tests {
		w := h.do(t, http.MethodPost, "/usage/consume", tt.body)
		wantStatus(t, w, http.StatusOK)
		if got := decodeAs[ConsumeAnswer](t, w); got != tt.want {
			t.Fatalf("%s:\n got %+v\nwant %+v", tt.name, got, tt.want)
		}
		if w.Header().Get(ReplayedHeader) != "" {
			t.Fatalf("%s: %s set on a first answer", tt.name, ReplayedHeader)
		}
	}
}

// TestConsumeEmptyKey is case C3's second half: a present but empty key
// is refused before the ledger sees anything.
func TestConsumeEmptyKey(t *testing.T) {
	t.Parallel()
	h := provisioned(t, "5", nil)
	for _, body := range []string{
		`{"user_automation_id":1,"units":1,"usage_type":"a"}`,
		`{"user_automation_id":1,"units":2,"usage_type":"b"}`,
	} {
		w := h.do(t, http.MethodPost, "/usage/consume", body, "Idempotency-Key", "")
		wantStatus(t, w, http.StatusBadRequest)
		wantDetail(t, w, "Idempotency-Key must not be empty")
	}
	if _, c := h.ledger.counts(); c != 0 {
		t.Fatalf("ledger consumes: got %d, want 0", c)
	}
}

// TestConsumeRetryAfterFailedWrite is case C3's first half: a write that
// fails claims no key, the retry is charged once, and a replay answers
// the first answer again, marked as a replay.
func TestConsumeRetryAfterFailedWrite(t *testing.T) {
	t.Parallel()
	h := provisioned(t, "5", nil)
	const body = `{"user_automation_id":1,"units":2,"usage_type":"a"}`

	h.ledger.setFail(errors.New("write: no space left on device"))
	w := h.do(t, http.MethodPost, "/usage/consume", body, "Idempotency-Key", "k1")
	wantStatus(t, w, http.StatusInternalServerError)
	wantDetail(t, w, detailLedger)
	if strings.Contains(w.Body.String(), "space") {
		t.Fatalf("answer leaks the cause: %s", w.Body.String())
	}
	if e := h.lastError(t); e.ep != EndpointConsume || !strings.Contains(e.err.Error(), "space") {
		t.Fatalf("OnError: got %+v, want the cause", e)
	}

	h.ledger.setFail(nil)
	first := h.do(t, http.MethodPost, "/usage/consume", body, "Idempotency-Key", "k1")
	wantStatus(t, first, http.StatusOK)
	replay := h.do(t, http.MethodPost, "/usage/consume", body, "Idempotency-Key", "k1")
	wantStatus(t, replay, http.StatusOK)

	if first.Body.String() != replay.Body.String() {
		t.Fatalf("replay body:\n got %s\nwant %s", replay.Body.String(), first.Body.String())
	}
	if replay.Header().Get(ReplayedHeader) != "true" {
		t.Fatalf("%s: got %q, want true", ReplayedHeader, replay.Header().Get(ReplayedHeader))
	}
	if got := decodeAs[ConsumeAnswer](t, replay); got.RemainingDemoTokens != 3 {
		t.Fatalf("remaining demo: got %d, want 3 (charged once)", got.RemainingDemoTokens)
	}
}

func TestConsumeKeySource(t *testing.T) {
	t.Parallel()
	h := provisioned(t, "10", nil)
	meta := `{"user_automation_id":1,"units":1,"usage_type":"a","meta":{"request_id":"m1"}}`

	h.do(t, http.MethodPost, "/usage/consume", meta)
	h.do(t, http.MethodPost, "/usage/consume", meta, "Idempotency-Key", "h1")
	h.do(t, http.MethodPost, "/usage/consume",
		`{"user_automation_id":1,"units":1,"usage_type":"a"}`)

	var keys []string
	for _, c := range h.ledger.consumes {
		keys = append(keys, c.IdempotencyKey)
	}
	// Keys reach the ledger scoped to /usage/consume and the account.
	if got, want := strings.Join(keys, ","), "consume 1 m1,consume 1 h1,"; got != want {
		t.Fatalf("keys: got %q, want %q (meta, header over meta, none)", got, want)
	}
}

func TestConsumeKeyScoping(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("k", 255)
	tests := []struct {
		id        int64
		key, want string
	}{
		{7, "", ""},
		{7, "1", "consume 7 1"},
		{8, "1", "consume 8 1"},
		{7, long, "consume 7 sha256 " + fmt.Sprintf("%x", sha256.Sum256([]byte(long)))},
	}
	for _, tt := range tests {
		got := consumeKey(tt.id, tt.key)
		if got != tt.want {
			t.Errorf("consumeKey(%d, %q) = %q, want %q", tt.id, tt.key, got, tt.want)
		}
		if err := metering.CheckIdempotencyKey(got); err != nil {
			t.Errorf("consumeKey(%d, %q) = %q, which the ledger refuses: %v",
				tt.id, tt.key, got, err)
		}
	}
}

func TestConsumeLedgerErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		err    error
		status int
		detail string
	}{
		{"unknown account", metering.ErrUnknownAccount, http.StatusNotFound, detailUnknown},
		{"conflict", metering.ErrIdempotencyConflict, http.StatusConflict, detailConflict},
		{"invalid units", metering.ErrInvalidUnits, http.StatusBadRequest,
			"units must be a positive integer"},
		{"invalid key", metering.ErrInvalidIdempotencyKey, http.StatusBadRequest,
			"Idempotency-Key must be at most 255 printable ASCII characters"},
		{"closed", metering.ErrClosed, http.StatusServiceUnavailable, detailUnavailable},
		{"deadline", context.DeadlineExceeded, http.StatusServiceUnavailable, detailUnavailable},
		{"other", errors.New("bolt: page 7 corrupt"), http.StatusInternalServerError,
			detailLedger},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fl := &funcLedger{memLedger: newMemLedger()}
			fl.consume = func(
				context.Context, metering.ConsumeRequest,
			) (metering.ConsumeResult, error) {
				return metering.ConsumeResult{}, tt.err
			}
			h := newHarness(t, func(o *Options) { o.Ledger = fl })
			w := h.do(t, http.MethodPost, "/usage/consume",
				`{"user_automation_id":1,"units":1,"usage_type":"a"}`)
			wantStatus(t, w, tt.status)
			wantDetail(t, w, tt.detail)
			e := h.lastError(t)
			wantErrorIs(t, e.err, tt.err)
			if e.status != tt.status {
				t.Fatalf("OnError status: got %d, want %d", e.status, tt.status)
			}
		})
	}
}

func TestConsumeRealConflictAndUnknown(t *testing.T) {
	t.Parallel()
	h := provisioned(t, "10", nil)
	body := func(units string) string {
		return `{"user_automation_id":1,"units":` + units + `,"usage_type":"a"}`
	}
	wantStatus(t, h.do(t, http.MethodPost, "/usage/consume", body("1"),
		"Idempotency-Key", "k"), http.StatusOK)
	w := h.do(t, http.MethodPost, "/usage/consume", body("2"), "Idempotency-Key", "k")
	wantStatus(t, w, http.StatusConflict)
	wantDetail(t, w, detailConflict)

	w = h.do(t, http.MethodPost, "/usage/consume",
		`{"user_automation_id":99,"units":1,"usage_type":"a"}`)
	wantStatus(t, w, http.StatusNotFound)
	wantDetail(t, w, detailUnknown)
}

func TestConsumeBadRequests(t *testing.T) {
	t.Parallel()
	h := provisioned(t, "10", func(o *Options) { o.MaxUnits = 50; o.MaxBody = 256 })
	tests := []struct {
		body   string
		status int
		detail string
	}{
		{`{"user_automation_id":1,"units":51,"usage_type":"a"}`, http.StatusBadRequest,
			"units must not exceed 50"},
		{`{"user_automation_id":1,"units":-1,"usage_type":"a"}`, http.StatusBadRequest,
			"units must be a positive integer"},
		{`{"user_automation_id":1,"units":1}`, http.StatusBadRequest, "usage_type is required"},
		{`{"user_automation_id":1,"units":1,"usage_type":"a"`, http.StatusBadRequest,
			"request body is not valid JSON"},
		{``, http.StatusBadRequest, "request body is required"},
		{`{"user_automation_id":1,"units":1,"usage_type":"` + strings.Repeat("a", 300) + `"}`,
			http.StatusRequestEntityTooLarge, detailTooLarge},
	}
	for _, tt := range tests {
		w := h.do(t, http.MethodPost, "/usage/consume", tt.body)
		wantStatus(t, w, tt.status)
		wantDetail(t, w, tt.detail)
	}
	if _, c := h.ledger.counts(); c != 0 {
		t.Fatalf("ledger consumes: got %d, want 0", c)
	}
}

func TestConsumeObserver(t *testing.T) {
	t.Parallel()
	var got []metering.ConsumeResult
	h := provisioned(t, "1", func(o *Options) {
		o.OnConsume = func(
			_ *http.Request, _ metering.ConsumeRequest, res metering.ConsumeResult,
		) {
			got = append(got, res)
		}
	})
	body := `{"user_automation_id":1,"units":1,"usage_type":"a"}`
	h.do(t, http.MethodPost, "/usage/consume", body)
	h.do(t, http.MethodPost, "/usage/consume", body)
	if len(got) != 2 || !got[0].Accepted || got[1].Accepted {
		t.Fatalf("observed: got %+v, want one accepted then one refused", got)
	}
}

// TestConsumeConcurrent is case C4 through the handler: 20 parallel
// consumes of 10 against 100 demo tokens; exactly 10 are accepted.
func TestConsumeConcurrent(t *testing.T) {
	t.Parallel()
	h := provisioned(t, "100", nil)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		accepted int
		refused  int
		negative bool
	)
	for range 20 {
		wg.Go(func() {
			w := h.do(t, http.MethodPost, "/usage/consume",
				`{"user_automation_id":1,"units":10,"usage_type":"chat"}`)
			var a ConsumeAnswer
			if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &a) != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			negative = negative || a.RemainingDemoTokens < 0
			if a.Accepted {
				accepted++
			} else {
				refused++
			}
		})
	}
	wg.Wait()
	if accepted != 10 || refused != 10 || h.ledger.debits != 10 || negative {
		t.Fatalf("got %d accepted, %d refused, %d debits, negative %v; "+
			"want 10, 10, 10, false", accepted, refused, h.ledger.debits, negative)
	}
}
