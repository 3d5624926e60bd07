package fakeopenai

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultWords is the number of completion words (tokens, stream content
// chunks) when Options.Words is zero.
const DefaultWords = 5

// MaxWords bounds the completion words of one answer (a JSON answer holds
// its whole text); StreamControl.Endless streams without a bound.
const MaxWords = 1 << 20

// DefaultModel is the model answered when a request names none.
const DefaultModel = "gpt-4o-mini"

// maxBody bounds every request body.
const maxBody = 8 << 20

// Options configure a Server.
type Options struct {
	// Keys are known from the start, each Active (as AddKey).
	Keys []string
	// Words is the number of completion words; zero means DefaultWords;
	// at most MaxWords.
	// A request's max_tokens (or max_completion_tokens, max_output_tokens)
	// lowers it; a request's X-Fake-Words header replaces it.
	Words int
	// EchoKey makes 401 and 429 error messages carry the whole key the
	// request presented, as a careless upstream could; otherwise they carry
	// it masked as OpenAI does.
	EchoKey bool
	// Stream is the default StreamControl of streamed answers.
	Stream StreamControl
	// Latency is waited before any answer (after the request is read and
	// recorded); a request's X-Fake-Latency header replaces it.
	Latency time.Duration
	// NoUsage leaves usage out of every answer, as an OpenAI-compatible
	// server that ignores stream_options does: no "usage" in JSON answers,
	// no usage chunk (nor "usage": null) in chat and legacy streams, null
	// usage in a Responses API answer. A request's X-Fake-No-Usage header
	// ("true" or "1") replaces it. Stats count the tokens all the same.
	NoUsage bool
	// Gzip compresses answers (JSON, streams and errors) with
	// Content-Encoding gzip when the request's Accept-Encoding allows it,
	// as OpenAI does. Off by default: answers are identity-encoded.
	Gzip bool
	// Now is the clock of "created" fields; nil means time.Now.
	Now func() time.Time
}

// Server is the fake. Its methods are safe for concurrent use with the
// handler; mu guards every field below it.
type Server struct {
	opts Options

	mu      sync.Mutex
	keys    map[string]*keyEntry
	records []Record
	dropped int // records forgotten by Reset
	stats   map[string]*KeyStats
	hold    chan struct{} // non-nil while Hold is in force
	seq     int
}

// New returns a Server configured by opts.
func New(opts Options) *Server {
	if opts.Words <= 0 {
		opts.Words = DefaultWords
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{
		opts:  opts,
		keys:  make(map[string]*keyEntry),
		stats: make(map[string]*KeyStats),
	}
	for _, k := range opts.Keys {
		s.AddKey(k)
	}
	return s
}

// Handler returns the fake's http.Handler.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serve) }

// endpoint is the kind of call a path names.
type endpoint int

const (
	epNone endpoint = iota
	epChat
	epCompletions
	epEmbeddings
	epResponses
	epModels
)

// route names the endpoint by the path's suffix, whatever its prefix.
func route(path string) endpoint {
	path = strings.TrimSuffix(path, "/")
	switch {
	case strings.HasSuffix(path, "/chat/completions"):
		return epChat
	case strings.HasSuffix(path, "/completions"):
		return epCompletions
	case strings.HasSuffix(path, "/embeddings"):
		return epEmbeddings
	case strings.HasSuffix(path, "/responses"):
		return epResponses
	case strings.HasSuffix(path, "/models"):
		return epModels
	}
	return epNone
}

// serve handles one request: it is read and recorded, Latency passes,
// then come OpenAI's checks in its order (the route and method, the key,
// the body) and the answer.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	// Read and record the request whole, whatever comes next.
	body, readErr := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	key, present := requestKey(r.Header)
	seq := s.record(r, key, body)
	rw := &statusWriter{ResponseWriter: w, gzip: s.opts.Gzip && acceptsGzip(r.Header)}
	defer func() { s.setStatus(seq, key, rw.status) }()
	latency := s.opts.Latency
	if v, err := time.ParseDuration(r.Header.Get(HeaderLatency)); err == nil && v >= 0 {
		latency = v
	}
	if !sleep(r.Context(), latency) {
		return
	}

	// Route, then authenticate.
	ep := route(r.URL.Path)
	method := http.MethodPost
	if ep == epModels {
		method = http.MethodGet
	}
	if ep == epNone || r.Method != method {
		msg := "Invalid URL (" + r.Method + " " + r.URL.Path + ")"
		writeError(rw, http.StatusNotFound, apiError{Message: msg, Type: typeInvalid})
		return
	}
	if !s.authorize(rw, key, present) {
		return
	}

	if ep == epModels {
		writeModels(rw)
		return
	}

	// Parse the body.
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(readErr, &tooLarge):
		writeError(rw, http.StatusRequestEntityTooLarge,
			apiError{Message: "Request body too large.", Type: typeInvalid})
		return
	case readErr != nil:
		writeError(rw, http.StatusBadRequest,
			apiError{Message: "The request body could not be read.", Type: typeInvalid})
		return
	}
	req, err := parseRequest(ep, body)
	if err != nil {
		writeError(rw, http.StatusBadRequest, apiError{Message: err.Error(), Type: typeInvalid})
		return
	}
	c := s.newCall(r, key, req)

	// Answer.
	switch ep {
	case epChat:
		s.chat(rw, r, c)
	case epCompletions:
		s.completions(rw, r, c)
	case epEmbeddings:
		s.embeddings(rw, c)
	case epResponses:
		s.responses(rw, r, c)
	}
}

