package egress

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/keys"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/outbox"
)

// keyedUpstream answers per key: fail(key) returns true after answering
// an error, else the call succeeds with 3+4 tokens.
func keyedUpstream(t *testing.T, fail func(w http.ResponseWriter, key string) bool) (
	string, *upstreamLog) {
	t.Helper()
	up, seen := newUpstream(t, func(w http.ResponseWriter, r *http.Request, s seenRequest) {
		if fail(w, bearerKey(s.Header)) {
			return
		}
		writeJSONAnswer(w, 200, chatAnswer(3, 4))
	})
	return up.URL, seen
}

// keysUsed lists the keys the upstream saw, as 1-based key ids.
func keysUsed(seen *upstreamLog) []int {
	var out []int
	for _, r := range seen.all() {
		for i, k := range testKeys {
			if bearerKey(r.Header) == k {
				out = append(out, i+1)
			}
		}
	}
	return out
}

// hasKeyRun reports whether s holds any run of 8 consecutive characters
// of a test key.
func hasKeyRun(s string) (string, bool) {
	for _, k := range testKeys {
		for i := 0; i+8 <= len(k); i++ {
			if strings.Contains(s, k[i:i+8]) {
				return k[i : i+8], true
			}
		}
	}
	return "", false
}

func TestRotationOn401(t *testing.T) {
	t.Parallel()
	url, seen := keyedUpstream(t, func(w http.ResponseWriter, key string) bool {
		if key != testKeys[0] {
			return false
		}
		writeJSONAnswer(w, 401, openAIError("Incorrect API key provided: "+key+".",
			"invalid_request_error", "invalid_api_key"))
		return true
	})
	e := newEnv(t, url, 2, nil)
	resp, body := e.do("POST", "/v1/chat/completions", chatBody, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d %s, want the second key's success", resp.StatusCode, body)
	}
	if got := keysUsed(seen); fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("keys used %v, want [1 2]", got)
	}

	// Key 1 is disabled: the next call goes to key 2 at once.
	if resp, _ := e.do("POST", "/v1/chat/completions", chatBody, nil); resp.StatusCode != 200 {
		t.Fatalf("second call: status %d", resp.StatusCode)
	}
	if got := keysUsed(seen); fmt.Sprint(got) != "[1 2 2]" {
		t.Errorf("keys used %v, want [1 2 2]", got)
	}
	ev := e.events.all()
	if len(ev) != 1 || ev[0].Kind != keys.EventDisabled || ev[0].KeyID != 1 || ev[0].Status != 401 {
		t.Errorf("events %v, want key 1 disabled after 401", ev)
	}
	e.wait()
	recs := e.sink.records()
	if len(recs) != 2 {
		t.Fatalf("%d records, want one per call", len(recs))
	}
	for _, rec := range recs {
		if rec.KeyID != 2 || !rec.Success || rec.TotalTokens != 7 {
			t.Errorf("record %+v: want key 2, success, 7 tokens", rec)
		}
	}
	if _, retries, _, _ := e.metrics.snapshot(); retries[RetryReasonAuth] != 1 {
		t.Errorf("retries %v, want one auth retry", retries)
	}
	if run, ok := hasKeyRun(e.logs.String()); ok {
		t.Errorf("logs hold key characters %q", run)
	}
}

func TestRotationOn429(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		code     string
		wantKind keys.EventKind
		wantTill time.Duration
	}{
		{"rate limited", "rate_limit_exceeded", keys.EventCooldown, 30 * time.Second},
		{"insufficient quota", "insufficient_quota", keys.EventExhausted, 14 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url, seen := keyedUpstream(t, func(w http.ResponseWriter, key string) bool {
				if key != testKeys[0] {
					return false
				}
				w.Header().Set("Retry-After", "30")
				writeJSONAnswer(w, 429, openAIError("slow down", "requests", tt.code))
				return true
			})
			e := newEnv(t, url, 2, nil)
			resp, _ := e.do("POST", "/v1/chat/completions", chatBody, nil)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d, want the second key's success", resp.StatusCode)
			}
			ev := e.events.all()
			if len(ev) != 1 || ev[0].Kind != tt.wantKind || ev[0].KeyID != 1 {
				t.Fatalf("events %v, want key 1 %s", ev, tt.wantKind)
			}
			if got := ev[0].Until.Sub(e.clock.Now()); got != tt.wantTill {
				t.Errorf("key 1 out for %s, want %s", got, tt.wantTill)
			}
			resp, _ = e.do("POST", "/v1/chat/completions", chatBody, nil)
			if resp.StatusCode != 200 {
				t.Fatalf("second call: status %d", resp.StatusCode)
			}
			if got := keysUsed(seen); fmt.Sprint(got) != "[1 2 2]" {
				t.Errorf("keys used %v, want [1 2 2]", got)
			}
			e.wait()
			if _, retries, _, _ := e.metrics.snapshot(); retries[RetryReasonRateLimit] != 1 {
				t.Errorf("retries %v, want one rate-limit retry", retries)
			}
		})
	}
}

