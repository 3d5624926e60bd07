package fakeopenai

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// Fixed fields of every answer.
const (
	serviceTier       = "default"
	systemFingerprint = "fp_fake"
)

// Word returns the i-th completion word (from 1) as it appears in an
// answer's text: "w1", then " w2", " w3"... The whole text of an answer
// of n words is Text(n).
func Word(i int) string {
	if i == 1 {
		return "w1"
	}
	return " w" + strconv.Itoa(i)
}

// Text returns the text of an answer of n completion words.
func Text(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		b.WriteString(Word(i))
	}
	return b.String()
}

// chatUsage is the usage object of chat and legacy completions.
type chatUsage struct {
	PromptTokens            int           `json:"prompt_tokens"`
	CompletionTokens        int           `json:"completion_tokens"`
	TotalTokens             int           `json:"total_tokens"`
	PromptTokensDetails     promptDetails `json:"prompt_tokens_details"`
	CompletionTokensDetails outputDetails `json:"completion_tokens_details"`
}

type promptDetails struct {
	CachedTokens int `json:"cached_tokens"`
	AudioTokens  int `json:"audio_tokens"`
}

type outputDetails struct {
	ReasoningTokens          int `json:"reasoning_tokens"`
	AudioTokens              int `json:"audio_tokens"`
	AcceptedPredictionTokens int `json:"accepted_prediction_tokens"`
	RejectedPredictionTokens int `json:"rejected_prediction_tokens"`
}

// usage returns the call's chat usage.
func (c *call) usage() chatUsage {
	return chatUsage{
		PromptTokens:     c.prompt,
		CompletionTokens: c.words,
		TotalTokens:      c.prompt + c.words,
	}
}

// jsonUsage is the usage of a JSON answer, nil when it is to be omitted.
func (c *call) jsonUsage() *chatUsage {
	if c.noUsage {
		return nil
	}
	u := c.usage()
	return &u
}

// finishReason is "length" when the request's cap cut the answer.
func (c *call) finishReason() string {
	if c.capped {
		return "length"
	}
	return "stop"
}

// id returns the call's answer id with prefix.
func (c *call) id(prefix string) string { return prefix + "fake" + strconv.Itoa(c.seq) }

// setAnswerHeaders sets the headers of every successful answer.
func setAnswerHeaders(h http.Header, c *call) {
	h.Set("X-Request-Id", "req_fake"+strconv.Itoa(c.seq))
	h.Set("Openai-Processing-Ms", "1")
	h.Set("X-Ratelimit-Limit-Requests", "10000")
	h.Set("X-Ratelimit-Remaining-Requests", "9999")
	h.Set("X-Ratelimit-Reset-Requests", "6ms")
}

// chatMessage is the assistant message of a chat.completion.
type chatMessage struct {
	Role        string   `json:"role"`
	Content     string   `json:"content"`
	Refusal     *string  `json:"refusal"`
	Annotations []string `json:"annotations"`
}

type chatChoice struct {
	Index        int         `json:"index"`
	Message      chatMessage `json:"message"`
	Logprobs     *struct{}   `json:"logprobs"`
	FinishReason string      `json:"finish_reason"`
}

type chatCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	Choices           []chatChoice `json:"choices"`
	Usage             *chatUsage   `json:"usage,omitempty"` // nil: no usage sent
	ServiceTier       string       `json:"service_tier"`
	SystemFingerprint string       `json:"system_fingerprint"`
}

// chunkChoice is a chat.completion.chunk choice; Delta is an object.
type chunkChoice struct {
	Index        int       `json:"index"`
	Delta        any       `json:"delta"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type chatChunk struct {
	ID                string        `json:"id"`
	Object            string        `json:"object"`
	Created           int64         `json:"created"`
	Model             string        `json:"model"`
	ServiceTier       string        `json:"service_tier"`
	SystemFingerprint string        `json:"system_fingerprint"`
	Choices           []chunkChoice `json:"choices"`
	// Usage is null on every chunk but the last when the request asked
	// for usage, absent otherwise, as OpenAI sends it.
	Usage json.RawMessage `json:"usage,omitempty"`
}

// chat answers a chat completion.
func (s *Server) chat(w http.ResponseWriter, r *http.Request, c *call) {
	if c.req.stream {
		s.chatStream(w, r, c)
		return
	}
	setAnswerHeaders(w.Header(), c)
	writeJSON(w, http.StatusOK, chatCompletion{
		ID:      c.id("chatcmpl-"),
		Object:  "chat.completion",
		Created: c.created,
		Model:   c.req.model,
		Choices: []chatChoice{{
			Message: chatMessage{
				Role: "assistant", Content: Text(c.words), Annotations: []string{},
			},
			FinishReason: c.finishReason(),
		}},
		Usage:             c.jsonUsage(),
		ServiceTier:       serviceTier,
		SystemFingerprint: systemFingerprint,
	})
}

// ChatStreamEvents is the number of events of a streamed chat
// completion of words words: the role chunk, one chunk per word, the
// finish chunk, the usage-only chunk when asked for, and [DONE]. A legacy
// completions stream has no role chunk: one event fewer.
func ChatStreamEvents(words int, includeUsage bool) int {
	n := words + 3
	if includeUsage {
		n++
	}
	return n
}

// chatStream streams a chat completion: role chunk, content chunks,
// finish chunk, usage chunk when asked for, [DONE].
func (s *Server) chatStream(w http.ResponseWriter, r *http.Request, c *call) {
	st := startStream(w, r, c, ChatStreamEvents(c.words, c.req.includeUsage))
	defer st.close()
	chunk := func(delta any, finish *string) []byte {
		ch := chatChunk{
			ID: c.id("chatcmpl-"), Object: "chat.completion.chunk", Created: c.created,
			Model: c.req.model, ServiceTier: serviceTier, SystemFingerprint: systemFingerprint,
			Choices: []chunkChoice{{Delta: delta, FinishReason: finish}},
		}
		if c.req.includeUsage {
			ch.Usage = json.RawMessage("null")
		}
		return mustJSON(ch)
	}

	// The role chunk, then one chunk per word.
	role := map[string]any{"role": "assistant", "content": "", "refusal": nil}
	if st.event("", chunk(role, nil)) != nil {
		return
	}
	for i := 1; c.ctl.Endless || i <= c.words; i++ {
		if st.event("", chunk(map[string]string{"content": Word(i)}, nil)) != nil {
			return
		}
	}

	// The finish chunk, the usage chunk, [DONE].
	reason := c.finishReason()
	if st.event("", chunk(struct{}{}, &reason)) != nil {
		return
	}
	if c.req.includeUsage {
		last := chatChunk{
			ID: c.id("chatcmpl-"), Object: "chat.completion.chunk", Created: c.created,
			Model: c.req.model, ServiceTier: serviceTier, SystemFingerprint: systemFingerprint,
			Choices: []chunkChoice{}, Usage: mustJSON(c.usage()),
		}
		if st.event("", mustJSON(last)) != nil {
			return
		}
	}
	_ = st.event("", []byte("[DONE]"))
}

// mustJSON encodes one of the fake's own answer types, which always
// encode.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte("null") // unreachable for the fake's own types
	}
	return b
}
