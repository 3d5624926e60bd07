package config

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Size
		wantErr string
	}{
		{"0", 0, ""},
		{"512", 512, ""},
		{"512B", 512, ""},
		{"1KB", 1000, ""},
		{"1KiB", 1024, ""},
		{"32 kib", 32 * 1024, ""},
		{"1MB", 1_000_000, ""},
		{"1MiB", 1 << 20, ""},
		{"2GB", 2_000_000_000, ""},
		{"1GiB", 1 << 30, ""},
		{"", 0, "whole number of bytes"},
		{"MiB", 0, "whole number of bytes"},
		{"-1", 0, "whole number of bytes"},
		{"1.5MiB", 0, `unknown unit ".5MiB"`},
		{"1TB", 0, `unknown unit "TB"`},
		{"99999999999GiB", 0, "too large"},
		{"99999999999999999999", 0, "too large"},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		switch {
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("ParseSize(%q): got %d, %v; want %d", tt.in, got, err, tt.want)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ParseSize(%q): got error %v, want %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestSizeString(t *testing.T) {
	t.Parallel()
	for in, want := range map[Size]string{
		0: "0B", 100: "100B", 1024: "1KiB", 1536: "1536B", MiB: "1MiB", 3 * GiB: "3GiB",
	} {
		if got := in.String(); got != want {
			t.Errorf("Size(%d).String(): got %q, want %q", int64(in), got, want)
		}
	}
}

func TestParseCall(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Call
		wantErr string
	}{
		{"POST /t", Call{"POST", "/t"}, ""},
		{"  get   /t/{user_id}?x=1 ", Call{"GET", "/t/{user_id}?x=1"}, ""},
		{"DELETE /", Call{"DELETE", "/"}, ""},
		{"POST", Call{}, `must be "METHOD /path"`},
		{"/t", Call{}, `must be "METHOD /path"`},
		{"SEND /t", Call{}, `unknown method "SEND"`},
		{"PUT t", Call{}, `must start with one "/"`},
	}
	for _, tt := range tests {
		got, err := ParseCall(tt.in)
		switch {
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("ParseCall(%q): got %v, %v; want %v", tt.in, got, err, tt.want)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ParseCall(%q): got error %v, want %q", tt.in, err, tt.wantErr)
		}
	}
	if got := (Call{"POST", "/t"}).String(); got != "POST /t" {
		t.Errorf("String: got %q, want %q", got, "POST /t")
	}
}

func TestParseUserRef(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    UserRef
		wantErr string
	}{
		{"header:X-Tenant", UserRef{UserFromHeader, "X-Tenant"}, ""},
		{"query:tenant", UserRef{UserFromQuery, "tenant"}, ""},
		{"path:id", UserRef{UserFromPath, "id"}, ""},
		{"header:", UserRef{}, `needs a name after "header:"`},
		{"X-Tenant", UserRef{}, `must be "header:NAME"`},
		{"cookie:x", UserRef{}, `must be "header:NAME"`},
		{"header:a:b", UserRef{}, "not a valid header name"},
	}
	for _, tt := range tests {
		got, err := ParseUserRef(tt.in)
		switch {
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("ParseUserRef(%q): got %v, %v; want %v", tt.in, got, err, tt.want)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ParseUserRef(%q): got error %v, want %q", tt.in, err, tt.wantErr)
		}
		if err == nil && got.String() != tt.in {
			t.Errorf("String: got %q, want %q", got.String(), tt.in)
		}
	}
}

func TestCheckTemplate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, wantErr string
	}{
		{"", ""},
		{"/t/{user_automation_id}/x/{user_id}", ""},
		{"{bot_token}{demo_tokens}", ""},
		{"{}", "unknown field {}"},
		{"/t/{id}", "unknown field {id}; known fields"},
		{"/t/{user_idd}", "did you mean {user_id}?"},
		{"/t/{user_id", `"{" without "}"`},
		{"/t/{{user_id}}", `"{" without "}"`},
		{"/t/}", `"}" without "{"`},
	}
	for _, tt := range tests {
		err := checkTemplate(tt.in, templateFields)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("checkTemplate(%q): got %v, want nil", tt.in, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("checkTemplate(%q): got %v, want %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestRouteParams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want, wantErr string
	}{
		{"/", "", ""},
		{"/*", "", ""},
		{"/chat", "", ""},
		{"/chat/*", "", ""},
		{"/t/{tenant}/docs/{doc_id}", "tenant doc_id", ""},
		{"/t/{tenant}/*", "tenant", ""},
		{"/t/{1x}", "", "bad parameter"},
		{"/t/*x", "", `may only end in "/*"`},
		{"//t", "", "clean path"},
	}
	for _, tt := range tests {
		got, err := routeParams(tt.in)
		switch {
		case tt.wantErr == "" && (err != nil || strings.Join(got, " ") != tt.want):
			t.Errorf("routeParams(%q): got %v, %v; want %q", tt.in, got, err, tt.want)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("routeParams(%q): got error %v, want %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestPaths(t *testing.T) {
	t.Parallel()
	p := joinKey(joinIndex(joinKey("", "route"), 2), "meter")
	p = joinKey(joinKey(p, "a.b"), "user")
	if want := `route[2].meter."a.b".user`; p != want {
		t.Fatalf("got %q, want %q", p, want)
	}
	var chain []string
	for ; p != ""; p = parentPath(p) {
		chain = append(chain, p)
	}
	want := []string{`route[2].meter."a.b".user`, `route[2].meter."a.b"`,
		"route[2].meter", "route[2]", "route"}
	if strings.Join(chain, " | ") != strings.Join(want, " | ") {
		t.Errorf("got parents %q, want %q", chain, want)
	}
	if got := parentPath(`x."a\"b"`); got != "x" {
		t.Errorf("got parent %q, want x", got)
	}
	if got := envName("route[2].meter.units"); got != "ZIMMER_SIDECAR_ROUTE__2__METER__UNITS" {
		t.Errorf("got env name %q", got)
	}
}

func TestProblemFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		p    Problem
		file string
		want string
	}{
		{Problem{Path: "a.b", Line: 3, Message: "m"}, "c.toml", "c.toml:3: a.b: m"},
		{Problem{Path: "a.b", Message: "m"}, "c.toml", "c.toml: a.b: m"},
		{Problem{Path: "a.b", Line: 3, Message: "m"}, "", "line 3: a.b: m"},
		{Problem{Path: "a.b", Env: "ZIMMER_SIDECAR_A__B", Message: "m"}, "c.toml",
			"ZIMMER_SIDECAR_A__B: a.b: m"},
		{Problem{Line: 1, Message: "syntax"}, "c.toml", "c.toml:1: syntax"},
		{Problem{Message: "m"}, "", "m"},
	}
	for _, tt := range tests {
		if got := tt.p.Format(tt.file); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}
