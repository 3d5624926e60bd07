package usage

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Errors a Result or a call may carry; match them with errors.Is.
var (
	// ErrNoCounts: a usage object names none of the known token counts.
	ErrNoCounts = errors.New("usage has no token counts")
	// ErrNegative: a token count is below zero.
	ErrNegative = errors.New("negative token count")
	// ErrTooLarge: an event or a captured field passed its size cap.
	ErrTooLarge = errors.New("too large")
	// ErrNotObject: a body that must be a JSON object is not one.
	ErrNotObject = errors.New("not a JSON object")
	// ErrTruncated: the input ended inside an event or a document.
	ErrTruncated = errors.New("truncated")
)

// Usage is the token usage of one call as the provider reported it.
//
// Prompt is prompt_tokens (chat, completions, embeddings) or input_tokens
// (Responses API); Completion is completion_tokens or output_tokens (zero
// for embeddings). Total is total_tokens, or Prompt+Completion when the
// provider sent no total. Found is false when the answer carried no
// usage at all (then the counts are zero and mean nothing).
type Usage struct {
	Model      string
	Prompt     int64
	Completion int64
	Total      int64
	Found      bool
}

// wireUsage is the union of the usage objects of the OpenAI APIs.
type wireUsage struct {
	PromptTokens     *int64 `json:"prompt_tokens"`
	CompletionTokens *int64 `json:"completion_tokens"`
	InputTokens      *int64 `json:"input_tokens"`
	OutputTokens     *int64 `json:"output_tokens"`
	TotalTokens      *int64 `json:"total_tokens"`
}

// usage converts w, checking that it says something and nothing negative.
func (w *wireUsage) usage(model string) (Usage, error) {
	prompt, hasPrompt := first(w.PromptTokens, w.InputTokens)
	completion, hasCompletion := first(w.CompletionTokens, w.OutputTokens)
	total, hasTotal := first(w.TotalTokens, nil)
	if !hasPrompt && !hasCompletion && !hasTotal {
		return Usage{}, ErrNoCounts
	}
	if prompt < 0 || completion < 0 || total < 0 {
		return Usage{}, ErrNegative
	}
	if !hasTotal {
		total = prompt + completion
	}
	return Usage{
		Model:      model,
		Prompt:     prompt,
		Completion: completion,
		Total:      total,
		Found:      true,
	}, nil
}

func first(a, b *int64) (int64, bool) {
	switch {
	case a != nil:
		return *a, true
	case b != nil:
		return *b, true
	}
	return 0, false
}

// errSyntax replaces encoding/json's syntax errors, whose text quotes a
// byte of the input, so that no error of this package holds input bytes.
var errSyntax = errors.New("invalid JSON")

// jsonErr returns err without input bytes in its text.
func jsonErr(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("%w at offset %d", errSyntax, se.Offset)
	}
	return err
}

// decodeUsage decodes a raw usage value; null means no usage.
func decodeUsage(raw []byte, model string) (Usage, error) {
	var w *wireUsage
	if err := json.Unmarshal(raw, &w); err != nil {
		return Usage{}, fmt.Errorf("decode usage: %w", jsonErr(err))
	}
	if w == nil {
		return Usage{}, nil
	}
	u, err := w.usage(model)
	if err != nil {
		return Usage{}, fmt.Errorf("decode usage: %w", err)
	}
	return u, nil
}

// skip accepts any JSON value without keeping it.
type skip struct{}

func (*skip) UnmarshalJSON([]byte) error { return nil }

// streamChunk is the part of a streamed event that metering reads: a
// chat or completions chunk (model, choices, usage) or a Responses API
// event (type, response.model, response.usage).
type streamChunk struct {
	Type     string     `json:"type"`
	Model    string     `json:"model"`
	Choices  []skip     `json:"choices"`
	Usage    *wireUsage `json:"usage"`
	Response *struct {
		Model string     `json:"model"`
		Usage *wireUsage `json:"usage"`
	} `json:"response"`
}

// chunkUsage reads one event's data. usageOnly reports a chat or
// completions chunk whose choices are present and empty and whose usage
// is set: the chunk that stream_options.include_usage adds.
func chunkUsage(data []byte) (u Usage, usageOnly bool, err error) {
	var c streamChunk
	if err := json.Unmarshal(data, &c); err != nil {
		return Usage{}, false, fmt.Errorf("decode event: %w", jsonErr(err))
	}
	switch {
	case c.Usage != nil:
		u, err = c.Usage.usage(c.Model)
		usageOnly = c.Choices != nil && len(c.Choices) == 0
	case c.Response != nil && c.Response.Usage != nil:
		u, err = c.Response.Usage.usage(c.Response.Model)
	default:
		model := c.Model
		if model == "" && c.Response != nil {
			model = c.Response.Model
		}
		return Usage{Model: model}, false, nil
	}
	if err != nil {
		return Usage{}, false, fmt.Errorf("decode event usage: %w", err)
	}
	return u, usageOnly, nil
}
