package egress

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/keys"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/outbox"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeopenai"
)

// newFake starts the fake OpenAI upstream with every test key active.
func newFake(t *testing.T, opts fakeopenai.Options) (*fakeopenai.Server, string) {
	t.Helper()
	opts.Keys = testKeys
	fake := fakeopenai.New(opts)
	srv := httptest.NewServer(fake.Handler())
	t.Cleanup(srv.Close)
	return fake, srv.URL
}

// fakeTokens is the usage the fake counted for key i (0-based).
func fakeTokens(fake *fakeopenai.Server, i int) int64 {
	st := fake.Stats(testKeys[i])
	return st.PromptTokens + st.CompletionTokens
}

// Against the fake OpenAI: plain and streamed calls of each API carry the
// injected key, and the recorded usage is the fake's own count.
func TestFakeOpenAIUsageExact(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, path, body string
		stream           bool
	}{
		{"chat", "/v1/chat/completions",
			`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"say hi there"}]}`, false},
		{"chat stream", "/v1/chat/completions",
			`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"a b"}]}`,
			true},
		{"completions stream", "/v1/completions",
			`{"model":"gpt-3.5-turbo-instruct","stream":true,"prompt":"one two three"}`, true},
		{"embeddings", "/v1/embeddings",
			`{"model":"text-embedding-3-small","input":["a b","c"]}`, false},
		{"responses", "/v1/responses", `{"model":"gpt-4.1","input":"four words right here"}`,
			false},
		{"responses stream", "/v1/responses",
			`{"model":"gpt-4.1","stream":true,"input":"x y"}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake, url := newFake(t, fakeopenai.Options{Words: 6})
			e := newEnv(t, url, 1, nil)
			resp, body := e.do("POST", tt.path, tt.body, nil)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d %s", resp.StatusCode, body)
			}
			if tt.stream && strings.Contains(body, `"choices":[],"usage"`) {
				t.Errorf("the app got the usage-only chunk it did not ask for")
			}
			reqs := fake.Requests()
			if len(reqs) != 1 || reqs[0].Key != testKeys[0] {
				t.Fatalf("fake got %d requests (key ok: %v)", len(reqs),
					len(reqs) == 1 && reqs[0].Key == testKeys[0])
			}
			e.wait()
			rec := e.sink.only(t)
			if want := fakeTokens(fake, 0); rec.TotalTokens != want || want == 0 ||
				!rec.UsageKnown {
				t.Errorf("record %+v: want %d tokens, the fake's count", rec, want)
			}
			if !rec.Success || rec.Exit != outbox.ExitComplete {
				t.Errorf("record %+v: want a complete success", rec)
			}
		})
	}
}

// Against the fake: a revoked key that echoes itself whole, a
// rate-limited key and a failing key each move the call to the next key;
// no key character reaches the app or the logs.
func TestFakeOpenAIRotation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		state     fakeopenai.State
		wantEvent keys.EventKind // "" for none
		reason    string
	}{
		{"revoked", fakeopenai.State{Kind: fakeopenai.Revoked}, keys.EventDisabled,
			RetryReasonAuth},
		{"rate limited", fakeopenai.State{Kind: fakeopenai.RateLimited,
			RetryAfter: 1500 * time.Millisecond}, keys.EventCooldown, RetryReasonRateLimit},
		{"no quota", fakeopenai.State{Kind: fakeopenai.NoQuota}, keys.EventExhausted,
			RetryReasonRateLimit},
		{"failing", fakeopenai.State{Kind: fakeopenai.Failing, Status: 502}, "",
			RetryReasonServer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake, url := newFake(t, fakeopenai.Options{EchoKey: true})
			fake.SetKeyState(testKeys[0], tt.state)
			e := newEnv(t, url, 2, nil)
			resp, body := e.do("POST", "/v1/chat/completions", chatBody, nil)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d %s, want the second key's success", resp.StatusCode, body)
			}
			if s0, s1 := fake.Stats(testKeys[0]), fake.Stats(testKeys[1]); s0.Errors != 1 ||
				s1.OK != 1 {
				t.Errorf("fake stats %+v %+v: want one error on key 1, one success on key 2",
					s0, s1)
			}
			ev := e.events.all()
			if tt.wantEvent == "" && len(ev) != 0 ||
				tt.wantEvent != "" && (len(ev) != 1 || ev[0].Kind != tt.wantEvent) {
				t.Errorf("events %v, want %q", ev, tt.wantEvent)
			}
			if tt.wantEvent == keys.EventCooldown {
				if got := ev[0].Until.Sub(e.clock.Now()); got != 1500*time.Millisecond {
					t.Errorf("cooldown %s, want 1.5s from retry-after-ms", got)
				}
			}
			e.wait()
			if _, retries, _, _ := e.metrics.snapshot(); retries[tt.reason] != 1 {
				t.Errorf("retries %v, want one %s", retries, tt.reason)
			}
			if run, ok := hasKeyRun(body + e.logs.String()); ok {
				t.Errorf("key characters %q reached the app or the logs", run)
			}
			if rec := e.sink.only(t); rec.KeyID != 2 || !rec.Success {
				t.Errorf("record %+v", rec)
			}
		})
	}
}

// C10 against the fake: both keys revoked, the error echoing each whole.
func TestFakeOpenAIEchoedKeyRedacted(t *testing.T) {
	t.Parallel()
	fake, url := newFake(t, fakeopenai.Options{EchoKey: true})
	for _, k := range testKeys {
		fake.SetKeyState(k, fakeopenai.State{Kind: fakeopenai.Revoked})
	}
	e := newEnv(t, url, 2, nil)
	resp, body := e.do("POST", "/v1/chat/completions", chatBody, nil)
	if resp.StatusCode != 401 || !strings.Contains(body, "Incorrect API key provided") {
		t.Fatalf("got %d %s, want the fake's 401", resp.StatusCode, body)
	}
	var parsed wireError
	if err := json.Unmarshal([]byte(body), &parsed); err != nil {
		t.Errorf("redacted body is not JSON any more: %v", err)
	}
	e.wait()
	if run, ok := hasKeyRun(body + e.logs.String()); ok {
		t.Errorf("key characters %q reached the app or the logs", run)
	}
}

// C1 against the fake: the usage chunk split across flushed writes, LF
// and CRLF, stripped or passed on, is metered exactly.
func TestFakeOpenAISplitUsageEvent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		split    fakeopenai.Split
		crlf     bool
		appAsked bool
	}{
		{"inside data", fakeopenai.Split{Event: -2, At: 2, Delay: 20 * time.Millisecond},
			false, false},
		{"inside the usage", fakeopenai.Split{Event: -2, After: `"prompt_tokens":`,
			Delay: 20 * time.Millisecond}, false, true},
		{"between CR and LF", fakeopenai.Split{Event: -2, At: -1, Delay: 20 * time.Millisecond},
			true, false},
		{"every event", fakeopenai.Split{Event: 0, At: 7}, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake, url := newFake(t, fakeopenai.Options{
				Stream: fakeopenai.StreamControl{Split: tt.split, CRLF: tt.crlf},
			})
			e := newEnv(t, url, 1, nil)
			body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}`
			if tt.appAsked {
				body = `{"model":"m","stream":true,"stream_options":{"include_usage":true},` +
					`"messages":[{"role":"user","content":"x"}]}`
			}
			resp, got := e.do("POST", "/v1/chat/completions", body, nil)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if has := strings.Contains(got, `"choices":[]`); has != tt.appAsked {
				t.Errorf("usage chunk in the app's answer: %v, want %v", has, tt.appAsked)
			}
			e.wait()
			rec := e.sink.only(t)
			if want := fakeTokens(fake, 0); rec.TotalTokens != want || !rec.UsageKnown {
				t.Errorf("record %+v, want %d tokens", rec, want)
			}
		})
	}
}

