package usage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// ErrBadRequest: a request body the egress cannot read or safely change.
var ErrBadRequest = errors.New("bad request body")

// FieldError is a request member that ParseRequest or PrepareRequest
// refused although the body is a JSON object. It matches ErrBadRequest.
// Its text names the member and what is wrong with it, never the value,
// so that it may be shown to the app.
type FieldError struct {
	// Field is the member's name, dotted below the top level
	// ("stream_options.include_usage").
	Field string
	// Problem completes a sentence about Field: "must not be negative".
	Problem string
}

func (e *FieldError) Error() string {
	return ErrBadRequest.Error() + ": " + e.Field + " " + e.Problem
}

// Unwrap makes a FieldError match ErrBadRequest.
func (e *FieldError) Unwrap() error { return ErrBadRequest }

// Problems of a FieldError.
const (
	problemRepeated = "appears more than once"
	problemBool     = "must be true, false or null"
	problemString   = "must be a string or null"
	problemObject   = "must be an object or null"
	problemNotInt   = "must be an integer or null"
	problemQuoted   = "must be an integer, not a string"
	problemFraction = "must be a whole number, written without a fraction or exponent"
	problemNegative = "must not be negative"
	problemTooLarge = "is too large"
	problemBelowOne = "must be at least 1"
)

func fieldErr(field, problem string) error {
	return &FieldError{Field: field, Problem: problem}
}

// RequestInfo is what the egress reads from an OpenAI request body before
// sending it, to size a budget reservation.
type RequestInfo struct {
	// Model is the "model" field, "" when absent or null.
	Model string

	// Stream is true when "stream" is true.
	Stream bool

	// MaxTokens is the largest of max_completion_tokens, max_tokens and
	// max_output_tokens (Responses API) given, per choice; 0 when none.
	MaxTokens int64

	// N is the number of choices asked for ("n"), 1 when absent; the
	// completion tokens of a call can reach N*MaxTokens.
	N int64
}

// includeUsage is the stream_options member the egress adds.
const includeUsage = `"include_usage":true`

// PrepareRequest makes a streaming chat completions or completions
// request ask the upstream for usage: when the body has "stream": true,
// the body returned has stream_options.include_usage set to true, added
// or changed in place, every other byte as sent. appAsked reports whether
// the app had already asked for it (then the body is returned unchanged,
// and the usage chunk is the app's to see). A body that does not stream
// is returned unchanged with appAsked false.
//
// It is for the chat completions and completions endpoints only: the
// Responses API reports usage in its final event without being asked.
//
// Keys match exactly, after JSON unescaping, as the upstream reads them.
// A body that is not a JSON object, whose stream or stream_options have
// an unexpected type, or that repeats one of those keys (a reader could
// take either) is an error wrapping ErrBadRequest, and the body is
// returned unchanged.
func PrepareRequest(body []byte) (newBody []byte, appAsked bool, err error) {
	out, asked, err := prepare(body)
	if err != nil {
		return body, false, fmt.Errorf("prepare request: %w", err)
	}
	return out, asked, nil
}

func prepare(body []byte) ([]byte, bool, error) {
	ms, closing, err := object(body)
	if err != nil {
		return nil, false, err
	}
	top, err := index(ms, "stream", "stream_options")
	if err != nil {
		return nil, false, err
	}
	stream, err := boolField(body, top, "stream")
	if err != nil || !stream {
		return body, false, err
	}

	// No stream_options: add one before the closing brace (the object has
	// at least the stream member, so a comma is due).
	so, ok := top["stream_options"]
	if !ok {
		return splice(body, closing, closing,
			`,"stream_options":{`+includeUsage+`}`), false, nil
	}
	raw := body[so.start:so.end]
	if string(raw) == "null" {
		return splice(body, so.start, so.end, "{"+includeUsage+"}"), false, nil
	}

	// stream_options is given: set include_usage inside it.
	inner, innerClosing, err := object(raw)
	if errors.Is(err, ErrNotObject) {
		return nil, false, fieldErr("stream_options", problemObject)
	}
	if err != nil {
		return nil, false, fmt.Errorf("stream_options: %w", err)
	}
	opts, err := index(inner, "include_usage")
	if err != nil {
		return nil, false, inside("stream_options", err)
	}
	asked, err := boolField(raw, opts, "include_usage")
	if err != nil {
		return nil, false, inside("stream_options", err)
	}
	if asked {
		return body, true, nil
	}
	if iu, ok := opts["include_usage"]; ok {
		at := so.start + iu.start
		return splice(body, at, so.start+iu.end, "true"), false, nil
	}
	member := includeUsage
	if len(inner) > 0 {
		member = "," + member
	}
	at := so.start + innerClosing
	return splice(body, at, at, member), false, nil
}

