package fakeopenai

import (
	"encoding/json"
	"net/http"
)

// respUsage is the Responses API usage object.
type respUsage struct {
	InputTokens        int `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int `json:"total_tokens"`
}

// outputPart is an output_text content part.
type outputPart struct {
	Type        string   `json:"type"`
	Annotations []string `json:"annotations"`
	Logprobs    []string `json:"logprobs"`
	Text        string   `json:"text"`
}

// outputItem is an assistant message output item.
type outputItem struct {
	ID      string       `json:"id"`
	Type    string       `json:"type"`
	Status  string       `json:"status"`
	Role    string       `json:"role"`
	Content []outputPart `json:"content"`
}

type incompleteDetails struct {
	Reason string `json:"reason"`
}

// responseObj is a Responses API "response" object.
type responseObj struct {
	ID                 string             `json:"id"`
	Object             string             `json:"object"`
	CreatedAt          int64              `json:"created_at"`
	Status             string             `json:"status"`
	Background         bool               `json:"background"`
	Error              *struct{}          `json:"error"`
	IncompleteDetails  *incompleteDetails `json:"incomplete_details"`
	Instructions       *string            `json:"instructions"`
	MaxOutputTokens    *int64             `json:"max_output_tokens"`
	Model              string             `json:"model"`
	Output             []outputItem       `json:"output"`
	ParallelToolCalls  bool               `json:"parallel_tool_calls"`
	PreviousResponseID *string            `json:"previous_response_id"`
	Store              bool               `json:"store"`
	Temperature        float64            `json:"temperature"`
	Text               json.RawMessage    `json:"text"`
	ToolChoice         string             `json:"tool_choice"`
	Tools              []string           `json:"tools"`
	TopP               float64            `json:"top_p"`
	Truncation         string             `json:"truncation"`
	Usage              *respUsage         `json:"usage"`
	Metadata           map[string]string  `json:"metadata"`
}

// respEvent is one Responses API stream event; unused fields are omitted.
type respEvent struct {
	Type           string          `json:"type"`
	SequenceNumber int             `json:"sequence_number"`
	Response       *responseObj    `json:"response,omitempty"`
	ItemID         string          `json:"item_id,omitempty"`
	OutputIndex    *int            `json:"output_index,omitempty"`
	ContentIndex   *int            `json:"content_index,omitempty"`
	Item           *outputItem     `json:"item,omitempty"`
	Part           *outputPart     `json:"part,omitempty"`
	Delta          *string         `json:"delta,omitempty"`
	Text           *string         `json:"text,omitempty"`
	Logprobs       json.RawMessage `json:"logprobs,omitempty"`
}

// ResponseStreamEvents is the number of events of a streamed Responses
// API answer of words words: created, in_progress, output_item.added,
// content_part.added, one output_text.delta per word, output_text.done,
// content_part.done, output_item.done, and completed (or incomplete when
// max_output_tokens cut the answer).
func ResponseStreamEvents(words int) int { return words + 8 }

// response builds the call's response object in status with the given
// output; usage is set only when the response is finished.
func (c *call) response(status string, output []outputItem) *responseObj {
	resp := &responseObj{
		ID: c.id("resp_"), Object: "response", CreatedAt: c.created, Status: status,
		Model: c.req.model, Output: output, ParallelToolCalls: true, Store: true,
		Temperature: 1, Text: json.RawMessage(`{"format":{"type":"text"}}`),
		ToolChoice: "auto", Tools: []string{}, TopP: 1, Truncation: "disabled",
		Metadata: map[string]string{},
	}
	if c.req.maxTokens > 0 {
		resp.MaxOutputTokens = &c.req.maxTokens
	}
	if (status == "completed" || status == "incomplete") && !c.noUsage {
		u := &respUsage{InputTokens: c.prompt, OutputTokens: c.words}
		u.TotalTokens = c.prompt + c.words
		resp.Usage = u
	}
	if status == "incomplete" {
		resp.IncompleteDetails = &incompleteDetails{Reason: "max_output_tokens"}
	}
	return resp
}

// finalStatus is "incomplete" when max_output_tokens cut the answer.
func (c *call) finalStatus() string {
	if c.capped {
		return "incomplete"
	}
	return "completed"
}

// message returns the call's output message in status with parts.
func (c *call) message(status string, parts []outputPart) outputItem {
	return outputItem{
		ID: c.id("msg_"), Type: "message", Status: status, Role: "assistant", Content: parts,
	}
}

// textPart returns an output_text part holding text.
func textPart(text string) outputPart {
	return outputPart{
		Type: "output_text", Annotations: []string{}, Logprobs: []string{}, Text: text,
	}
}

// responses answers a Responses API call, JSON or streamed.
func (s *Server) responses(w http.ResponseWriter, r *http.Request, c *call) {
	status := c.finalStatus()
	if !c.req.stream {
		msg := c.message(status, []outputPart{textPart(Text(c.words))})
		setAnswerHeaders(w.Header(), c)
		writeJSON(w, http.StatusOK, c.response(status, []outputItem{msg}))
		return
	}

	st := startStream(w, r, c, ResponseStreamEvents(c.words))
	defer st.close()
	seq := 0
	zero := 0
	send := func(ev respEvent) bool {
		ev.SequenceNumber = seq
		seq++
		return st.event(ev.Type, mustJSON(ev)) == nil
	}
	inItem := func(ev respEvent) respEvent {
		ev.ItemID, ev.OutputIndex, ev.ContentIndex = c.id("msg_"), &zero, &zero
		return ev
	}

	// The response opens, then its message and its text part.
	opening := []respEvent{
		{Type: "response.created", Response: c.response("in_progress", []outputItem{})},
		{Type: "response.in_progress", Response: c.response("in_progress", []outputItem{})},
		{Type: "response.output_item.added", OutputIndex: &zero,
			Item: new(c.message("in_progress", []outputPart{}))},
		inItem(respEvent{Type: "response.content_part.added", Part: new(textPart(""))}),
	}
	for _, ev := range opening {
		if !send(ev) {
			return
		}
	}

	// One delta per word.
	for i := 1; c.ctl.Endless || i <= c.words; i++ {
		ev := inItem(respEvent{Type: "response.output_text.delta", Delta: new(Word(i))})
		ev.Logprobs = json.RawMessage("[]")
		if !send(ev) {
			return
		}
	}

	// The text, part, message and response close.
	text := Text(c.words)
	done := inItem(respEvent{Type: "response.output_text.done", Text: &text})
	done.Logprobs = json.RawMessage("[]")
	msg := c.message(status, []outputPart{textPart(text)})
	closing := []respEvent{
		done,
		inItem(respEvent{Type: "response.content_part.done", Part: new(textPart(text))}),
		{Type: "response.output_item.done", OutputIndex: &zero, Item: &msg},
		{Type: "response." + status, Response: c.response(status, []outputItem{msg})},
	}
	for _, ev := range closing {
		if !send(ev) {
			return
		}
	}
}
