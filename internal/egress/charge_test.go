package egress

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// C-budget: a call charged to a user may go only to an endpoint whose
// usage the egress reads; others are refused before the upstream, and
// stay open to uncharged calls.
func TestChargedCallsOnlyToMeteredEndpoints(t *testing.T) {
	t.Parallel()
	up, seen := okUpstream(t)
	budget := newBudget(t, map[int64]int64{1: 1 << 30})
	e := newEnv(t, up.URL, 1, func(o *Options) { o.Budget = budget })
	user := http.Header{DefaultUserHeader: {"1"}}
	for _, path := range []string{
		"/v1/images/generations", "/v1/batches", "/v1/audio/speech",
		"/v1/chat/completions/", "/v1/images/generations%2Fcompletions",
	} {
		resp, body := e.do("POST", path, `{"model":"m","input":"x"}`, user)
		if resp.StatusCode != 403 || decodeError(t, body).Error.Code != "unmetered_endpoint" {
			t.Errorf("%s: got %d %s, want 403 unmetered_endpoint", path, resp.StatusCode, body)
		}
	}
	if n := len(seen.all()); n != 0 {
		t.Errorf("the upstream got %d requests", n)
	}
	if got := budget.balance(1); got != 1<<30 {
		t.Errorf("balance %d, want it untouched", got)
	}
	// Uncharged: no user named.
	resp, _ := e.do("POST", "/v1/images/generations", `{"prompt":"x"}`, nil)
	if resp.StatusCode != 200 {
		t.Errorf("uncharged: status %d, want 200", resp.StatusCode)
	}
	// Reading calls of a user pass, uncharged.
	if resp, _ := e.do("GET", "/v1/batches", "", user); resp.StatusCode != 200 {
		t.Errorf("GET: status %d, want 200", resp.StatusCode)
	}
	e.wait()
}

// A 2xx answer of a charged call without usage the egress can read, or
// with a malformed one, is settled at the reservation.
func TestChargedUnknownUsageSettledAtReservation(t *testing.T) {
	t.Parallel()
	answers := map[string]string{
		"none":          `{"object":"chat.completion","choices":[]}`,
		"null":          `{"object":"chat.completion","usage":null}`,
		"empty":         `{"object":"chat.completion","usage":{}}`,
		"negative":      `{"object":"chat.completion","usage":{"prompt_tokens":-5}}`,
		"string":        `{"object":"chat.completion","usage":"lots"}`,
		"fraction":      `{"object":"chat.completion","usage":{"total_tokens":1.5}}`,
		"not json":      `not json`,
		"zero":          `{"object":"chat.completion","usage":{"total_tokens":0}}`,
		"truncated doc": `{"object":"chat.completion","usage":{"total_tokens":`,
	}
	for name, answer := range answers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			up, _ := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ seenRequest) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, answer)
			})
			budget := newBudget(t, map[int64]int64{1: 1 << 30})
			e := newEnv(t, up.URL, 1, func(o *Options) { o.Budget = budget })
			resp, _ := e.do("POST", "/v1/chat/completions", chatBody,
				http.Header{DefaultUserHeader: {"1"}})
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			e.wait()
			rec := e.sink.only(t)
			h := budget.hold(rec.ID)
			if h.settles != 1 || h.settled != h.reserved || rec.Units != h.reserved {
				t.Errorf("hold %+v, record units %d: want settled at the reservation", h, rec.Units)
			}
		})
	}
}

// A cap too large to reserve, by overflow or past the ledger's bound for
// one call, is the request's problem: 400, never a retryable 5xx.
func TestReservationTooLarge(t *testing.T) {
	t.Parallel()
	up, seen := okUpstream(t)
	budget := newBudget(t, map[int64]int64{1: 1 << 40})
	budget.maxUnits = 1_000_000
	e := newEnv(t, up.URL, 1, func(o *Options) { o.Budget = budget })
	for _, body := range []string{
		`{"model":"m","max_tokens":9223372036854775807}`,
		`{"model":"m","max_tokens":4611686018427387904,"n":2}`,
		`{"model":"m","max_tokens":100000,"n":100000}`,
	} {
		resp, got := e.do("POST", "/v1/chat/completions", body,
			http.Header{DefaultUserHeader: {"1"}})
		if resp.StatusCode != 400 || decodeError(t, got).Error.Code != "reservation_too_large" {
			t.Errorf("%s: got %d %s, want 400 reservation_too_large", body, resp.StatusCode, got)
		}
	}
	if n := len(seen.all()); n != 0 {
		t.Errorf("the upstream got %d requests", n)
	}
	if got := budget.balance(1); got != 1<<40 {
		t.Errorf("balance %d, want it untouched", got)
	}
	e.wait()
}

