package fakeopenai_test

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeopenai"
)

const goKey = "sk-go-client-0123456789"

// newClient returns an official client talking to a fresh fake.
func newClient(t *testing.T, opts fakeopenai.Options) (*fakeopenai.Server, openai.Client) {
	t.Helper()
	s := fakeopenai.New(opts)
	s.AddKey(goKey)
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	c := openai.NewClient(
		option.WithBaseURL(ts.URL+"/v1/"),
		option.WithAPIKey(goKey),
		option.WithHTTPClient(ts.Client()),
		option.WithMaxRetries(0),
	)
	return s, c
}

// chatParams is a two-message chat: (1+2) + (1+3) = 7 prompt tokens.
func chatParams() openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model: openai.ChatModelGPT4oMini,
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("be brief"),
			openai.UserMessage("say hello please"),
		},
	}
}

func TestOpenAIGoChat(t *testing.T) {
	t.Parallel()
	_, c := newClient(t, fakeopenai.Options{Words: 4})
	got, err := c.Chat.Completions.New(t.Context(), chatParams())
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	if got.Usage.PromptTokens != 7 || got.Usage.CompletionTokens != 4 ||
		got.Usage.TotalTokens != 11 || !got.Usage.JSON.TotalTokens.Valid() {
		t.Errorf("usage: got %+v, want 7 + 4 = 11", got.Usage)
	}
	if len(got.Choices) != 1 || got.Choices[0].Message.Content != "w1 w2 w3 w4" ||
		got.Choices[0].FinishReason != "stop" {
		t.Errorf("choices: got %+v", got.Choices)
	}
}

func TestOpenAIGoChatStream(t *testing.T) {
	t.Parallel()
	for _, crlf := range []bool{false, true} {
		s, c := newClient(t, fakeopenai.Options{
			Words: 5, Stream: fakeopenai.StreamControl{CRLF: crlf, Split: fakeopenai.Split{
				At: -1, // every event, between its last two bytes
			}},
		})
		p := chatParams()
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		stream := c.Chat.Completions.NewStreaming(t.Context(), p)
		var acc openai.ChatCompletionAccumulator
		chunks := 0
		for stream.Next() {
			chunks++
			if !acc.AddChunk(stream.Current()) {
				t.Fatalf("crlf %v: chunk %d refused by the accumulator", crlf, chunks)
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("crlf %v: stream: %v", crlf, err)
		}
		if want := fakeopenai.ChatStreamEvents(5, true) - 1; chunks != want {
			t.Errorf("crlf %v: chunks: got %d, want %d", crlf, chunks, want)
		}
		if acc.Usage.PromptTokens != 7 || acc.Usage.CompletionTokens != 5 ||
			acc.Usage.TotalTokens != 12 {
			t.Errorf("crlf %v: usage: got %+v, want 7 + 5 = 12", crlf, acc.Usage)
		}
		if got := acc.Choices[0].Message.Content; got != "w1 w2 w3 w4 w5" {
			t.Errorf("crlf %v: content: got %q", crlf, got)
		}
		if got := string(s.Requests()[0].Body); !strings.Contains(got, `"include_usage":true`) {
			t.Errorf("crlf %v: request body %s lacks include_usage", crlf, got)
		}
	}
}

func TestOpenAIGoErrors(t *testing.T) {
	t.Parallel()
	s, c := newClient(t, fakeopenai.Options{})
	s.SetKeyState(goKey, fakeopenai.State{Kind: fakeopenai.NoQuota})
	_, err := c.Chat.Completions.New(t.Context(), chatParams())
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("got %v, want an *openai.Error", err)
	}
	if apiErr.StatusCode != 429 || apiErr.Code != "insufficient_quota" ||
		apiErr.Type != "insufficient_quota" {
		t.Errorf("got %d %q %q, want 429 insufficient_quota", apiErr.StatusCode, apiErr.Code,
			apiErr.Type)
	}
}
