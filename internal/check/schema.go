package check

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// kind is the JSON type a field must have.
type kind int

const (
	kindBool   kind = iota
	kindInt         // a number without a fraction
	kindString      // any string
	kindTime        // an ISO 8601 date and time string
	kindList        // an array
	kindEnum        // one of field.enum
)

func (k kind) String() string {
	switch k {
	case kindBool:
		return "a boolean"
	case kindInt:
		return "an integer"
	case kindString, kindEnum:
		return "a string"
	case kindTime:
		return "an ISO 8601 time"
	default:
		return "a list"
	}
}

// field describes one answer field. A required field that is missing or
// of the wrong kind is a failure; an optional one may be missing, and is a
// warning when of the wrong kind.
type field struct {
	name     string
	kind     kind
	enum     []string
	required bool
}

func required(name string, k kind, enum ...string) field {
	return field{name: name, kind: k, enum: enum, required: true}
}

func optional(name string, k kind, enum ...string) field {
	return field{name: name, kind: k, enum: enum}
}

// errNotObject is decodeObject's error for a body that is not a JSON
// object.
var errNotObject = errors.New("not a JSON object")

// decodeObject decodes a JSON object body into its raw fields.
func decodeObject(body []byte) (map[string]json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return nil, errNotObject
	}
	return obj, nil
}

// checkFields checks obj against fields, adding a failure or warning to v
// for each field that is missing or wrong; who names the reader that
// needs the field ("the guide", "the platform").
func checkFields(obj map[string]json.RawMessage, who string, v *verdict,
	fields ...field) {
	for _, f := range fields {
		raw, ok := obj[f.name]
		problem := ""
		switch {
		case !ok && !f.required:
			// An optional field may be absent.
		case !ok:
			problem = fmt.Sprintf("lacks %q, which %s reads", f.name, who)
		default:
			if err := f.validate(raw); err != nil {
				problem = fmt.Sprintf("%q %v", f.name, err)
			}
		}
		switch {
		case problem == "":
		case f.required:
			v.fail("%s", problem)
		default:
			v.warn("%s", problem)
		}
	}
}

// validate reports how raw falls short of f, or nil.
func (f field) validate(raw json.RawMessage) error {
	raw = bytes.TrimSpace(raw)
	if bytes.Equal(raw, []byte("null")) {
		return fmt.Errorf("is null, want %s", f.kind)
	}
	switch f.kind {
	case kindBool:
		var b bool
		if json.Unmarshal(raw, &b) != nil {
			return fmt.Errorf("is %s, want a boolean", jsonType(raw))
		}
	case kindInt:
		var n json.Number
		if jsonType(raw) != "a number" || json.Unmarshal(raw, &n) != nil {
			return fmt.Errorf("is %s, want an integer", jsonType(raw))
		}
		if _, err := n.Int64(); err != nil {
			return fmt.Errorf("is %s, want an integer", n)
		}
	case kindList:
		if len(raw) == 0 || raw[0] != '[' {
			return fmt.Errorf("is %s, want a list", jsonType(raw))
		}
	default:
		return f.validateString(raw)
	}
	return nil
}

func (f field) validateString(raw json.RawMessage) error {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return fmt.Errorf("is %s, want %s", jsonType(raw), f.kind)
	}
	switch f.kind {
	case kindTime:
		if !isISOTime(s) {
			return fmt.Errorf("is %q, want an ISO 8601 time", clip(s))
		}
	case kindEnum:
		if !slices.Contains(f.enum, s) {
			return fmt.Errorf("is %q, want one of %s", clip(s), strings.Join(f.enum, ", "))
		}
	}
	return nil
}

// isoLayouts are the date-time forms accepted as ISO 8601: with an offset
// or "Z" (RFC 3339) and without one (Python's naive isoformat).
var isoLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
}

func isISOTime(s string) bool {
	for _, l := range isoLayouts {
		if _, err := time.Parse(l, s); err == nil {
			return true
		}
	}
	return false
}

// jsonType names the JSON type of a valid raw value.
func jsonType(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "empty"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "a list"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// clip shortens a value quoted in a reason.
func clip(s string) string {
	const limit = 40
	if len(s) <= limit {
		return s
	}
	return strings.ToValidUTF8(s[:limit], "") + "..."
}
