package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/e2etest"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeopenai"
)

// eventWait bounds the wait for one stream event.
const eventWait = 20 * time.Second

// TestNodeAppEgress runs the Node example app's assistant (the npm openai
// package) with OPENAI_BASE_URL at the real sidecar's egress and a
// placeholder key, the sidecar's upstream a fake OpenAI API on loopback. A
// provisioned customer asks through the sidecar's public listener, plain
// and streamed, and an app calls the egress port directly with a stream
// that did not ask for usage (case C2): the answers arrive; the first
// streamed event reaches the client while the upstream holds the rest;
// the upstream sees only the injected key, and include_usage on every
// stream; usage is exact by the fake's rules; the ledger drops by exactly
// the settled units, journaled per call. An upstream error that echoes the
// key, the sidecar's debug logs, the app's logs and every answer the
// clients got never hold the key (case C10).
func TestNodeAppEgress(t *testing.T) {
	t.Parallel()
	const (
		words = 7
		user  = int64(601)
	)
	key := "sk-e2e-upstream-" + newToken(t)[:40]
	fake := fakeopenai.New(fakeopenai.Options{Keys: []string{key}, Words: words,
		EchoKey: true})
	es := startEgressStack(t, egressSetup{upstream: fake, staticKey: key})
	ctx := testContext(t)
	p := es.platform

	provision(ctx, t, es.stack, user, 5000)
	mustStatus(ctx, t, p, es.tc.addDoc(user, 1), http.StatusCreated)
	start := balance(e2etest.LedgerAccount(t, es.sidecar.AdminURL(), user))
	var answers []string // everything a client received

	// 1. A plain answer through the app's assistant.
	r := mustStatus(ctx, t, p, assistantRequest(user, "do you sell green tea?", false),
		http.StatusOK)
	answers = append(answers, string(r.Body))
	var plain assistantAnswer
	if err := r.JSON(&plain); err != nil {
		t.Fatal(err)
	}
	reqs := fake.Requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream got %d requests, want 1", len(reqs))
	}
	checkUpstreamRequest(t, reqs[0], key, es.token)
	want := []wantUsage{upstreamUsage(t, reqs[0], words)}
	if plain.Answer != fakeopenai.Text(words) || plain.FinishReason != "stop" ||
		plain.Usage == nil || *plain.Usage != (appUsage{want[0].prompt, want[0].completion,
		want[0].total()}) {
		t.Errorf("plain answer %s, want %q with usage %+v", r.Body,
			fakeopenai.Text(words), want[0])
	}

	// 2. A streamed answer: the first piece reaches the client while the
	// upstream holds the rest.
	hold := es.gate.Arm(t)
	st, err := openPostStream(ctx, p.Base, assistantRequest(user, "what is cheap?", true),
		es.token)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	first, err := nextWithin(st, eventWait)
	if err != nil {
		t.Fatalf("first event while the upstream holds the rest: %v", err)
	}
	if first.name != "delta" || first.data != `{"text":"w1"}` {
		t.Errorf("first event %+v, want delta w1", first)
	}
	select {
	case <-hold.reached:
	default:
		t.Error("the gate never held the upstream: the check proves nothing")
	}
	hold.Release()
	rest, err := st.all()
	if err != nil {
		t.Fatalf("rest of the stream: %v", err)
	}
	events := append([]sseEvent{first}, rest...)
	text, end := assistantStream(t, events)
	for _, ev := range events {
		answers = append(answers, ev.data)
	}
	reqs = fake.Requests()
	if len(reqs) != 2 {
		t.Fatalf("upstream got %d requests, want 2", len(reqs))
	}
	checkUpstreamRequest(t, reqs[1], key, es.token)
	if stream, usage := streamAsked(t, reqs[1].Body); !stream || !usage {
		t.Errorf("streamed upstream request: stream %v include_usage %v, want both",
			stream, usage)
	}
	want = append(want, upstreamUsage(t, reqs[1], words))
	if text != fakeopenai.Text(words) || !end.Complete || end.FinishReason != "stop" ||
		end.Usage == nil || *end.Usage != (appUsage{want[1].prompt, want[1].completion,
		want[1].total()}) {
		t.Errorf("streamed answer %q, end %+v, want %q with usage %+v", text, end,
			fakeopenai.Text(words), want[1])
	}

	// 3. An app's own stream on the egress port, without stream_options:
	// the upstream is asked for usage, the app does not get the usage
	// chunk (C2), and the first event is not held back.
	answers = append(answers, directStream(ctx, t, es, fake, user, words)...)
	reqs = fake.Requests()
	if len(reqs) != 3 {
		t.Fatalf("upstream got %d requests, want 3", len(reqs))
	}
	checkUpstreamRequest(t, reqs[2], key, es.token)
	if stream, usage := streamAsked(t, reqs[2].Body); !stream || !usage {
		t.Errorf("direct upstream request: stream %v include_usage %v, want both",
			stream, usage)
	}
	want = append(want, upstreamUsage(t, reqs[2], words))
	if want[2].prompt != 4 { // 1 message + "three little words"
		t.Errorf("direct call prompt tokens %d, want 4", want[2].prompt)
	}

	// 4. Each call metered exactly and charged exactly its units.
	calls := waitEgressCalls(t, es.sidecar, 3)
	var charged int64
	for i, c := range calls {
		checkCall(t, c, user, 1, want[i])
		charged += want[i].total()
	}
	e2etest.Eventually(t, 10*time.Second, 50*time.Millisecond, func() (bool, string) {
		a := e2etest.LedgerAccount(t, es.sidecar.AdminURL(), user)
		return balance(a) == start-charged, "balance " + jsonText(a)
	})
	checkJournal(t, es.sidecar.AdminURL(), user, calls)

	// 5. An upstream error that echoes the key (C10): the app gets the
	// error without it, and nothing is charged.
	answers = append(answers, echoedKeyError(ctx, t, es, fake, key, user))
	if a := e2etest.LedgerAccount(t, es.sidecar.AdminURL(), user); balance(a) !=
		start-charged {
		t.Errorf("a refused call changed the balance: %+v, want %d", a, start-charged)
	}

	// 6. No secret anywhere it must not be.
	frags := secretFragments(key)
	for i, a := range answers {
		if f := containsAny(a, frags); f != "" {
			t.Errorf("answer %d holds part of the upstream key (%d chars)", i, len(f))
		}
	}
	lines := es.sidecar.Lines()
	for _, l := range lines {
		if f := containsAny(l.Text, frags); f != "" {
			t.Errorf("sidecar %s line holds part of the upstream key: %s", l.Stream, l.Text)
		}
	}
	for _, l := range es.app.Lines() {
		if f := containsAny(l.Text, frags); f != "" {
			t.Errorf("app %s line holds part of the upstream key: %s", l.Stream, l.Text)
		}
	}
	if calls, _ := egressCalls(es.sidecar); len(calls) < 3 {
		t.Errorf("only %d egress call lines among %d: the grep proves little",
			len(calls), len(lines))
	}
	for _, rec := range fake.Requests() {
		if rec.Key == placeholderKey {
			t.Errorf("upstream request %d carried the app's placeholder key", rec.Seq)
		}
	}
	checkNoGuardRefusal(t, es.app)
}

