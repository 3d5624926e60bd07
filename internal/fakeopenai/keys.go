package fakeopenai

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Kind is what a known key does to the requests that present it.
type Kind int

// Kinds of key state.
const (
	// Active keys are answered normally.
	Active Kind = iota
	// Revoked keys answer 401 invalid_api_key.
	Revoked
	// RateLimited keys answer 429 rate_limit_exceeded.
	RateLimited
	// NoQuota keys answer 429 insufficient_quota.
	NoQuota
	// Failing keys answer State.Status (a 5xx) with a server_error.
	Failing
	// Dropped keys get no answer: the connection is reset once the request
	// is read (an outcome the client cannot know).
	Dropped
)

// State is a key's behaviour.
type State struct {
	Kind Kind
	// RetryAfter, for RateLimited, is sent as Retry-After (whole seconds,
	// rounded up), retry-after-ms (milliseconds) and
	// x-ratelimit-reset-requests (Go duration text such as "1.5s" or
	// "6m0s", OpenAI's format). Zero sends none of the three.
	RetryAfter time.Duration
	// Status, for Failing, is the status answered; zero means 500.
	Status int
	// Times is how many requests the state affects before the key turns
	// Active again; zero means until the next SetKeyState.
	Times int
}

// keyEntry is a known key's state.
type keyEntry struct {
	state State
}

// AddKey makes key known and Active (it resets a known key's state).
func (s *Server) AddKey(key string) {
	s.SetKeyState(key, State{})
}

// RemoveKey makes key unknown: its requests answer 401.
func (s *Server) RemoveKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, key)
}

// SetKeyState makes key known with the given state.
func (s *Server) SetKeyState(key string, st State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[key] = &keyEntry{state: st}
}

// takeState returns the state a request with key meets, counting it
// against State.Times, and whether the key is known.
func (s *Server) takeState(key string) (State, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.keys[key]
	if e == nil {
		return State{}, false
	}
	st := e.state
	if st.Kind != Active && st.Times > 0 {
		if e.state.Times--; e.state.Times == 0 {
			e.state = State{}
		}
	}
	return st, true
}

// requestKey reads a request's key: "Authorization: Bearer <key>" first,
// then "api-key". present reports whether either header was sent.
func requestKey(h http.Header) (key string, present bool) {
	if auth := h.Get("Authorization"); auth != "" {
		scheme, rest, _ := strings.Cut(auth, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return "", true
		}
		return strings.TrimSpace(rest), true
	}
	if v, ok := h["Api-Key"]; ok && len(v) > 0 {
		return strings.TrimSpace(v[0]), true
	}
	return "", false
}

// Error types and codes as OpenAI sends them.
const (
	typeInvalid   = "invalid_request_error"
	typeRequests  = "requests"
	typeQuota     = "insufficient_quota"
	typeServer    = "server_error"
	codeBadKey    = "invalid_api_key"
	codeRateLimit = "rate_limit_exceeded"
	codeQuota     = "insufficient_quota"
)

// authorize answers the key's error, if any, and reports whether the
// request may go on.
func (s *Server) authorize(w http.ResponseWriter, key string, present bool) bool {
	if key == "" {
		msg := "You didn't provide an API key. You need to provide your API key in an " +
			"Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
		if present {
			msg = "Incorrect API key provided: ''."
		}
		writeError(w, http.StatusUnauthorized, apiError{Message: msg, Type: typeInvalid})
		return false
	}
	st, known := s.takeState(key)
	shown := s.showKey(key)
	switch {
	case !known || st.Kind == Revoked:
		msg := "Incorrect API key provided: " + shown +
			". You can find your API key at https://platform.openai.com/account/api-keys."
		writeError(w, http.StatusUnauthorized,
			apiError{Message: msg, Type: typeInvalid, Code: codeBadKey})
	case st.Kind == RateLimited:
		setRetryHeaders(w.Header(), st.RetryAfter)
		msg := fmt.Sprintf("Rate limit reached for requests with key %s: "+
			"Limit 3, Used 3, Requested 1. Please try again in %s.", shown, st.RetryAfter)
		writeError(w, http.StatusTooManyRequests,
			apiError{Message: msg, Type: typeRequests, Code: codeRateLimit})
	case st.Kind == NoQuota:
		msg := "You exceeded your current quota (key " + shown + "), please check your " +
			"plan and billing details."
		writeError(w, http.StatusTooManyRequests,
			apiError{Message: msg, Type: typeQuota, Code: codeQuota})
	case st.Kind == Dropped:
		resetConn(http.NewResponseController(w))
	case st.Kind == Failing:
		status := st.Status
		if status == 0 {
			status = http.StatusInternalServerError
		}
		msg := "The server had an error while processing your request. Sorry about that!"
		writeError(w, status, apiError{Message: msg, Type: typeServer})
	default:
		return true
	}
	return false
}

// showKey is the key as error messages show it.
func (s *Server) showKey(key string) string {
	if s.opts.EchoKey {
		return key
	}
	return MaskKey(key)
}

// MaskKey masks a key as OpenAI's error messages do: its first five and
// last four characters around "***"; a key of 12 characters or fewer is
// all stars.
func MaskKey(key string) string {
	if len(key) <= 12 {
		return strings.Repeat("*", len(key))
	}
	return key[:5] + "***" + key[len(key)-4:]
}

// setRetryHeaders sets the three retry headers for d (none when d is 0).
func setRetryHeaders(h http.Header, d time.Duration) {
	if d <= 0 {
		return
	}
	h.Set("Retry-After", strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10))
	h.Set("Retry-After-Ms", strconv.FormatInt(d.Milliseconds(), 10))
	h.Set("X-Ratelimit-Reset-Requests", d.String())
	h.Set("X-Ratelimit-Limit-Requests", "3")
	h.Set("X-Ratelimit-Remaining-Requests", "0")
}

// apiError is the "error" object of an OpenAI error answer. Param and
// Code are sent as null when empty.
type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    any     `json:"code"`
}

// writeError answers status with {"error": e}.
func writeError(w http.ResponseWriter, status int, e apiError) {
	if c, ok := e.Code.(string); ok && c == "" {
		e.Code = nil
	}
	writeJSON(w, status, struct {
		Error apiError `json:"error"`
	}{e})
}

// writeJSON answers status with v as JSON, gzipped when compress(w).
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	_ = json.NewEncoder(&buf).Encode(v) // the fake's own types always encode
	if compress(w) {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		_, _ = zw.Write(buf.Bytes()) // writes to memory do not fail
		_ = zw.Close()
		buf = gz
		w.Header().Set("Content-Encoding", "gzip")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
