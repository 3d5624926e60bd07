package check

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/health"
)

func TestExplainHealth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		code      int
		body      string
		wantClass string
		wantWhy   string
	}{
		{"healthy ok", 200, `{"status":"ok","version":"1","uptime":1}`,
			health.ClassHealthy, `status "ok"`},
		{"healthy up", 200, `{"status":"up","version":null,"uptime":null}`,
			health.ClassHealthy, `status "up"`},
		{"degraded", 200, `{"status":"degraded","version":"1","uptime":1}`,
			health.ClassDegraded, `"degraded" is none of`},
		{"status a number", 200, `{"status":1,"version":"1","uptime":1}`,
			health.ClassDegraded, `"status" is a number`},
		{"two missing", 200, `{"status":"ok"}`,
			health.ClassUnhealthy, `lacks "version", "uptime"`},
		{"not 200", 204, ``, health.ClassUnhealthy, "status 204"},
		{"null", 200, `null`, health.ClassUnhealthy, "not a JSON object"},
		{"bad utf-8", 200, "{\"status\":\"\xff\"}", health.ClassUnhealthy, "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			class, why := explainHealth(tt.code, []byte(tt.body))
			if class != tt.wantClass || !strings.Contains(why, tt.wantWhy) {
				t.Errorf("got %s %q, want %s with %q", class, why, tt.wantClass, tt.wantWhy)
			}
			if c := health.Classify(tt.code, []byte(tt.body)); c != class {
				t.Errorf("health.Classify says %s, explainHealth %s", c, class)
			}
		})
	}
}

// FuzzExplainHealth holds explainHealth to the platform's classifier.
func FuzzExplainHealth(f *testing.F) {
	for _, s := range []string{
		`{"status":"ok","version":"1","uptime":1}`, `{"status":"OK","version":1,"uptime":1}`,
		`[]`, `{}`, `"ok"`, "\xef\xbb\xbf{}", `{"status":NaN}`, `{"status":"up","status":1}`,
		`{"status":"ok","version":"1","uptime":1}x`,
	} {
		f.Add(200, []byte(s))
	}
	f.Add(500, []byte(`{"status":"ok","version":"1","uptime":1}`))
	f.Fuzz(func(t *testing.T, code int, body []byte) {
		class, why := explainHealth(code, body)
		if want := health.Classify(code, body); class != want {
			t.Fatalf("explainHealth(%d, %q) = %s, Classify says %s", code, body, class, want)
		}
		if why == "" {
			t.Fatal("no reason")
		}
	})
}

func TestCheckFields(t *testing.T) {
	t.Parallel()
	fields := []field{
		required("b", kindBool), required("n", kindInt), required("s", kindString),
		required("t", kindTime), required("l", kindList),
		required("e", kindEnum, "x", "y"), optional("o", kindInt),
	}
	good := `{"b":true,"n":3,"s":"","t":"2025-01-10T16:54:49.650619+00:00",
		"l":[],"e":"y"}`
	tests := []struct {
		name      string
		body      string
		wantFails []string
		wantWarns []string
	}{
		{"all good", good, nil, nil},
		{"naive time", strings.Replace(good, "+00:00", "", 1), nil, nil},
		{"optional wrong", strings.Replace(good, `"e":"y"`, `"e":"y","o":"1"`, 1),
			nil, []string{`"o" is a string`}},
		{"missing", `{}`, []string{`lacks "b"`, `lacks "n"`, `lacks "s"`, `lacks "t"`,
			`lacks "l"`, `lacks "e"`}, nil},
		{"wrong kinds", `{"b":"true","n":1.5,"s":1,"t":"yesterday","l":{},"e":"z"}`,
			[]string{`"b" is a string`, `"n" is 1.5`, `"s" is a number`,
				`"t" is "yesterday"`, `"l" is an object`, `"e" is "z", want one of x, y`},
			nil},
		{"nulls", `{"b":null,"n":null,"s":null,"t":null,"l":null,"e":null}`,
			[]string{`"b" is null`, `"n" is null`, `"s" is null`, `"t" is null`,
				`"l" is null`, `"e" is null`}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			obj, err := decodeObject([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			var v verdict
			checkFields(obj, "the guide", &v, fields...)
			wantAll(t, "failures", v.fails, tt.wantFails)
			wantAll(t, "warnings", v.warns, tt.wantWarns)
		})
	}
}

// wantAll fails t unless got holds as many entries as want and each want
// is part of one of them.
func wantAll(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %q, want %d entries like %q", what, got, len(want), want)
		return
	}
	joined := strings.Join(got, "\n")
	for _, w := range want {
		if !strings.Contains(joined, w) {
			t.Errorf("%s: got %q, want one containing %q", what, got, w)
		}
	}
}

