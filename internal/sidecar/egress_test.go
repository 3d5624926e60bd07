package sidecar

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeopenai"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// upstreamKey is the key the sidecar injects; the app never holds it.
const upstreamKey = "sk-sidecar-test-upstream-4f9c2d7e1b8a6350"

// egressTOML turns the egress on with one static key from the
// environment, budgets charged 1 unit per 10 tokens. %q: the upstream.
const egressTOML = `
[egress]
listen = "127.0.0.1:0"
upstream = %q
keys = ["env:ZS_OPENAI_KEY"]

[egress.budget]
enabled = true
tokens_per_unit = 10
reserve_tokens = 50

[egress.outbox]
path = %q
`

// startEgressHarness runs a sidecar whose egress calls fake.
func startEgressHarness(t *testing.T, fake *fakeopenai.Server) *harness {
	t.Helper()
	return startHarness(t, egressParams(t, fake, upstreamKey))
}

// egressParams configures the egress to call fake with key.
func egressParams(t *testing.T, fake *fakeopenai.Server, key string) params {
	t.Helper()
	up := httptest.NewServer(fake.Handler())
	t.Cleanup(up.Close)
	return params{
		extra: fmt.Sprintf(egressTOML, up.URL, filepath.Join(t.TempDir(), "outbox.db")),
		env:   []string{"ZS_OPENAI_KEY=" + key},
	}
}

