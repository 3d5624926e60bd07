package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// Field says where one answer value comes from: a dot path into the app's
// JSON answer, an optional value map and an optional default. The zero
// Field is "not configured".
//
// A TOML string "summary.count" becomes Field{From: "summary.count"}; a
// table { from, map, default } fills all three.
type Field struct {
	// From is a dot path: object keys and array indexes separated by
	// dots ("summary.count", "items.0.id"). Keys containing a dot cannot
	// be named.
	From string
	// Map replaces a found value by another. Keys are the value's text
	// form (a string as is, a number as written, true/false); a value with
	// no entry passes through unchanged.
	Map map[string]any
	// Default is used when the path is missing or null; nil means none.
	// The default is final: Map does not apply to it.
	Default any
}

// IsZero reports whether the field is not configured.
func (f Field) IsZero() bool {
	return f.From == "" && f.Map == nil && f.Default == nil
}

// Path is a compiled dot path.
type Path []string

// CompilePath compiles a dot path. Empty segments are an error.
func CompilePath(s string) (Path, error) {
	if s == "" {
		return nil, errors.New("empty path")
	}
	p := Path(strings.Split(s, "."))
	for _, seg := range p {
		if seg == "" {
			return nil, fmt.Errorf("path %q has an empty segment", s)
		}
	}
	return p, nil
}

// Lookup walks doc, a value decoded from JSON (maps, slices, scalars).
// A segment indexes an array when it is a decimal index into it, else it
// names an object key. It reports false when a step is missing.
func (p Path) Lookup(doc any) (any, bool) {
	cur := doc
	for _, seg := range p {
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[seg]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(c) || seg != strconv.Itoa(i) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// Extractor is a compiled Field. It is immutable and safe for concurrent
// use.
type Extractor struct {
	path   Path
	m      map[string]any
	def    any
	hasDef bool
}

// CompileField compiles f. A Field with only a Default is allowed (a
// constant); a Map without From is an error.
func CompileField(f Field) (*Extractor, error) {
	e := &Extractor{m: f.Map, def: f.Default, hasDef: f.Default != nil}
	if f.From == "" {
		if f.Map != nil || !e.hasDef {
			return nil, errors.New("from is required")
		}
		return e, nil
	}
	p, err := CompilePath(f.From)
	if err != nil {
		return nil, err
	}
	e.path = p
	return e, nil
}

// Extract returns the value for doc: the mapped value at the path, or the
// default when the path is missing or null. It reports false when there
// is neither.
func (e *Extractor) Extract(doc any) (any, bool) {
	var v any
	var ok bool
	if e.path != nil {
		v, ok = e.path.Lookup(doc)
	}
	if !ok || v == nil {
		return e.def, e.hasDef
	}
	if e.m == nil {
		return v, true
	}
	if k, ok := mapKey(v); ok {
		if mv, ok := e.m[k]; ok {
			return mv, true
		}
	}
	return v, true
}

// mapKey is the text form a Map is looked up with; objects and arrays
// have none.
func mapKey(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case bool:
		return strconv.FormatBool(v), true
	case int64:
		return strconv.FormatInt(v, 10), true
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), true
	}
	return "", false
}

// errConvert: an answer value has the wrong type for its field.
var errConvert = errors.New("wrong type")

// DecodeJSON decodes one JSON value from data with numbers kept as
// json.Number. Trailing data after the value is an error. Error messages
// name an offset, never the data.
func DecodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, decodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("invalid JSON: data after the value")
	}
	return v, nil
}

// decodeError rewrites a decoding error so it carries no part of the
// data (a syntax error quotes the offending character).
func decodeError(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at offset %d", se.Offset)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("invalid JSON: truncated")
	}
	return errors.New("invalid JSON")
}