// ParseRequest reads the fields of RequestInfo from a request body. A
// body that is not a JSON object, a field of the wrong type, a negative
// count, n below 1, or a repeated field is an error wrapping
// ErrBadRequest.
func ParseRequest(body []byte) (RequestInfo, error) {
	info, err := parseRequest(body)
	if err != nil {
		return RequestInfo{}, fmt.Errorf("parse request: %w", err)
	}
	return info, nil
}

func parseRequest(body []byte) (RequestInfo, error) {
	ms, _, err := object(body)
	if err != nil {
		return RequestInfo{}, err
	}
	top, err := index(ms, append([]string{"model", "stream", "n"}, capKeys...)...)
	if err != nil {
		return RequestInfo{}, err
	}

	info := RequestInfo{N: 1}
	if m, ok := top["model"]; ok && string(body[m.start:m.end]) != "null" {
		if err := json.Unmarshal(body[m.start:m.end], &info.Model); err != nil {
			return RequestInfo{}, fieldErr("model", problemString)
		}
	}
	if info.Stream, err = boolField(body, top, "stream"); err != nil {
		return RequestInfo{}, err
	}
	for _, key := range capKeys {
		v, _, err := intField(body, top, key)
		if err != nil {
			return RequestInfo{}, err
		}
		info.MaxTokens = max(info.MaxTokens, v)
	}
	n, ok, err := intField(body, top, "n")
	if err != nil {
		return RequestInfo{}, err
	}
	if ok {
		if n < 1 {
			return RequestInfo{}, fieldErr("n", problemBelowOne)
		}
		info.N = n
	}
	return info, nil
}

// capKeys are the token cap members of the OpenAI APIs.
var capKeys = []string{"max_tokens", "max_completion_tokens", "max_output_tokens"}

// TokenCaps returns the token caps a request body gives (max_tokens,
// max_completion_tokens, max_output_tokens), by member name; an absent
// or null member is left out. Its errors are ParseRequest's.
func TokenCaps(body []byte) (map[string]int64, error) {
	ms, _, err := object(body)
	if err != nil {
		return nil, fmt.Errorf("token caps: %w", err)
	}
	top, err := index(ms, capKeys...)
	if err != nil {
		return nil, fmt.Errorf("token caps: %w", err)
	}
	caps := make(map[string]int64, len(capKeys))
	for _, key := range capKeys {
		v, ok, err := intField(body, top, key)
		if err != nil {
			return nil, fmt.Errorf("token caps: %w", err)
		}
		if ok {
			caps[key] = v
		}
	}
	return caps, nil
}

// SetCap returns body with the top-level member key set to v when the
// body has it null or not at all: a null is replaced in place, a missing
// member is added before the closing brace; every other byte is kept. A
// body that gives key another value is returned unchanged. A body that
// is not a JSON object, or repeats key, is an error wrapping
// ErrBadRequest.
func SetCap(body []byte, key string, v int64) ([]byte, error) {
	ms, closing, err := object(body)
	if err != nil {
		return body, fmt.Errorf("set %s: %w", key, err)
	}
	top, err := index(ms, key)
	if err != nil {
		return body, fmt.Errorf("set %s: %w", key, err)
	}
	value := strconv.FormatInt(v, 10)
	m, ok := top[key]
	switch {
	case ok && string(body[m.start:m.end]) == "null":
		return splice(body, m.start, m.end, value), nil
	case ok:
		return body, nil
	}
	name, err := json.Marshal(key)
	if err != nil {
		return body, fmt.Errorf("set %s: %w", key, err)
	}
	add := string(name) + ":" + value
	if len(ms) > 0 {
		add = "," + add
	}
	return splice(body, closing, closing, add), nil
}