// TestEgressWithOpenAIGo: the official Go client, pointed at the egress
// with a placeholder key, gets plain and streamed completions; the
// upstream sees only the injected key; each call is charged to the user
// it names, rounded up to units; no log line holds the key.
func TestEgressWithOpenAIGo(t *testing.T) {
	t.Parallel()
	fake := fakeopenai.New(fakeopenai.Options{Keys: []string{upstreamKey}, Words: 6})
	h := startEgressHarness(t, fake)
	h.waitReady()

	prov := h.do("POST", h.publicURL()+"/provision",
		`{"user_automation_id": 42, "user_id": 1, "demo_tokens": 100}`, withToken(testToken))
	if prov.status != http.StatusOK {
		t.Fatalf("provision: %d %s", prov.status, prov.body)
	}

	c := openai.NewClient(
		option.WithBaseURL("http://"+h.sc.EgressAddr()+"/v1/"),
		option.WithAPIKey("placeholder-not-a-key"),
		option.WithHeader("X-Zimmer-User-Automation-Id", "42"),
		option.WithMaxRetries(0),
	)
	params := openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT4oMini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello there")},
	}
	got, err := c.Chat.Completions.New(t.Context(), params)
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	// 1 message of 2 words: 1 + 2 = 3 prompt tokens; 6 words.
	if got.Usage.PromptTokens != 3 || got.Usage.CompletionTokens != 6 {
		t.Errorf("usage %+v, want 3 + 6", got.Usage)
	}

	stream := c.Chat.Completions.NewStreaming(t.Context(), params)
	var text strings.Builder
	usageChunks := 0
	for stream.Next() {
		ch := stream.Current()
		if len(ch.Choices) > 0 {
			text.WriteString(ch.Choices[0].Delta.Content)
		}
		if ch.JSON.Usage.Valid() && ch.Usage.TotalTokens > 0 {
			usageChunks++
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if strings.TrimSpace(text.String()) != fakeopenai.Text(6) {
		t.Errorf("streamed text %q, want %q", text.String(), fakeopenai.Text(6))
	}
	if usageChunks != 0 {
		t.Errorf("the app got %d usage chunks it did not ask for (case C2)", usageChunks)
	}

	reqs := fake.Requests()
	if len(reqs) != 2 {
		t.Fatalf("upstream got %d requests, want 2", len(reqs))
	}
	for i, r := range reqs {
		if r.Key != upstreamKey {
			t.Errorf("request %d: upstream saw key %q, want the injected one", i, r.Key)
		}
		if r.Header.Get("X-Zimmer-User-Automation-Id") != "" {
			t.Errorf("request %d: the user header went upstream", i)
		}
	}
	if !strings.Contains(string(reqs[1].Body), `"include_usage":true`) {
		t.Errorf("streamed request did not ask for usage: %s", reqs[1].Body)
	}

	// Two calls of 9 tokens: 1 unit each (10 tokens per unit, rounded up).
	eventually(t, "both calls settled", func() bool {
		a, err := h.sc.ledger.Account(t.Context(), 42)
		return err == nil && a.DemoTokens == 98
	})
	var settles int
	err = h.sc.ledger.Journal(t.Context(), 0, 0, func(e metering.Entry) error {
		if e.Kind == metering.EntrySettle {
			settles++
		}
		return nil
	})
	if err != nil || settles != 2 {
		t.Errorf("journal: %d settle entries (err %v), want 2", settles, err)
	}

	ob := h.do("GET", h.adminURL()+"/outbox", "", nil)
	if ob.status != http.StatusOK || !strings.HasPrefix(ob.body, "{") {
		t.Errorf("admin /outbox: %d %s", ob.status, ob.body)
	}
	// Finalisation (settle, record, count) runs after the answer.
	var m answer
	eventually(t, "metrics to count two complete egress calls", func() bool {
		m = h.do("GET", h.adminURL()+"/metrics", "", nil)
		return strings.Contains(m.body,
			`zimmer_sidecar_egress_calls_total{class="2xx",outcome="complete"} 2`)
	})
	if !strings.Contains(m.body, `zimmer_sidecar_egress_keys{state="active"} 1`) {
		t.Errorf("metrics lack one active key")
	}
	st := h.do("GET", h.adminURL()+"/status?format=json", "", nil)
	var rep struct {
		Keys []struct {
			ID, Source, State string
			TokensToday       int64 `json:"tokens_today"`
		} `json:"keys"`
		Outbox *struct{ Depth int } `json:"outbox"`
	}
	if err := json.Unmarshal([]byte(st.body), &rep); err != nil {
		t.Fatalf("status: %v in %s", err, st.body)
	}
	if len(rep.Keys) != 1 || rep.Keys[0].State != "active" ||
		rep.Keys[0].Source != "env:ZS_OPENAI_KEY" || rep.Keys[0].TokensToday != 18 ||
		rep.Outbox == nil || rep.Outbox.Depth != 0 {
		t.Errorf("status keys/outbox: %s", st.body)
	}
	if strings.Contains(st.body, upstreamKey) || strings.Contains(m.body, upstreamKey) {
		t.Error("the status page or the metrics show the key")
	}
	if err := h.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if strings.Contains(h.logs.String(), upstreamKey) ||
		strings.Contains(h.logs.String(), upstreamKey[8:24]) {
		t.Error("a log line holds the upstream key")
	}
}

// TestEgressAnswersOnlyLiteralHosts: the loopback egress answers only to
// an IP address or localhost, so a name rebound to 127.0.0.1 by a web page
// reaches nothing.
func TestEgressAnswersOnlyLiteralHosts(t *testing.T) {
	t.Parallel()
	fake := fakeopenai.New(fakeopenai.Options{Keys: []string{upstreamKey}})
	h := startEgressHarness(t, fake)
	h.waitReady()
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	for host, want := range map[string]int{
		"": http.StatusOK, "localhost": http.StatusOK,
		"evil.example": http.StatusMisdirectedRequest,
	} {
		req, err := http.NewRequest("POST", "http://"+h.sc.EgressAddr()+"/v1/chat/completions",
			strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %q: got %d, want %d", host, resp.StatusCode, want)
		}
	}
	if n := len(fake.Requests()); n != 2 {
		t.Errorf("upstream got %d calls, want 2 (the literal hosts)", n)
	}
}

// TestEgressBudgetRefuses: a user whose balance cannot cover the
// reservation gets 402 before any upstream call.
func TestEgressBudgetRefuses(t *testing.T) {
	t.Parallel()
	fake := fakeopenai.New(fakeopenai.Options{Keys: []string{upstreamKey}})
	h := startEgressHarness(t, fake)
	h.waitReady()
	h.do("POST", h.publicURL()+"/provision",
		`{"user_automation_id": 7, "user_id": 1, "demo_tokens": 1}`, withToken(testToken))

	body := `{"model":"gpt-4o-mini","max_tokens":500,"messages":[{"role":"user","content":"hi"}]}`
	a := h.do("POST", "http://"+h.sc.EgressAddr()+"/v1/chat/completions", body,
		http.Header{"X-Zimmer-User-Automation-Id": {"7"}, "Content-Type": {"application/json"}})
	if a.status != http.StatusPaymentRequired || !strings.Contains(a.body, `"error"`) {
		t.Errorf("got %d %s, want 402 with an OpenAI-style error", a.status, a.body)
	}
	if n := len(fake.Requests()); n != 0 {
		t.Errorf("upstream got %d requests, want none", n)
	}
	acc, err := h.sc.ledger.Account(t.Context(), 7)
	if err != nil || acc.DemoTokens != 1 {
		t.Errorf("balance after a refusal: %+v (err %v), want unchanged 1", acc, err)
	}
}

// TestReloadEgressKeys: a reload that changes the static keys makes new
// calls use the new key, without a restart; the new key is masked in logs.
func TestReloadEgressKeys(t *testing.T) {
	t.Parallel()
	const rotated = "sk-sidecar-rotated-key-0a1b2c3d4e5f6789"
	fake := fakeopenai.New(fakeopenai.Options{Keys: []string{upstreamKey, rotated}})
	p := egressParams(t, fake, upstreamKey)
	h := startHarness(t, p)
	h.waitReady()
	call := func() {
		t.Helper()
		a := h.do("POST", "http://"+h.sc.EgressAddr()+"/v1/chat/completions",
			`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
			http.Header{"Content-Type": {"application/json"}})
		if a.status != http.StatusOK {
			t.Fatalf("egress call: %d %s", a.status, a.body)
		}
	}
	call()
	p.env = []string{"ZS_OPENAI_KEY=" + rotated}
	next := h.next(p)
	h.reload(next)
	call()

	reqs := fake.Requests()
	if len(reqs) != 2 || reqs[0].Key != upstreamKey || reqs[1].Key != rotated {
		t.Fatalf("upstream saw keys %v, want the first then the rotated one", keysOf(reqs))
	}
	if r := h.lastRecord("configuration reloaded"); !strings.Contains(fmt.Sprint(r["changed"]),
		"egress.keys") {
		t.Errorf("reload line does not name egress.keys: %v", r)
	}
	if strings.Contains(h.logs.String(), rotated) {
		t.Error("a log line holds the rotated key")
	}
}

func keysOf(rs []fakeopenai.Record) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, fakeopenai.MaskKey(r.Key))
	}
	return out
}

// TestEgressOpenAIGoThroughRejectedKeys: the official Go client, with its
// own retries off, gets its answer when the first key is revoked and when
// it is rate limited: the sidecar moves to the second key, and the client
// never sees the upstream's refusal.
func TestEgressOpenAIGoThroughRejectedKeys(t *testing.T) {
	t.Parallel()
	const second = "sk-sidecar-second-key-9f8e7d6c5b4a3210"
	for _, st := range []fakeopenai.State{
		{Kind: fakeopenai.Revoked},
		{Kind: fakeopenai.RateLimited, RetryAfter: time.Minute},
	} {
		fake := fakeopenai.New(fakeopenai.Options{Keys: []string{upstreamKey, second}})
		fake.SetKeyState(upstreamKey, st)
		p := egressParams(t, fake, upstreamKey)
		p.env = append(p.env, "ZS_KEY2="+second,
			"ZIMMER_SIDECAR_EGRESS__KEYS=env:ZS_OPENAI_KEY,env:ZS_KEY2")
		h := startHarness(t, p)
		h.waitReady()
		c := openai.NewClient(
			option.WithBaseURL("http://"+h.sc.EgressAddr()+"/v1/"),
			option.WithAPIKey("placeholder-not-a-key"),
			option.WithMaxRetries(0),
		)
		params := openai.ChatCompletionNewParams{
			Model:    openai.ChatModelGPT4oMini,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		}
		for i := range 2 { // the first call meets the refusal, the second avoids it
			if _, err := c.Chat.Completions.New(t.Context(), params); err != nil {
				t.Fatalf("state %v, call %d: %v", st.Kind, i, err)
			}
		}
		if got := keysOf(fake.Requests()); len(got) != 3 ||
			got[0] != fakeopenai.MaskKey(upstreamKey) || got[1] != fakeopenai.MaskKey(second) ||
			got[2] != fakeopenai.MaskKey(second) {
			t.Errorf("state %v: upstream saw keys %v, want the first once, then the second",
				st.Kind, got)
		}
	}
}