// assistantStream checks the Node app's event stream (deltas, then one
// "end") and returns the text and the end event.
func assistantStream(t *testing.T, events []sseEvent) (string, assistantEnd) {
	t.Helper()
	var text strings.Builder
	var end assistantEnd
	for i, ev := range events {
		switch {
		case ev.name == "delta" && i < len(events)-1:
			var d struct {
				Text string `json:"text"`
			}
			if err := json.Unmarshal([]byte(ev.data), &d); err != nil {
				t.Errorf("delta %d: %v", i, err)
			}
			text.WriteString(d.Text)
		case ev.name == "end" && i == len(events)-1:
			if err := json.Unmarshal([]byte(ev.data), &end); err != nil {
				t.Errorf("end event: %v", err)
			}
		default:
			t.Errorf("event %d of %d: %q %s", i, len(events), ev.name, ev.data)
		}
	}
	return text.String(), end
}

// directStream streams a chat completion straight from the egress port
// with no stream_options while the fake holds every stream after its
// first event, and checks what the app got. It returns the event data.
func directStream(ctx context.Context, t *testing.T, es *egressStack,
	fake *fakeopenai.Server, user int64, words int) []string {
	t.Helper()
	release := fake.Hold()
	t.Cleanup(release)
	st, err := openPostStream(ctx, "http://"+es.egress, e2etest.Request{
		Method: http.MethodPost, Path: "/v1/chat/completions",
		Header: http.Header{"Authorization": {"Bearer " + placeholderKey},
			egressUserHeader: {fmt.Sprint(user)}},
		Body: map[string]any{"model": "gpt-4o-mini", "stream": true, "max_tokens": 50,
			"messages": []map[string]string{{"role": "user",
				"content": "three little words"}}},
	}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	first, err := nextWithin(st, eventWait)
	if err != nil {
		t.Fatalf("first direct event while the upstream holds the rest: %v", err)
	}
	if !strings.Contains(first.data, `"role":"assistant"`) {
		t.Errorf("first direct event %q, want the role chunk", first.data)
	}
	release()
	rest, err := st.all()
	if err != nil {
		t.Fatalf("rest of the direct stream: %v", err)
	}
	events := append([]sseEvent{first}, rest...)
	var text strings.Builder
	var data []string
	for i, ev := range events {
		data = append(data, ev.data)
		if ev.data == "[DONE]" {
			if i != len(events)-1 {
				t.Errorf("[DONE] is event %d of %d", i, len(events))
			}
			continue
		}
		var ch struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage json.RawMessage `json:"usage"`
		}
		if err := json.Unmarshal([]byte(ev.data), &ch); err != nil {
			t.Errorf("direct event %d: %v", i, err)
			continue
		}
		if len(ch.Choices) == 0 || (len(ch.Usage) > 0 && string(ch.Usage) != "null") {
			t.Errorf("the app got a usage chunk it did not ask for (C2): %s", ev.data)
		}
		for _, c := range ch.Choices {
			text.WriteString(c.Delta.Content)
		}
	}
	if got, wantN := len(events), fakeopenai.ChatStreamEvents(words, false); got != wantN {
		t.Errorf("the app got %d events, want %d", got, wantN)
	}
	if text.String() != fakeopenai.Text(words) {
		t.Errorf("direct stream text %q, want %q", text.String(), fakeopenai.Text(words))
	}
	return data
}