// ToInt64 converts a JSON number (integral, possibly written as 3.0 or
// 3e2), a decimal string or a Go integer.
func ToInt64(v any) (int64, error) {
	switch v := v.(type) {
	case json.Number:
		return numberToInt64(string(v))
	case string:
		return numberToInt64(strings.TrimSpace(v))
	case int64:
		return v, nil
	case int:
		return int64(v), nil
	case float64:
		return floatToInt64(v)
	}
	return 0, fmt.Errorf("want an integer: %w", errConvert)
}

// numberToInt64 parses an integer, accepting an integral float form.
func numberToInt64(s string) (int64, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("want an integer: %w", errConvert)
	}
	return floatToInt64(f)
}

// floatToInt64 accepts only integral values inside the int64 range.
func floatToInt64(f float64) (int64, error) {
	if f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, fmt.Errorf("want an integer: %w", errConvert)
	}
	return int64(f), nil
}

// ToString converts a string, a number (as written) or a boolean.
func ToString(v any) (string, error) {
	if s, ok := mapKey(v); ok {
		return s, nil
	}
	return "", fmt.Errorf("want a string: %w", errConvert)
}

// ToBool converts a boolean, the strings accepted by strconv.ParseBool
// ("true", "1", "F", ...) and the numbers 0 and 1.
func ToBool(v any) (bool, error) {
	switch v := v.(type) {
	case bool:
		return v, nil
	case string:
		if b, err := strconv.ParseBool(v); err == nil {
			return b, nil
		}
	case json.Number, int64, int:
		if n, err := ToInt64(v); err == nil && (n == 0 || n == 1) {
			return n == 1, nil
		}
	}
	return false, fmt.Errorf("want a boolean: %w", errConvert)
}

// timeLayouts are the ISO 8601 forms ToTime accepts, most common first.
// Layouts without a zone are read as UTC.
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999Z0700",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999Z0700",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04Z07:00",
	"2006-01-02T15:04",
	"2006-01-02",
}

// minUnixSeconds and maxUnixSeconds bound numeric times to years 0001-9999.
const (
	minUnixSeconds = -62135596800
	maxUnixSeconds = 253402300799
)

// ToTime converts an RFC 3339 / ISO 8601 string (with or without a zone;
// none means UTC), a number of unix seconds (fractions allowed) or a
// time.Time. The result is in UTC.
func ToTime(v any) (time.Time, error) {
	switch v := v.(type) {
	case time.Time:
		return v.UTC(), nil
	case string:
		s := strings.TrimSpace(v)
		for _, layout := range timeLayouts {
			if t, err := time.Parse(layout, s); err == nil {
				return t.UTC(), nil
			}
		}
		return time.Time{}, fmt.Errorf("want an ISO 8601 time: %w", errConvert)
	case json.Number:
		return unixToTime(string(v))
	case int64:
		return unixToTime(strconv.FormatInt(v, 10))
	case float64:
		return unixToTime(strconv.FormatFloat(v, 'f', -1, 64))
	}
	return time.Time{}, fmt.Errorf("want a time: %w", errConvert)
}

// unixToTime parses unix seconds, keeping fractions to the nanosecond.
func unixToTime(s string) (time.Time, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || f < minUnixSeconds || f > maxUnixSeconds {
		return time.Time{}, fmt.Errorf("want unix seconds: %w", errConvert)
	}
	sec := math.Floor(f)
	nsec := math.Round((f - sec) * 1e9)
	return time.Unix(int64(sec), int64(nsec)).UTC(), nil
}

// ToStrings converts an array of scalars or a single scalar (one entry).
func ToStrings(v any) ([]string, error) {
	arr, ok := v.([]any)
	if !ok {
		s, err := ToString(v)
		if err != nil {
			return nil, fmt.Errorf("want a list of strings: %w", errConvert)
		}
		return []string{s}, nil
	}
	out := make([]string, 0, len(arr))
	for _, x := range arr {
		s, err := ToString(x)
		if err != nil {
			return nil, fmt.Errorf("want a list of strings: %w", errConvert)
		}
		out = append(out, s)
	}
	return out, nil
}
