package fakeopenai_test

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

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
	// Gzip: the client's transport asks for and decodes it.
	_, c := newClient(t, fakeopenai.Options{Words: 4, Gzip: true})
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
			Words: 5, Gzip: crlf,
			Stream: fakeopenai.StreamControl{
				CRLF:  crlf,
				Split: fakeopenai.Split{At: -1}, // every event, between its last two bytes
			},
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

func TestOpenAIGoCompletions(t *testing.T) {
	t.Parallel()
	_, c := newClient(t, fakeopenai.Options{Words: 3})
	p := openai.CompletionNewParams{
		Model:  openai.CompletionNewParamsModelGPT3_5TurboInstruct,
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("one two")},
	}
	got, err := c.Completions.New(t.Context(), p)
	if err != nil {
		t.Fatalf("completion: %v", err)
	}
	if got.Usage.PromptTokens != 3 || got.Usage.CompletionTokens != 3 ||
		got.Choices[0].Text != "w1 w2 w3" {
		t.Errorf("got usage %+v text %q, want 3 + 3, w1 w2 w3", got.Usage, got.Choices[0].Text)
	}

	// Streamed, with usage.
	p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := c.Completions.NewStreaming(t.Context(), p)
	var text strings.Builder
	var usage openai.CompletionUsage
	for stream.Next() {
		ch := stream.Current()
		for _, choice := range ch.Choices {
			text.WriteString(choice.Text)
		}
		if ch.JSON.Usage.Valid() {
			usage = ch.Usage
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if text.String() != "w1 w2 w3" || usage.TotalTokens != 6 {
		t.Errorf("stream: got text %q usage %+v, want w1 w2 w3 and 6 tokens", text.String(),
			usage)
	}
}

func TestOpenAIGoEmbeddings(t *testing.T) {
	t.Parallel()
	_, c := newClient(t, fakeopenai.Options{})
	for _, format := range []openai.EmbeddingNewParamsEncodingFormat{
		openai.EmbeddingNewParamsEncodingFormatFloat, openai.EmbeddingNewParamsEncodingFormatBase64,
	} {
		input := openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a b", "c"}}
		got, err := c.Embeddings.New(t.Context(), openai.EmbeddingNewParams{
			Model:          openai.EmbeddingModelTextEmbedding3Small,
			Input:          input,
			EncodingFormat: format,
			Dimensions:     openai.Int(4),
		})
		if err != nil {
			t.Fatalf("%s: embeddings: %v", format, err)
		}
		// (1+2) + (1+1) = 5 prompt tokens.
		if got.Usage.PromptTokens != 5 || got.Usage.TotalTokens != 5 || len(got.Data) != 2 {
			t.Fatalf("%s: got usage %+v and %d embeddings, want 5 and 2", format, got.Usage,
				len(got.Data))
		}
		// Value j of embedding i is (i+1)/(j+2).
		if e := got.Data[1].Embedding; len(e) != 4 || e[0] != 1 || e[2] != 0.5 {
			t.Errorf("%s: embedding 1: got %v, want [1 0.666 0.5 0.4]", format, e)
		}
	}
}

func TestOpenAIGoResponses(t *testing.T) {
	t.Parallel()
	_, c := newClient(t, fakeopenai.Options{Words: 4})
	p := responses.ResponseNewParams{
		Model:        openai.ChatModelGPT4oMini,
		Instructions: openai.String("be brief"),
		Input:        responses.ResponseNewParamsInputUnion{OfString: openai.String("hi there")},
	}
	// (1+2) + (1+2) = 6 input tokens.
	got, err := c.Responses.New(t.Context(), p)
	if err != nil {
		t.Fatalf("responses: %v", err)
	}
	if got.Usage.InputTokens != 6 || got.Usage.OutputTokens != 4 ||
		got.Usage.TotalTokens != 10 || got.OutputText() != "w1 w2 w3 w4" ||
		got.Status != responses.ResponseStatusCompleted {
		t.Errorf("got usage %+v text %q status %q", got.Usage, got.OutputText(), got.Status)
	}

	// Streamed: the deltas make the text, response.completed has usage.
	stream := c.Responses.NewStreaming(t.Context(), p)
	var text strings.Builder
	var completed *responses.Response
	events, lastSeq := 0, int64(-1)
	for stream.Next() {
		ev := stream.Current()
		events++
		if ev.SequenceNumber != lastSeq+1 {
			t.Errorf("sequence number: got %d after %d", ev.SequenceNumber, lastSeq)
		}
		lastSeq = ev.SequenceNumber
		switch ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.AsResponseOutputTextDelta().Delta)
		case "response.completed":
			r := ev.AsResponseCompleted().Response
			completed = &r
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if events != fakeopenai.ResponseStreamEvents(4) || text.String() != "w1 w2 w3 w4" {
		t.Errorf("got %d events text %q, want %d and w1 w2 w3 w4", events, text.String(),
			fakeopenai.ResponseStreamEvents(4))
	}
	if completed == nil || completed.Usage.TotalTokens != 10 || completed.OutputText() !=
		"w1 w2 w3 w4" {
		t.Errorf("response.completed: got %+v", completed)
	}
}

func TestOpenAIGoResponsesIncomplete(t *testing.T) {
	t.Parallel()
	_, c := newClient(t, fakeopenai.Options{Words: 40})
	got, err := c.Responses.New(t.Context(), responses.ResponseNewParams{
		Model:           openai.ChatModelGPT4oMini,
		Input:           responses.ResponseNewParamsInputUnion{OfString: openai.String("x")},
		MaxOutputTokens: openai.Int(16),
	})
	if err != nil {
		t.Fatalf("responses: %v", err)
	}
	if got.Status != responses.ResponseStatusIncomplete || got.Usage.OutputTokens != 16 ||
		got.IncompleteDetails.Reason != "max_output_tokens" {
		t.Errorf("got status %q output tokens %d details %+v", got.Status,
			got.Usage.OutputTokens, got.IncompleteDetails)
	}
}