// echoedKeyError makes the fake answer one call 429 with the whole key in
// its message, shows that it does, then sends a call through the egress
// and returns the answer the app got (an error without the key).
func echoedKeyError(ctx context.Context, t *testing.T, es *egressStack,
	fake *fakeopenai.Server, key string, user int64) string {
	t.Helper()
	limited := fakeopenai.State{Kind: fakeopenai.RateLimited, Times: 1}
	body := `{"model":"gpt-4o-mini","max_tokens":20,` +
		`"messages":[{"role":"user","content":"hello"}]}`

	// The plant: straight to the fake, the error names the key.
	fake.SetKeyState(key, limited)
	direct := e2etest.NewPlatform(es.upstream, "")
	r, err := direct.Do(ctx, e2etest.Request{Method: http.MethodPost,
		Path: "/v1/chat/completions", RawBody: body,
		Header: http.Header{"Authorization": {"Bearer " + key},
			"Content-Type": {"application/json"}}})
	if err != nil || r.Status != http.StatusTooManyRequests ||
		!strings.Contains(string(r.Body), key) {
		t.Fatalf("the fake does not echo the key in its 429: %v %v", r, err)
	}

	// Through the egress.
	fake.SetKeyState(key, limited)
	r, err = directCall(ctx, es.egress, user, body)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status < 400 {
		t.Errorf("rate-limited call answered %d, want an error", r.Status)
	}
	return string(r.Body) + jsonText(r.Header)
}

// jsonText shows v as JSON, for failure messages.
func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
