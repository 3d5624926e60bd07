package fakeopenai

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestChatJSON(t *testing.T) {
	t.Parallel()
	s, ts := newTest(t, Options{Words: 4})
	body := `{"model":"gpt-4o-mini","messages":[{"role":"system","content":"be brief"},` +
		`{"role":"user","content":"say hello please"}]}`
	resp, b := post(t, ts, "/v1/chat/completions", body, bearer(testKey)...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status: got %d, want 200: %s", resp.StatusCode, b)
	}
	var got chatCompletion
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	// 2 messages: (1+2) + (1+3) = 7 prompt tokens; 4 words.
	want := chatUsage{PromptTokens: 7, CompletionTokens: 4, TotalTokens: 11}
	if got.Usage == nil || *got.Usage != want {
		t.Errorf("usage: got %+v, want %+v", got.Usage, want)
	}
	if c := got.Choices[0]; c.Message.Content != "w1 w2 w3 w4" || c.FinishReason != "stop" {
		t.Errorf("choice: got %+v", c)
	}
	if got.Object != "chat.completion" || got.Model != "gpt-4o-mini" {
		t.Errorf("object, model: got %q, %q", got.Object, got.Model)
	}
	st := s.Stats(testKey)
	if st.Requests != 1 || st.OK != 1 || st.PromptTokens != 7 || st.CompletionTokens != 4 {
		t.Errorf("stats: got %+v", st)
	}
}

func TestChatMaxTokensCaps(t *testing.T) {
	t.Parallel()
	_, ts := newTest(t, Options{Words: 10})
	body := `{"model":"m","max_completion_tokens":3,"messages":[{"role":"user","content":"x"}]}`
	_, b := post(t, ts, "/v1/chat/completions", body, bearer(testKey)...)
	var got chatCompletion
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Usage == nil || got.Usage.CompletionTokens != 3 ||
		got.Choices[0].FinishReason != "length" {
		t.Errorf("got usage %+v, finish %q; want 3 tokens, length",
			got.Usage, got.Choices[0].FinishReason)
	}
}

func TestChatStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		opts        string
		wantUsage   bool
		wantChunkNu bool // every non-usage chunk carries "usage":null
	}{
		{name: "no stream_options", opts: ``},
		{name: "include_usage false", opts: `,"stream_options":{"include_usage":false}`},
		{
			name: "include_usage true", opts: `,"stream_options":{"include_usage":true}`,
			wantUsage: true, wantChunkNu: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, ts := newTest(t, Options{Words: 3})
			body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"a b"}]` +
				tt.opts + `}`
			resp, b := post(t, ts, "/v1/chat/completions", body, bearer(testKey)...)
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
				t.Fatalf("content type: got %q", ct)
			}
			evs := parseSSE(t, b)
			if got, want := len(evs), ChatStreamEvents(3, tt.wantUsage); got != want {
				t.Fatalf("events: got %d, want %d: %s", got, want, b)
			}
			if evs[len(evs)-1].data != "[DONE]" {
				t.Errorf("last event: got %q, want [DONE]", evs[len(evs)-1].data)
			}
			var text strings.Builder
			for i, ev := range evs[:len(evs)-1] {
				var ch map[string]json.RawMessage
				if err := json.Unmarshal([]byte(ev.data), &ch); err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				u, hasUsage := ch["usage"]
				isUsageChunk := tt.wantUsage && i == len(evs)-2
				switch {
				case isUsageChunk:
					if string(ch["choices"]) != "[]" {
						t.Errorf("usage chunk choices: got %s, want []", ch["choices"])
					}
					want := `"prompt_tokens":3,"completion_tokens":3,"total_tokens":6`
					if !strings.Contains(string(u), want) {
						t.Errorf("usage: got %s, want it to hold %s", u, want)
					}
				case tt.wantChunkNu && string(u) != "null":
					t.Errorf("chunk %d usage: got %s, want null", i, u)
				case !tt.wantChunkNu && hasUsage:
					t.Errorf("chunk %d has usage %s, want none", i, u)
				}
				var c chatChunk
				_ = json.Unmarshal([]byte(ev.data), &c)
				if len(c.Choices) == 1 {
					if d, ok := c.Choices[0].Delta.(map[string]any); ok && d["content"] != nil {
						text.WriteString(fmt.Sprint(d["content"]))
					}
				}
			}
			if text.String() != "w1 w2 w3" {
				t.Errorf("streamed text: got %q, want %q", text.String(), "w1 w2 w3")
			}
		})
	}
}
