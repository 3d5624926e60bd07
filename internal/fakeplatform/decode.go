package fakeplatform

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// fieldError is one entry of a FastAPI 422 detail list.
type fieldError struct {
	Loc  []any  `json:"loc"`
	Msg  string `json:"msg"`
	Type string `json:"type"`
}

// validationError is a FastAPI-style 422 body.
type validationError struct {
	Detail []fieldError `json:"detail"`
}

// object is a decoded JSON object body, read field by field with the
// leniency of the platform's pydantic models (lax mode).
type object struct {
	fields map[string]json.RawMessage
	errs   []fieldError
}

// decodeObject reads a JSON object; ok is false (and errs says why) when
// the body is not one.
func decodeObject(body []byte) (*object, bool) {
	o := &object{}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&o.fields); err != nil || dec.More() {
		typ, msg := "json_invalid", "body is not valid JSON"
		if bytes.HasPrefix(bytes.TrimSpace(body), []byte("[")) || isScalar(body) {
			typ, msg = "model_attributes_type", "body must be a JSON object"
		}
		o.errs = append(o.errs, fieldError{Loc: []any{"body"}, Msg: msg, Type: typ})
		return o, false
	}
	if o.fields == nil { // the body was null
		o.errs = append(o.errs, fieldError{
			Loc: []any{"body"}, Msg: "body must be a JSON object", Type: "model_attributes_type",
		})
		return o, false
	}
	return o, true
}

// isScalar reports whether body is a valid JSON value other than an object.
func isScalar(body []byte) bool {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return false
	}
	_, isObj := v.(map[string]any)
	return !isObj
}

// fail records a field error.
func (o *object) fail(name, typ, msg string) {
	o.errs = append(o.errs, fieldError{Loc: []any{"body", name}, Msg: msg, Type: typ})
}

// raw returns a field's value, and whether it is present and not null.
func (o *object) raw(name string) (json.RawMessage, bool) {
	v, ok := o.fields[name]
	if !ok || string(bytes.TrimSpace(v)) == "null" {
		return nil, false
	}
	return v, true
}

// int reads an integer: a JSON number without a fraction, or a string of
// one. Absent or null: def, or a "missing" error when required.
func (o *object) int(name string, required bool, def int64) int64 {
	v, ok := o.raw(name)
	if !ok {
		if required {
			o.fail(name, "missing", "field required")
		}
		return def
	}
	s := string(bytes.TrimSpace(v))
	quoted := strings.HasPrefix(s, `"`)
	if quoted {
		unq, err := strconv.Unquote(s)
		if err != nil {
			o.fail(name, "int_parsing", "value is not a valid integer")
			return def
		}
		s = strings.TrimSpace(unq)
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n
	}
	// A JSON number with a zero fraction is an integer; a string is not.
	f, err := strconv.ParseFloat(s, 64)
	if err == nil && !quoted && f == math.Trunc(f) && math.Abs(f) < 1<<63 {
		return int64(f)
	}
	o.fail(name, "int_parsing", "value is not a valid integer")
	return def
}

// string reads a JSON string (numbers are not converted, as in pydantic).
func (o *object) string(name string, required bool, def string) string {
	v, ok := o.raw(name)
	if !ok {
		if required {
			o.fail(name, "missing", "field required")
		}
		return def
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		o.fail(name, "string_type", "value is not a valid string")
		return def
	}
	return s
}

// bool reads a boolean the lax way: true/false, 0/1 and the usual words.
func (o *object) bool(name string, def bool) bool {
	v, ok := o.raw(name)
	if !ok {
		return def
	}
	s := strings.ToLower(strings.TrimSpace(string(v)))
	if unq, err := strconv.Unquote(s); err == nil {
		s = strings.TrimSpace(unq)
	}
	switch s {
	case "true", "1", "yes", "y", "on", "t":
		return true
	case "false", "0", "no", "n", "off", "f":
		return false
	}
	o.fail(name, "bool_parsing", "value is not a valid boolean")
	return def
}

// objectField reads an optional JSON object (meta); null or absent is nil.
func (o *object) objectField(name string) json.RawMessage {
	v, ok := o.raw(name)
	if !ok {
		return nil
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(v, &m) != nil {
		o.fail(name, "dict_type", "value is not a valid object")
		return nil
	}
	return v
}
