package proxy

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

func mustDecode(t testing.TB, s string) any {
	t.Helper()
	v, err := DecodeJSON([]byte(s))
	if err != nil {
		t.Fatalf("DecodeJSON(%q): %v", s, err)
	}
	return v
}

func TestPathLookup(t *testing.T) {
	t.Parallel()
	doc := mustDecode(t, `{"summary":{"count":3,"phase":null},
		"items":[{"id":"a"},{"id":"b"}],"0":{"k":"obj"}}`)
	tests := []struct {
		path   string
		want   any
		wantOK bool
	}{
		{"summary.count", json.Number("3"), true},
		{"summary.phase", nil, true},
		{"items.1.id", "b", true},
		{"items.01.id", nil, false},
		{"items.2.id", nil, false},
		{"items.-1.id", nil, false},
		{"0.k", "obj", true},
		{"summary.count.x", nil, false},
		{"nope", nil, false},
	}
	for _, tt := range tests {
		p, err := CompilePath(tt.path)
		if err != nil {
			t.Fatalf("CompilePath(%q): %v", tt.path, err)
		}
		got, ok := p.Lookup(doc)
		if ok != tt.wantOK || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Lookup(%q): got %v, %v; want %v, %v",
				tt.path, got, ok, tt.want, tt.wantOK)
		}
	}
	for _, bad := range []string{"", ".", "a..b", "a."} {
		if _, err := CompilePath(bad); err == nil {
			t.Errorf("CompilePath(%q): got nil error, want one", bad)
		}
	}
}

func TestExtractorMapDefault(t *testing.T) {
	t.Parallel()
	stateMap := map[string]any{"idle": "ready", "indexing": "processing",
		"3": "three", "true": "yes"}
	tests := []struct {
		name   string
		f      Field
		doc    string
		want   any
		wantOK bool
	}{
		{"mapped", Field{From: "p", Map: stateMap}, `{"p":"idle"}`, "ready", true},
		{"unmapped passes", Field{From: "p", Map: stateMap}, `{"p":"odd"}`, "odd", true},
		{"number key", Field{From: "p", Map: stateMap}, `{"p":3}`, "three", true},
		{"bool key", Field{From: "p", Map: stateMap}, `{"p":true}`, "yes", true},
		{"missing default", Field{From: "p", Map: stateMap, Default: "ready"},
			`{}`, "ready", true},
		{"null default", Field{From: "p", Default: "empty"}, `{"p":null}`, "empty", true},
		{"default not mapped", Field{From: "p", Map: stateMap, Default: "idle"},
			`{}`, "idle", true},
		{"missing no default", Field{From: "p"}, `{}`, nil, false},
		{"constant", Field{Default: int64(5)}, `{}`, int64(5), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := CompileField(tt.f)
			if err != nil {
				t.Fatalf("CompileField: %v", err)
			}
			got, ok := e.Extract(mustDecode(t, tt.doc))
			if ok != tt.wantOK || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Extract: got %#v, %v; want %#v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
	if _, err := CompileField(Field{Map: stateMap}); err == nil {
		t.Error("CompileField with map and no from: got nil error, want one")
	}
}

func TestConversions(t *testing.T) {
	t.Parallel()
	ints := []struct {
		in   any
		want int64
		ok   bool
	}{
		{json.Number("12"), 12, true},
		{json.Number("12.0"), 12, true},
		{json.Number("1e3"), 1000, true},
		{json.Number("1.5"), 0, false},
		{json.Number("1e30"), 0, false},
		{"7", 7, true},
		{"NaN", 0, false},
		{true, 0, false},
		{int64(-3), -3, true},
	}
	for _, tt := range ints {
		got, err := ToInt64(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ToInt64(%#v): got %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, errConvert) {
			t.Errorf("ToInt64(%#v): error %v is not errConvert", tt.in, err)
		}
	}

	bools := []struct {
		in   any
		want bool
		ok   bool
	}{
		{true, true, true}, {"false", false, true}, {json.Number("1"), true, true},
		{json.Number("0"), false, true}, {json.Number("2"), false, false},
		{"yes", false, false}, {nil, false, false},
	}
	for _, tt := range bools {
		got, err := ToBool(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ToBool(%#v): got %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}

	utc := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("parse %q: %v", s, err)
		}
		return tm.UTC()
	}
	times := []struct {
		in   any
		want time.Time
		ok   bool
	}{
		{"2024-05-06T07:08:09Z", utc("2024-05-06T07:08:09Z"), true},
		{"2024-05-06T10:08:09.5+03:00", utc("2024-05-06T07:08:09.5Z"), true},
		{"2024-05-06T07:08:09.123456", utc("2024-05-06T07:08:09.123456Z"), true},
		{"2024-05-06 07:08:09", utc("2024-05-06T07:08:09Z"), true},
		{"2024-05-06T07:08:09+0200", utc("2024-05-06T05:08:09Z"), true},
		{"2024-05-06", utc("2024-05-06T00:00:00Z"), true},
		{json.Number("1715000000"), time.Unix(1715000000, 0).UTC(), true},
		{json.Number("1715000000.25"), time.Unix(1715000000, 25e7).UTC(), true},
		{json.Number("1e20"), time.Time{}, false},
		{"yesterday", time.Time{}, false},
		{true, time.Time{}, false},
	}
	for _, tt := range times {
		got, err := ToTime(tt.in)
		if (err == nil) != tt.ok || !got.Equal(tt.want) {
			t.Errorf("ToTime(%#v): got %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}

	logs, err := ToStrings(mustDecode(t, `["a", 2, true]`))
	if err != nil || !reflect.DeepEqual(logs, []string{"a", "2", "true"}) {
		t.Errorf("ToStrings: got %q, %v", logs, err)
	}
	if _, err := ToStrings(mustDecode(t, `[{"a":1}]`)); err == nil {
		t.Error("ToStrings of objects: got nil error, want one")
	}
}

func TestDecodeJSONHidesData(t *testing.T) {
	t.Parallel()
	for _, in := range []string{`{"a": SECRET}`, `{"a":1} SECRET`, `{"a":`, ``} {
		_, err := DecodeJSON([]byte(in))
		if err == nil {
			t.Fatalf("DecodeJSON(%q): got nil error, want one", in)
		}
		if containsFold(err.Error(), "secret") || containsFold(err.Error(), "'S'") {
			t.Errorf("DecodeJSON(%q): error %q quotes the data", in, err)
		}
	}
}

// FuzzExtractPath checks that path compilation, lookup, mapping and every
// conversion never panic on any answer.
func FuzzExtractPath(f *testing.F) {
	f.Add("summary.count", `{"summary":{"count":3}}`)
	f.Add("items.0.id", `{"items":[{"id":"x"}]}`)
	f.Add("a.b", `[1,2,{"a":null}]`)
	f.Add("0", `["2024-01-02T03:04:05Z"]`)
	f.Add("x", `{"x":1e400}`)
	f.Add("x", `{"x":-1e30}`)
	f.Fuzz(func(t *testing.T, path, answer string) {
		doc, err := DecodeJSON([]byte(answer))
		if err != nil {
			return
		}
		e, err := CompileField(Field{From: path,
			Map: map[string]any{"1": "one"}, Default: "d"})
		if err != nil {
			return
		}
		v, ok := e.Extract(doc)
		if !ok {
			t.Fatalf("Extract with a default reported false")
		}
		_, _ = ToInt64(v)
		_, _ = ToString(v)
		_, _ = ToBool(v)
		_, _ = ToTime(v)
		_, _ = ToStrings(v)
	})
}
