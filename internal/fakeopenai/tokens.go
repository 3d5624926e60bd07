package fakeopenai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// request is what the fake reads from a request body.
type request struct {
	endpoint     endpoint
	model        string
	stream       bool
	includeUsage bool
	maxTokens    int64 // 0: no cap
	promptTokens int
	inputs       int // embeddings answered
	dimensions   int
	base64       bool // embeddings asked with encoding_format "base64"
}

// wireRequest is the union of the request fields the fake reads.
type wireRequest struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens           *int64            `json:"max_tokens"`
	MaxCompletionTokens *int64            `json:"max_completion_tokens"`
	MaxOutputTokens     *int64            `json:"max_output_tokens"`
	Messages            []json.RawMessage `json:"messages"`
	Prompt              json.RawMessage   `json:"prompt"`
	Input               json.RawMessage   `json:"input"`
	Instructions        json.RawMessage   `json:"instructions"`
	Dimensions          int               `json:"dimensions"`
	EncodingFormat      string            `json:"encoding_format"`
}

// parseRequest reads and checks a request body for endpoint ep.
func parseRequest(ep endpoint, body []byte) (*request, error) {
	var w wireRequest
	if err := decodeStrict(body, &w); err != nil {
		return nil, errors.New("We could not parse the JSON body of your request. " +
			"(HINT: This likely means you aren't using your HTTP library correctly.)")
	}
	if w.Model == "" {
		return nil, errors.New("you must provide a model parameter")
	}
	switch {
	case ep == epChat && len(w.Messages) == 0:
		return nil, errors.New("Missing required parameter: 'messages'.")
	case ep == epCompletions && isAbsent(w.Prompt):
		return nil, errors.New("Missing required parameter: 'prompt'.")
	case (ep == epEmbeddings || ep == epResponses) && isAbsent(w.Input):
		return nil, errors.New("Missing required parameter: 'input'.")
	}
	prompt, err := promptTokens(&w)
	if err != nil {
		return nil, err
	}
	req := &request{
		endpoint:     ep,
		model:        w.Model,
		stream:       w.Stream && ep != epEmbeddings,
		includeUsage: w.StreamOptions != nil && w.StreamOptions.IncludeUsage,
		promptTokens: prompt,
		inputs:       inputCount(w.Input),
		dimensions:   w.Dimensions,
		base64:       w.EncodingFormat == "base64",
	}
	for _, p := range []*int64{w.MaxTokens, w.MaxCompletionTokens, w.MaxOutputTokens} {
		if p != nil && *p > 0 {
			req.maxTokens = *p
		}
	}
	return req, nil
}

// decodeStrict decodes one JSON object with nothing after it.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode body: %w", err)
	}
	if dec.More() {
		return errors.New("decode body: data after the JSON value")
	}
	return nil
}

// isAbsent reports whether a field was missing or null.
func isAbsent(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// PromptTokens counts the prompt tokens the fake answers for a request
// body of any endpoint. The rule:
//
//   - each element of "messages" counts 1 plus the words of its content;
//   - "prompt", "input" and "instructions" each count as follows: a string
//     is 1 plus its words; an array of numbers (token ids) is 1 plus its
//     length; any other array is the sum of its elements, each counted by
//     this rule (an empty array is 0);
//   - an object (a message or a Responses input item) is 1 plus the words
//     of its "content";
//   - a content that is a string has its words; a content that is an array
//     of parts has the words of every part's "text" (a part that is a
//     string counts its words); anything else has none.
//
// Words are runs of non-space characters (strings.Fields). So
// {"messages":[{"role":"user","content":"say hi"}]} is 3 tokens, and
// {"input":["a b","c"]} is 5.
func PromptTokens(body []byte) (int, error) {
	var w wireRequest
	if err := decodeStrict(body, &w); err != nil {
		return 0, err
	}
	return promptTokens(&w)
}

// promptTokens applies the PromptTokens rule to a decoded body.
func promptTokens(w *wireRequest) (int, error) {
	n := 0
	for _, m := range w.Messages {
		c, err := countValue(m)
		if err != nil {
			return 0, fmt.Errorf("messages: %w", err)
		}
		n += c
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
	}{{"prompt", w.Prompt}, {"input", w.Input}, {"instructions", w.Instructions}} {
		c, err := countValue(f.raw)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", f.name, err)
		}
		n += c
	}
	return n, nil
}

// countValue counts one prompt value by the PromptTokens rule.
func countValue(raw json.RawMessage) (int, error) {
	raw = bytes.TrimSpace(raw)
	if isAbsent(raw) {
		return 0, nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, fmt.Errorf("read string: %w", err)
		}
		return 1 + len(strings.Fields(s)), nil
	case '[':
		return countArray(raw)
	case '{':
		var obj struct {
			Content json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(raw, &obj); err != nil {
			return 0, fmt.Errorf("read object: %w", err)
		}
		return 1 + contentWords(obj.Content), nil
	}
	return 0, errors.New("unexpected value: want a string, an array or an object")
}

// countArray counts an array by the PromptTokens rule.
func countArray(raw json.RawMessage) (int, error) {
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return 0, fmt.Errorf("read array: %w", err)
	}
	if len(elems) == 0 {
		return 0, nil
	}
	if allNumbers(elems) {
		return 1 + len(elems), nil
	}
	n := 0
	for _, e := range elems {
		c, err := countValue(e)
		if err != nil {
			return 0, err
		}
		n += c
	}
	return n, nil
}

// allNumbers reports whether every element is a JSON number.
func allNumbers(elems []json.RawMessage) bool {
	for _, e := range elems {
		var f float64
		if json.Unmarshal(e, &f) != nil {
			return false
		}
	}
	return true
}

// contentWords counts the words of a message content.
func contentWords(raw json.RawMessage) int {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return len(strings.Fields(s))
	}
	var parts []json.RawMessage
	if json.Unmarshal(raw, &parts) != nil {
		return 0
	}
	n := 0
	for _, p := range parts {
		var part struct {
			Text string `json:"text"`
		}
		if json.Unmarshal(p, &s) == nil {
			n += len(strings.Fields(s))
		} else if json.Unmarshal(p, &part) == nil {
			n += len(strings.Fields(part.Text))
		}
	}
	return n
}

// inputCount is the number of embeddings an "input" asks for: one for a
// string or a token array, one per element otherwise.
func inputCount(raw json.RawMessage) int {
	raw = bytes.TrimSpace(raw)
	if isAbsent(raw) || raw[0] != '[' {
		return 1
	}
	var elems []json.RawMessage
	if json.Unmarshal(raw, &elems) != nil || len(elems) == 0 || allNumbers(elems) {
		return 1
	}
	return len(elems)
}
