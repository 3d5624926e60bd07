package egress

import (
	"io"
	"net/http"
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
	if resp, _ := e.do("POST", "/v1/images/generations", `{"prompt":"x"}`, nil); resp.StatusCode != 200 {
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