// Against the fake: the first event arrives while the fake holds the
// rest; a reset after two events is recorded once as upstream_error; an
// endless stream the app leaves is drained to the byte bound.
func TestFakeOpenAIStreamFailures(t *testing.T) {
	t.Parallel()
	t.Run("first event not held back", func(t *testing.T) {
		t.Parallel()
		fake, url := newFake(t, fakeopenai.Options{})
		release := fake.Hold()
		defer release()
		e := newEnv(t, url, 1, nil)
		resp, _ := e.openStream(`{"model":"m","stream":true,"messages":[{"content":"x"}]}`, nil)
		first := readUntil(t, bufio.NewReader(resp.Body), "\n\n")
		if !strings.HasPrefix(first, "data: {") {
			t.Errorf("first event %q", first)
		}
		release()
		e.wait()
		if rec := e.sink.only(t); rec.Exit != outbox.ExitComplete || !rec.UsageKnown {
			t.Errorf("record %+v", rec)
		}
	})
	t.Run("reset", func(t *testing.T) {
		t.Parallel()
		fake, url := newFake(t, fakeopenai.Options{})
		e := newEnv(t, url, 2, nil)
		resp, _ := e.openStream(`{"model":"m","stream":true,"messages":[{"content":"x"}]}`,
			http.Header{fakeopenai.HeaderResetAfter: {"2"}})
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Errorf("the app's answer ended cleanly after an upstream reset")
		}
		e.wait()
		if n := len(fake.Requests()); n != 1 {
			t.Errorf("fake got %d requests, want 1", n)
		}
		if rec := e.sink.only(t); rec.Exit != outbox.ExitUpstreamError || rec.Success {
			t.Errorf("record %+v: want upstream_error", rec)
		}
	})
	t.Run("endless, app gone", func(t *testing.T) {
		t.Parallel()
		_, url := newFake(t, fakeopenai.Options{})
		e := newEnv(t, url, 1, func(o *Options) { o.DrainBytes = 4096 })
		resp, cancel := e.openStream(`{"model":"m","stream":true,"messages":[{"content":"x"}]}`,
			http.Header{fakeopenai.HeaderEndless: {"true"}, fakeopenai.HeaderDelay: {"1ms"}})
		readUntil(t, bufio.NewReader(resp.Body), "\n\n")
		cancel()
		e.wait()
		if rec := e.sink.only(t); rec.Exit != outbox.ExitClientGone || rec.UsageKnown {
			t.Errorf("record %+v: want client_gone without usage", rec)
		}
	})
}