func TestRotationOn5xx(t *testing.T) {
	t.Parallel()
	fail := func(w http.ResponseWriter, key string) bool {
		if key != testKeys[0] {
			return false
		}
		writeJSONAnswer(w, 503, openAIError("overloaded", "server_error", "overloaded"))
		return true
	}
	t.Run("next key", func(t *testing.T) {
		t.Parallel()
		url, seen := keyedUpstream(t, fail)
		e := newEnv(t, url, 2, nil)
		if resp, _ := e.do("POST", "/v1/chat/completions", chatBody, nil); resp.StatusCode != 200 {
			t.Fatalf("status %d, want the second key's success", resp.StatusCode)
		}
		if got := keysUsed(seen); fmt.Sprint(got) != "[1 2]" {
			t.Errorf("keys used %v, want [1 2]", got)
		}
		e.wait()
		if rec := e.sink.only(t); rec.KeyID != 2 || rec.Exit != outbox.ExitComplete {
			t.Errorf("record %+v", rec)
		}
	})
	t.Run("one attempt", func(t *testing.T) {
		t.Parallel()
		url, seen := keyedUpstream(t, fail)
		budget := newBudget(t, map[int64]int64{5: 10000})
		e := newEnv(t, url, 2, func(o *Options) {
			o.MaxAttempts = 1
			o.Budget = budget
		})
		resp, body := e.do("POST", "/v1/chat/completions", chatBody,
			http.Header{DefaultUserHeader: {"5"}})
		if resp.StatusCode != 503 || !strings.Contains(body, "overloaded") {
			t.Fatalf("got %d %s, want the upstream's 503", resp.StatusCode, body)
		}
		if got := keysUsed(seen); fmt.Sprint(got) != "[1]" {
			t.Errorf("keys used %v, want [1]", got)
		}
		e.wait()
		rec := e.sink.only(t)
		if rec.Exit != outbox.ExitUpstreamError || rec.Success || rec.Units != 0 {
			t.Errorf("record %+v: want upstream_error, no success, no units", rec)
		}
		if h := budget.hold(rec.ID); h.releases != 1 || h.settles != 0 {
			t.Errorf("hold %+v: want released once", h)
		}
		if got := budget.balance(5); got != 10000 {
			t.Errorf("balance %d, want 10000", got)
		}
	})
}

// A transport error before any answer moves the call to another key.
func TestRotationOnTransportError(t *testing.T) {
	t.Parallel()
	up, seen := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, s seenRequest) {
		if bearerKey(s.Header) == testKeys[0] {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = conn.Close()
			}
			return
		}
		writeJSONAnswer(w, 200, chatAnswer(3, 4))
	})
	e := newEnv(t, up.URL, 2, nil)
	if resp, body := e.do("POST", "/v1/chat/completions", chatBody, nil); resp.StatusCode != 200 {
		t.Fatalf("status %d %s", resp.StatusCode, body)
	}
	if got := keysUsed(seen); fmt.Sprint(got) != "[1 2]" {
		t.Errorf("keys used %v, want [1 2]", got)
	}
	e.wait()
	if rec := e.sink.only(t); rec.KeyID != 2 || !rec.Success {
		t.Errorf("record %+v", rec)
	}
}

