package proxy

import (
	"encoding/json"
	"math"
	"net/url"
	"strings"
	"testing"
	"time"
)

var testNames = []string{"user_automation_id", "user_id", "bot_token", "demo_tokens"}

func TestCompileTemplate(t *testing.T) {
	t.Parallel()
	vals := Values{"user_automation_id": int64(42), "bot_token": "a b",
		"demo_tokens": nil, "user_id": true}
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr bool
	}{
		{name: "plain", in: "/x/y", want: "/x/y"},
		{name: "one", in: "/t/{user_automation_id}/docs", want: "/t/42/docs"},
		{name: "text", in: "id={user_automation_id};tok={bot_token}",
			want: "id=42;tok=a b"},
		{name: "null is empty", in: "[{demo_tokens}]", want: "[]"},
		{name: "bool", in: "{user_id}", want: "true"},
		{name: "json braces literal", in: `{"a":1} {}`, want: `{"a":1} {}`},
		{name: "double braces", in: "{{user_automation_id}}", want: "{42}"},
		{name: "unclosed", in: "{user_automation_id", want: "{user_automation_id"},
		{name: "digit first literal", in: "{1x}", want: "{1x}"},
		{name: "unknown", in: "/t/{usr_id}", wantErr: true},
		{name: "unknown underscore", in: "{_x}", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := CompileTemplate(tt.in, testNames)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("CompileTemplate(%q): got nil error, want one", tt.in)
				}
				return
			}
			if err != nil {
				t.Fatalf("CompileTemplate(%q): %v", tt.in, err)
			}
			if got := tmpl.Render(vals); got != tt.want {
				t.Errorf("Render: got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBodyTemplateKeepsTypes(t *testing.T) {
	t.Parallel()
	table := map[string]any{
		"tenant":   "{user_automation_id}",
		"owner":    "user-{user_id}",
		"token":    "{bot_token}",
		"demo":     "{demo_tokens}",
		"fixed":    int64(7),
		"ratio":    0.5,
		"on":       true,
		"at":       time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC),
		"nested":   map[string]any{"ids": []any{"{user_id}", "x{user_id}"}},
		"tables":   []map[string]any{{"t": "{bot_token}"}},
		"literals": []string{"a", "{user_automation_id}"},
	}
	bt, err := CompileBody(table, testNames)
	if err != nil {
		t.Fatalf("CompileBody: %v", err)
	}
	out, err := bt.Render(Values{
		"user_automation_id": int64(42), "user_id": int64(7),
		"bot_token": "tok\"en", "demo_tokens": nil,
	})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	want := `{"at":"2024-05-06T07:08:09Z","demo":null,"fixed":7,` +
		`"literals":["a",42],"nested":{"ids":[7,"x7"]},"on":true,` +
		`"owner":"user-7","ratio":0.5,"tables":[{"t":"tok\"en"}],` +
		`"tenant":42,"token":"tok\"en"}`
	if string(out) != want {
		t.Errorf("Render:\n got %s\nwant %s", out, want)
	}
}

func TestCompileBodyErrors(t *testing.T) {
	t.Parallel()
	deep := map[string]any{}
	cur := deep
	for range maxBodyDepth + 2 {
		next := map[string]any{}
		cur["a"] = next
		cur = next
	}
	tests := []struct {
		name  string
		table map[string]any
	}{
		{"unknown field", map[string]any{"a": "{nope}"}},
		{"unknown nested", map[string]any{"a": []any{map[string]any{"b": "{x}"}}}},
		{"nan", map[string]any{"a": math.NaN()}},
		{"int keys", map[string]any{"a": map[int]any{1: "x"}}},
		{"func", map[string]any{"a": func() {}}},
		{"too deep", deep},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := CompileBody(tt.table, testNames); err == nil {
				t.Errorf("CompileBody: got nil error, want one")
			}
		})
	}
}

func TestURLTemplate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		in        string
		vals      Values
		wantRaw   string
		wantQuery string
		wantErr   bool
	}{
		{name: "escape slash", in: "/t/{bot_token}/docs",
			vals: Values{"bot_token": "a/../b c"}, wantRaw: "/t/a%2F..%2Fb%20c/docs"},
		{name: "query", in: "/docs?t={bot_token}&x=1",
			vals: Values{"bot_token": "a&b=c"}, wantRaw: "/docs",
			wantQuery: "t=a%26b%3Dc&x=1"},
		{name: "dotdot", in: "/t/{bot_token}", vals: Values{"bot_token": ".."},
			wantErr: true},
		{name: "empty", in: "/t/{bot_token}", vals: Values{"bot_token": ""},
			wantErr: true},
		{name: "null", in: "/t/{demo_tokens}", vals: Values{}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := compileURLTemplate(tt.in, testNames)
			if err != nil {
				t.Fatalf("compile %q: %v", tt.in, err)
			}
			got, err := u.render(tt.vals)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("render: got %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			if got.rawPath != tt.wantRaw || got.rawQuery != tt.wantQuery {
				t.Errorf("render: got %q ? %q, want %q ? %q",
					got.rawPath, got.rawQuery, tt.wantRaw, tt.wantQuery)
			}
		})
	}
	for _, bad := range []string{"x/y", "/a#b", "/a b", "/a%zz", "/{nope}"} {
		if _, err := compileURLTemplate(bad, testNames); err == nil {
			t.Errorf("compileURLTemplate(%q): got nil error, want one", bad)
		}
	}
}

// FuzzTemplate checks that compiling and rendering never panic, that a
// path value never adds or removes a segment, and that bodies are JSON.
func FuzzTemplate(f *testing.F) {
	for _, s := range []string{
		"/t/{user_automation_id}/docs", "{bot_token}", "{{x}}", "{", "}{",
		"/a?b={bot_token}", `{"k":"{user_id}"}`, "{user_id}{user_id}", "/%2F",
	} {
		f.Add(s, "a/../b?#%")
	}
	f.Fuzz(func(t *testing.T, s, val string) {
		tmpl, err := CompileTemplate(s, testNames)
		if err != nil {
			return
		}
		vals := Values{"user_automation_id": int64(1), "user_id": int64(2),
			"bot_token": val, "demo_tokens": nil}
		_ = tmpl.Render(vals)

		bt, err := CompileBody(map[string]any{"k": s, "a": []any{s}}, testNames)
		if err != nil {
			t.Fatalf("CompileBody after CompileTemplate succeeded: %v", err)
		}
		out, err := bt.Render(vals)
		if err != nil || !json.Valid(out) {
			t.Fatalf("Render: %v, valid=%v", err, json.Valid(out))
		}

		u, err := compileURLTemplate(s, testNames)
		if err != nil {
			return
		}
		benign := Values{"user_automation_id": int64(1), "user_id": int64(2),
			"bot_token": "x", "demo_tokens": int64(3)}
		want, err := u.render(benign)
		if err != nil {
			t.Fatalf("render with benign values: %v", err)
		}
		vals["demo_tokens"] = int64(3)
		got, err := u.render(vals)
		if err != nil {
			return
		}
		if strings.Count(got.rawPath, "/") != strings.Count(want.rawPath, "/") {
			t.Fatalf("value %q changed the segments: %q vs %q",
				val, got.rawPath, want.rawPath)
		}
		if _, err := url.Parse(got.rawPath + "?" + got.rawQuery); err != nil {
			t.Fatalf("rendered URL does not parse: %v", err)
		}
	})
}
