package fakeopenai

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
)

// legacyUsage is the usage object of legacy completions.
type legacyUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type textChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type textCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	Choices           []textChoice `json:"choices"`
	SystemFingerprint string       `json:"system_fingerprint"`
	// Usage is the usage object in a JSON answer and a stream's last
	// chunk, null on a stream's other chunks when the request asked for
	// usage, absent otherwise.
	Usage json.RawMessage `json:"usage,omitempty"`
}

// completions answers a legacy completion, JSON or streamed.
func (s *Server) completions(w http.ResponseWriter, r *http.Request, c *call) {
	u := legacyUsage{
		PromptTokens: c.prompt, CompletionTokens: c.words, TotalTokens: c.prompt + c.words,
	}
	reason := c.finishReason()
	answer := func(choices []textChoice, usage json.RawMessage) textCompletion {
		return textCompletion{
			ID: c.id("cmpl-"), Object: "text_completion", Created: c.created,
			Model: c.req.model, Choices: choices, SystemFingerprint: systemFingerprint,
			Usage: usage,
		}
	}
	if !c.req.stream {
		usage := mustJSON(u)
		if c.noUsage {
			usage = nil
		}
		setAnswerHeaders(w.Header(), c)
		writeJSON(w, http.StatusOK,
			answer([]textChoice{{Text: Text(c.words), FinishReason: &reason}}, usage))
		return
	}

	// Stream: one chunk per word, the finish chunk, the usage chunk when
	// asked for, [DONE].
	st := startStream(w, r, c, ChatStreamEvents(c.words, c.req.includeUsage)-1)
	defer st.close()
	var null json.RawMessage
	if c.req.includeUsage {
		null = json.RawMessage("null")
	}
	for i := 1; c.ctl.Endless || i <= c.words; i++ {
		if st.event("", mustJSON(answer([]textChoice{{Text: Word(i)}}, null))) != nil {
			return
		}
	}
	if st.event("", mustJSON(answer([]textChoice{{FinishReason: &reason}}, null))) != nil {
		return
	}
	if c.req.includeUsage {
		if st.event("", mustJSON(answer([]textChoice{}, mustJSON(u)))) != nil {
			return
		}
	}
	_ = st.event("", []byte("[DONE]"))
}

// DefaultDimensions is the length of an embedding when the request does
// not set "dimensions".
const DefaultDimensions = 8

type embedding struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"`
}

type embeddingUsage struct {
	PromptTokens int `json:"prompt_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

type embeddingList struct {
	Object string          `json:"object"`
	Data   []embedding     `json:"data"`
	Model  string          `json:"model"`
	Usage  *embeddingUsage `json:"usage,omitempty"`
}

// embeddings answers one embedding per input, as float arrays or, with
// encoding_format "base64", as base64 of little-endian float32 values.
// Value j of embedding i is (i+1)/(j+2).
func (s *Server) embeddings(w http.ResponseWriter, c *call) {
	dims := c.req.dimensions
	if dims <= 0 || dims > 4096 {
		dims = DefaultDimensions
	}
	list := embeddingList{
		Object: "list", Model: c.req.model,
	}
	if !c.noUsage {
		list.Usage = &embeddingUsage{PromptTokens: c.prompt, TotalTokens: c.prompt}
	}
	for i := range c.req.inputs {
		vec := make([]float32, dims)
		for j := range vec {
			vec[j] = float32(i+1) / float32(j+2)
		}
		e := embedding{Object: "embedding", Index: i, Embedding: vec}
		if c.req.base64 {
			raw := make([]byte, 0, 4*dims)
			for _, v := range vec {
				raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(v))
			}
			e.Embedding = base64.StdEncoding.EncodeToString(raw)
		}
		list.Data = append(list.Data, e)
	}
	setAnswerHeaders(w.Header(), c)
	writeJSON(w, http.StatusOK, list)
}