// C10: an upstream error that echoes the key, whole or in part, in its
// body or a header never reaches the app or the logs.
func TestEchoedKeyNeverLeaks(t *testing.T) {
	t.Parallel()
	up, seen := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, s seenRequest) {
		key := bearerKey(s.Header)
		w.Header().Set("X-Debug", "key="+key)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(401)
		msg := fmt.Sprintf(`{"error":{"message":"Incorrect API key provided: %s. `+
			`Also %s...%s and %s.","type":"invalid_request_error","code":"invalid_api_key"}}`,
			key, key[:12], key[len(key)-4:], key[10:20])
		_, _ = io.WriteString(w, msg)
	})
	e := newEnv(t, up.URL, 2, nil)
	resp, body := e.do("POST", "/v1/chat/completions", chatBody, http.Header{
		"Authorization": {"Bearer sk-placeholder-from-the-app"},
	})
	if resp.StatusCode != 401 {
		t.Fatalf("status %d, want the upstream's 401", resp.StatusCode)
	}
	if len(seen.all()) != 2 {
		t.Fatalf("upstream got %d requests, want 2 (one per key)", len(seen.all()))
	}
	if !strings.Contains(body, "Incorrect API key provided") ||
		!strings.Contains(body, redactMark) {
		t.Errorf("body %q: want the upstream's message, redacted", body)
	}
	if resp.ContentLength != -1 && resp.ContentLength != int64(len(body)) {
		t.Errorf("Content-Length %d for a body of %d bytes", resp.ContentLength, len(body))
	}
	all := body + fmt.Sprint(resp.Header)
	if run, ok := hasKeyRun(all); ok {
		t.Errorf("the app received key characters %q in %s", run, all)
	}
	e.wait()
	logs := e.logs.String()
	if run, ok := hasKeyRun(logs); ok {
		t.Errorf("logs hold key characters %q:\n%s", run, logs)
	}
	if strings.Contains(logs, "sk-placeholder-from-the-app") {
		t.Errorf("logs hold the app's placeholder key")
	}
	if rec := e.sink.only(t); rec.Success || rec.KeyID != 2 || rec.Exit != outbox.ExitComplete {
		t.Errorf("record %+v: want the second key's failure", rec)
	}
}

// A key that fails while no other key is left: the failure goes to the
// app, the call is recorded once.
func TestNoOtherKeyForRetry(t *testing.T) {
	t.Parallel()
	url, seen := keyedUpstream(t, func(w http.ResponseWriter, key string) bool {
		writeJSONAnswer(w, 401, openAIError("bad key "+key, "invalid_request_error",
			"invalid_api_key"))
		return true
	})
	e := newEnv(t, url, 1, nil)
	resp, body := e.do("POST", "/v1/chat/completions", chatBody, nil)
	if resp.StatusCode != 401 || !strings.Contains(body, "bad key "+redactMark) {
		t.Fatalf("got %d %s, want the upstream's 401, redacted", resp.StatusCode, body)
	}
	if n := len(seen.all()); n != 1 {
		t.Errorf("upstream got %d requests, want 1", n)
	}
	e.wait()
	if rec := e.sink.only(t); rec.KeyID != 1 || rec.Success {
		t.Errorf("record %+v", rec)
	}

	// Now the pool has no key: 503, no Retry-After (none comes back).
	resp, body = e.do("POST", "/v1/chat/completions", chatBody, nil)
	if resp.StatusCode != 503 || decodeError(t, body).Error.Code != "no_key_available" {
		t.Fatalf("got %d %s, want 503 no_key_available", resp.StatusCode, body)
	}
	if v := resp.Header.Get("Retry-After"); v != "" {
		t.Errorf("Retry-After %q with every key disabled", v)
	}
	e.wait()
	if n := len(e.sink.records()); n != 1 {
		t.Errorf("%d records, want no record for the refused call", n)
	}
}

// A cooling key makes the no-key answer carry Retry-After.
func TestNoKeyRetryAfter(t *testing.T) {
	t.Parallel()
	url, _ := keyedUpstream(t, func(w http.ResponseWriter, _ string) bool {
		w.Header().Set("Retry-After", "20")
		writeJSONAnswer(w, 429, openAIError("slow down", "requests", "rate_limit_exceeded"))
		return true
	})
	e := newEnv(t, url, 1, nil)
	if resp, _ := e.do("POST", "/v1/chat/completions", chatBody, nil); resp.StatusCode != 429 {
		t.Fatalf("status %d, want the upstream's 429", resp.StatusCode)
	}
	resp, body := e.do("POST", "/v1/chat/completions", chatBody, nil)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "20" {
		t.Fatalf("got %d Retry-After %q %s, want 503 with Retry-After 20",
			resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	e.wait()
}