// writeModels answers GET .../models: a list holding DefaultModel.
func writeModels(w http.ResponseWriter) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	writeJSON(w, http.StatusOK, struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{"list", []model{{ID: DefaultModel, Object: "model", Created: 1721172741, OwnedBy: "system"}}})
}

// call is one authorised request about to be answered.
type call struct {
	req     *request
	seq     int
	created int64
	words   int  // completion words answered
	capped  bool // words were lowered by the request's token cap
	prompt  int
	noUsage bool // usage is left out of the answer
	ctl     StreamControl
	hold    chan struct{}
	key     string
}

// newCall fixes a call's numbers and stream control, and counts its tokens
// for the key.
func (s *Server) newCall(r *http.Request, key string, req *request) *call {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	c := &call{
		req:     req,
		seq:     s.seq,
		created: s.opts.Now().Unix(),
		prompt:  req.promptTokens,
		ctl:     s.opts.Stream.override(r.Header),
		hold:    s.hold,
		key:     key,
	}
	c.noUsage = s.opts.NoUsage
	if v, err := strconv.ParseBool(r.Header.Get(HeaderNoUsage)); err == nil {
		c.noUsage = v
	}
	if c.noUsage {
		req.includeUsage = false // the stream ignores the request's stream_options
	}
	words := s.opts.Words
	if v, err := strconv.Atoi(r.Header.Get(HeaderWords)); err == nil && v >= 0 {
		words = v
	}
	words = min(words, MaxWords)
	c.words = CompletionTokens(words, req.maxTokens)
	c.capped = c.words < words
	st := s.statsLocked(key)
	st.PromptTokens += int64(c.prompt)
	if req.endpoint != epEmbeddings {
		st.CompletionTokens += int64(c.words)
	}
	return c
}

// CompletionTokens is the number of completion tokens (words, stream
// content chunks) the fake answers: words, or maxTokens when it is
// positive and smaller.
func CompletionTokens(words int, maxTokens int64) int {
	if maxTokens > 0 && maxTokens < int64(words) {
		return int(maxTokens)
	}
	return words
}

// Hold makes every stream that starts from now on pause after its first
// event until release is called (or its client goes away), so a test can
// see the first event arrive before the rest exists. release is
// idempotent.
func (s *Server) Hold() (release func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.hold = ch
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.hold == ch {
				s.hold = nil
			}
			s.mu.Unlock()
			close(ch)
		})
	}
}

// SetStream replaces the default StreamControl (Options.Stream) for
// requests that start from now on.
func (s *Server) SetStream(ctl StreamControl) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Stream = ctl
}

// statusWriter remembers the status answered, and whether answers are
// compressed.
type statusWriter struct {
	http.ResponseWriter
	status int
	gzip   bool
}

// compress reports whether answers through w are gzipped.
func compress(w http.ResponseWriter) bool {
	sw, ok := w.(*statusWriter)
	return ok && sw.gzip
}

// acceptsGzip reports whether Accept-Encoding allows gzip (a q=0 entry
// refuses it).
func acceptsGzip(h http.Header) bool {
	for _, v := range h.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(name), "gzip") {
				q := strings.ReplaceAll(params, " ", "")
				return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
			}
		}
	}
	return false
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the flusher and hijacker.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