// A charged call that names no completion cap is sent with the cap its
// reservation was sized from, in the endpoint's own member; a call that
// names one, and an uncharged call, are sent as they are.
func TestChargedCallCapped(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, path, body string
		charged          bool
		wantBody         string // "" means unchanged
		wantCompletion   int64  // the reservation's completion part
	}{
		{"chat", "/v1/chat/completions", `{"model":"m","messages":[]}`, true,
			`{"model":"m","messages":[],"max_completion_tokens":300}`, 300},
		{"chat, n=2", "/v1/chat/completions", `{"model":"m","n":2,"messages":[]}`, true,
			`{"model":"m","n":2,"messages":[],"max_completion_tokens":300}`, 600},
		{"chat, null cap", "/v1/chat/completions",
			`{"model":"m","max_completion_tokens":null}`, true,
			`{"model":"m","max_completion_tokens":300}`, 300},
		{"chat, max_tokens given", "/v1/chat/completions", `{"model":"m","max_tokens":50}`,
			true, "", 50},
		{"chat, a foreign cap only", "/v1/chat/completions",
			`{"model":"m","max_output_tokens":5}`, true,
			`{"model":"m","max_output_tokens":5,"max_completion_tokens":300}`, 300},
		{"completions", "/v1/completions", `{"model":"m","prompt":"x"}`, true,
			`{"model":"m","prompt":"x","max_tokens":300}`, 300},
		{"responses", "/v1/responses", `{"model":"m","input":"x"}`, true,
			`{"model":"m","input":"x","max_output_tokens":300}`, 300},
		{"responses, cap given", "/v1/responses", `{"model":"m","max_output_tokens":20}`,
			true, "", 20},
		{"embeddings", "/v1/embeddings", `{"model":"m","input":"x"}`, true, "", 300},
		{"uncharged", "/v1/chat/completions", `{"model":"m","messages":[]}`, false, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up, seen := okUpstream(t)
			budget := newBudget(t, map[int64]int64{1: 1 << 30})
			e := newEnv(t, up.URL, 1, func(o *Options) {
				o.Budget = budget
				o.ReserveTokens = 300
			})
			var hdr http.Header
			if tt.charged {
				hdr = http.Header{DefaultUserHeader: {"1"}}
			}
			resp, body := e.do("POST", tt.path, tt.body, hdr)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d %s", resp.StatusCode, body)
			}
			want := tt.wantBody
			if want == "" {
				want = tt.body
			}
			sent := seen.all()[0].Body
			if sent != want {
				t.Errorf("upstream body %s, want %s", sent, want)
			}
			e.wait()
			rec := e.sink.only(t)
			h := budget.hold(rec.ID)
			if !tt.charged {
				if h != (hold{}) {
					t.Errorf("hold %+v for an uncharged call", h)
				}
				return
			}
			if wantReserved := int64(len(sent)+3)/4 + tt.wantCompletion; h.reserved !=
				wantReserved {
				t.Errorf("reserved %d, want %d", h.reserved, wantReserved)
			}
		})
	}
}

// A charged call with a cap of 0 (which some servers read as no cap) is
// refused, naming the member.
func TestChargedZeroCapRefused(t *testing.T) {
	t.Parallel()
	up, seen := okUpstream(t)
	budget := newBudget(t, map[int64]int64{1: 1 << 30})
	e := newEnv(t, up.URL, 1, func(o *Options) { o.Budget = budget })
	resp, body := e.do("POST", "/v1/chat/completions", `{"model":"m","max_tokens":0}`,
		http.Header{DefaultUserHeader: {"1"}})
	if resp.StatusCode != 400 || !strings.Contains(decodeError(t, body).Error.Message,
		"max_tokens must be at least 1") {
		t.Errorf("got %d %s, want 400 naming max_tokens", resp.StatusCode, body)
	}
	resp, body = e.do("POST", "/v1/chat/completions", "", http.Header{DefaultUserHeader: {"1"}})
	if resp.StatusCode != 400 {
		t.Errorf("empty body: got %d %s, want 400", resp.StatusCode, body)
	}
	if n := len(seen.all()); n != 0 {
		t.Errorf("the upstream got %d requests", n)
	}
	e.wait()
}

// A call that costs more than its user's balance can pay is charged what
// is left, and the shortfall is logged and counted.
func TestShortfallVisible(t *testing.T) {
	t.Parallel()
	up, _ := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ seenRequest) {
		writeJSONAnswer(w, 200, chatAnswer(2, 2000)) // 2002 tokens
	})
	body := `{"model":"m","max_tokens":8}`
	reserved := int64(len(body)+3)/4 + 8
	budget := newBudget(t, map[int64]int64{1: reserved + 5})
	e := newEnv(t, up.URL, 1, func(o *Options) { o.Budget = budget })
	if resp, _ := e.do("POST", "/v1/chat/completions", body,
		http.Header{DefaultUserHeader: {"1"}}); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	e.wait()
	rec := e.sink.only(t)
	if h := budget.hold(rec.ID); h.settled != reserved+5 || rec.Units != reserved+5 {
		t.Errorf("hold %+v, record units %d: want %d charged", h, rec.Units, reserved+5)
	}
	if got, want := e.metrics.shortfall(), 2002-(reserved+5); got != want {
		t.Errorf("shortfall metric %d, want %d", got, want)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `level=WARN msg="egress budget shortfall" call_id=`+rec.ID) ||
		!strings.Contains(logs, "cost=2002") ||
		!strings.Contains(logs, "charged="+strconv.FormatInt(reserved+5, 10)) {
		t.Errorf("no shortfall warning with call id, cost and charge:\n%s", logs)
	}
}