// FuzzCheckFields decodes arbitrary answers: no panic, and a problem only
// ever names a declared field.
func FuzzCheckFields(f *testing.F) {
	for _, s := range []string{
		`{"a":1}`, `{"a":"2025-01-10T16:54:49Z","b":[1],"c":true}`, `[1]`, `null`,
		`{"a":1e400}`, `{"a":"\u0000"}`, `{"c":"x","d":"` + strings.Repeat("é", 50) + `"}`,
	} {
		f.Add([]byte(s))
	}
	fields := []field{required("a", kindInt), optional("b", kindList),
		required("c", kindBool), required("d", kindEnum, "x"), optional("e", kindTime)}
	f.Fuzz(func(t *testing.T, body []byte) {
		obj, err := decodeObject(body)
		if err != nil {
			return
		}
		var v verdict
		checkFields(obj, "the guide", &v, fields...)
		for _, p := range append(v.fails, v.warns...) {
			named := false
			for _, fd := range fields {
				named = named || strings.HasPrefix(p, `"`+fd.name+`" is `) ||
					strings.HasPrefix(p, `lacks "`+fd.name+`"`)
			}
			if !named {
				t.Fatalf("problem %q names no declared field", p)
			}
		}
		if len(v.fails)+len(v.warns) > len(fields) {
			t.Fatalf("more problems than fields: %q %q", v.fails, v.warns)
		}
	})
}

func TestURLHelpers(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, toggled, withID string }{
		{"http://127.0.0.1:1/kb/status", "http://127.0.0.1:1/kb/status/",
			"http://127.0.0.1:1/kb/status?user_automation_id=7"},
		{"http://127.0.0.1:1/api/kb/status/?x=1", "http://127.0.0.1:1/api/kb/status?x=1",
			"http://127.0.0.1:1/api/kb/status/?user_automation_id=7&x=1"},
		{"http://127.0.0.1:1", "http://127.0.0.1:1/",
			"http://127.0.0.1:1?user_automation_id=7"},
	}
	for _, tt := range tests {
		if got := toggleSlash(tt.in); got != tt.toggled {
			t.Errorf("toggleSlash(%q) = %q, want %q", tt.in, got, tt.toggled)
		}
		if got := withQuery(tt.in, "user_automation_id", 7); got != tt.withID {
			t.Errorf("withQuery(%q) = %q, want %q", tt.in, got, tt.withID)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "-"}, {300 * time.Microsecond, "<1ms"}, {42 * time.Millisecond, "42ms"},
		{5 * time.Second, "5s"}, {2500 * time.Millisecond, "2.5s"},
	}
	for _, tt := range tests {
		if got := formatDuration(tt.d); got != tt.want {
			t.Errorf("formatDuration(%s) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestReportOutput(t *testing.T) {
	t.Parallel()
	rep := &Report{Version: 1, Health: "unhealthy", UserAutomationID: 9, UserID: 8,
		Endpoints: map[Endpoint]string{Health: "http://127.0.0.1:1/health"},
		Results: []Result{
			{Endpoint: Health, Check: "platform classifier", Method: "GET",
				URL: "http://127.0.0.1:1/health", Status: StatusFail, HTTPStatus: 200,
				Duration: 1500 * time.Microsecond, Budget: 5 * time.Second,
				Reason: "unhealthy: answer lacks \"uptime\"\nsecond line"},
			{Endpoint: KBStatus, Check: "knowledge base", Status: StatusSkip,
				Reason: "skipped"},
		}}
	rep.finish()
	if rep.Listed || rep.Summary != (Summary{Fail: 1, Skip: 1}) {
		t.Fatalf("got listed %v, %+v; want not listed, one fail, one skip",
			rep.Listed, rep.Summary)
	}

	// 1. The JSON report as the package comment documents it.
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Version int              `json:"version"`
		Listed  *bool            `json:"listed"`
		Health  string           `json:"health"`
		Summary map[string]int   `json:"summary"`
		UAID    int64            `json:"user_automation_id"`
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	r0 := got.Results[0]
	if got.Version != 1 || got.Listed == nil || *got.Listed || got.Health != "unhealthy" ||
		got.Summary["fail"] != 1 || got.UAID != 9 || r0["endpoint"] != "health" ||
		r0["result"] != "fail" || r0["duration_ms"] != 1.5 || r0["budget_ms"] != 5000.0 ||
		r0["http_status"] != 200.0 || r0["check"] != "platform classifier" {
		t.Errorf("JSON report:\n%s", buf.String())
	}

	// 2. The table: a header, one line a row, the summary line.
	buf.Reset()
	if err := rep.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ENDPOINT") ||
		!strings.Contains(lines[1], "1ms") || !strings.Contains(lines[1], "5s") ||
		!strings.Contains(lines[1], `lacks "uptime" second line`) ||
		!strings.HasPrefix(lines[3], "FAIL: the automation would not be listed") {
		t.Errorf("table:\n%s", buf.String())
	}
	if strings.Index(lines[1], "fail") != strings.Index(lines[0], "RESULT") {
		t.Errorf("columns not aligned:\n%s", buf.String())
	}
}