// member is one member of a JSON object: its key and its value's bytes,
// obj[start:end].
type member struct {
	key        string
	start, end int
}

// object lists the members of the JSON object in obj and the offset of
// its closing brace. Nothing but white space may follow the object.
func object(obj []byte) ([]member, int, error) {
	dec := json.NewDecoder(bytes.NewReader(obj))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrBadRequest, jsonErr(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, 0, fmt.Errorf("%w: %w", ErrBadRequest, ErrNotObject)
	}

	var ms []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %w", ErrBadRequest, jsonErr(err))
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, 0, fmt.Errorf("%w: %w", ErrBadRequest, jsonErr(err))
		}
		end := int(dec.InputOffset())
		ms = append(ms, member{key: key, start: end - len(raw), end: end})
	}
	if _, err := dec.Token(); err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrBadRequest, jsonErr(err))
	}
	closing := int(dec.InputOffset()) - 1
	if _, err := dec.Token(); err != io.EOF {
		return nil, 0, fmt.Errorf("%w: data after the object", ErrBadRequest)
	}
	return ms, closing, nil
}

// index maps the named keys to their members, refusing repeats.
func index(ms []member, keys ...string) (map[string]member, error) {
	out := make(map[string]member, len(keys))
	for _, m := range ms {
		for _, k := range keys {
			if m.key != k {
				continue
			}
			if _, dup := out[k]; dup {
				return nil, fieldErr(k, problemRepeated)
			}
			out[k] = m
		}
	}
	return out, nil
}

// boolField reads a boolean member; absent and null read as false.
func boolField(obj []byte, idx map[string]member, key string) (bool, error) {
	m, ok := idx[key]
	if !ok {
		return false, nil
	}
	switch string(obj[m.start:m.end]) {
	case "true":
		return true, nil
	case "false", "null":
		return false, nil
	}
	return false, fieldErr(key, problemBool)
}

// inside names a FieldError of a nested object by its parent too.
func inside(parent string, err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		return fieldErr(parent+"."+fe.Field, fe.Problem)
	}
	return fmt.Errorf("%s: %w", parent, err)
}

// intField reads a non-negative integer member; ok is false when it is
// absent or null.
func intField(obj []byte, idx map[string]member, key string) (int64, bool, error) {
	m, ok := idx[key]
	if !ok || string(obj[m.start:m.end]) == "null" {
		return 0, false, nil
	}
	raw := obj[m.start:m.end]
	v, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || v < 0 {
		return 0, false, fieldErr(key, countProblem(raw, err))
	}
	return v, true, nil
}

// countProblem says why raw, a JSON value, is not a non-negative count;
// err is what strconv.ParseInt made of it.
func countProblem(raw []byte, err error) string {
	switch {
	case raw[0] == '"':
		return problemQuoted
	case raw[0] != '-' && (raw[0] < '0' || raw[0] > '9'):
		return problemNotInt
	case bytes.ContainsAny(raw, ".eE"):
		if raw[0] == '-' {
			return problemNegative
		}
		return problemFraction
	case raw[0] == '-':
		return problemNegative
	case errors.Is(err, strconv.ErrRange):
		return problemTooLarge
	}
	return problemNotInt
}

// splice returns a copy of b with b[from:to] replaced by s.
func splice(b []byte, from, to int, s string) []byte {
	out := make([]byte, 0, len(b)-(to-from)+len(s))
	out = append(out, b[:from]...)
	out = append(out, s...)
	return append(out, b[to:]...)
}
