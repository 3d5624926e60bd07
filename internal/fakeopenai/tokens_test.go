package fakeopenai

import (
	"testing"
)

func TestPromptTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want int
	}{
		{"one message", `{"messages":[{"role":"user","content":"say hi"}]}`, 3},
		{"spaces", `{"messages":[{"role":"user","content":"  a \n\t b  "}]}`, 3},
		{"empty content", `{"messages":[{"role":"user","content":""}]}`, 1},
		{"null content", `{"messages":[{"role":"assistant","content":null,"tool_calls":[]}]}`, 1},
		{
			"content parts",
			`{"messages":[{"role":"user","content":[{"type":"text","text":"a b"},` +
				`{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"c"}]}]}`,
			4,
		},
		{"prompt string", `{"prompt":"a b c"}`, 4},
		{"prompt strings", `{"prompt":["a b","c"]}`, 5},
		{"prompt tokens", `{"prompt":[1,2,3]}`, 4},
		{"prompt token arrays", `{"prompt":[[1,2],[3]]}`, 5},
		{"input empty array", `{"input":[]}`, 0},
		{
			"responses items",
			`{"instructions":"be nice","input":[{"role":"user","content":"hi"},` +
				`{"role":"user","content":[{"type":"input_text","text":"a b"}]}]}`,
			3 + 2 + 3,
		},
		{"nothing", `{"model":"m"}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := PromptTokens([]byte(tt.body))
			if err != nil {
				t.Fatalf("PromptTokens: %v", err)
			}
			if got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestPromptTokensErrors(t *testing.T) {
	t.Parallel()
	for _, body := range []string{``, `{`, `[]`, `{"prompt":true}`, `{"input":5}`, `{} {}`} {
		if n, err := PromptTokens([]byte(body)); err == nil {
			t.Errorf("%q: got %d, want an error", body, n)
		}
	}
}

func TestCompletionTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		words int
		max   int64
		want  int
	}{{5, 0, 5}, {5, 3, 3}, {5, 5, 5}, {5, 9, 5}, {0, 2, 0}}
	for _, tt := range tests {
		if got := CompletionTokens(tt.words, tt.max); got != tt.want {
			t.Errorf("CompletionTokens(%d, %d): got %d, want %d", tt.words, tt.max, got, tt.want)
		}
	}
}

func FuzzPromptTokens(f *testing.F) {
	f.Add([]byte(`{"messages":[{"role":"user","content":[{"type":"text","text":"a b"}]}]}`))
	f.Add([]byte(`{"prompt":[[1,2],[3]],"input":"x","instructions":"y z"}`))
	f.Add([]byte(`{"input":[{"content":null},"a",[1]]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := PromptTokens(body)
		if err != nil {
			return
		}
		if n < 0 || n > len(body) {
			t.Fatalf("got %d tokens for %d bytes", n, len(body))
		}
	})
}
