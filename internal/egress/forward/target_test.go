package forward

import (
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in, addr, hostHeader string
		ok                   bool
	}{
		{"api.openai.com", "api.openai.com:443", "api.openai.com", true},
		{"API.OpenAI.com.:443", "api.openai.com:443", "api.openai.com", true},
		{"api.openai.com:8443", "api.openai.com:8443", "api.openai.com:8443", true},
		{"127.0.0.1:9000", "127.0.0.1:9000", "127.0.0.1:9000", true},
		{"[::1]", "[::1]:443", "[::1]", true},
		{"[0:0::1]:8443", "[::1]:8443", "[::1]:8443", true},
		{"", "", "", false},
		{"host:0", "", "", false},
		{"host:65536", "", "", false},
		{"host:0443", "", "", false},
		{"host:https", "", "", false},
		{"a..b", "", "", false},
		{"a b", "", "", false},
		{"user@host", "", "", false},
		{"[fe80::1%25eth0]:443", "", "", false},
		{strings.Repeat("a", 64) + ".com", "", "", false},
	}
	for _, tt := range tests {
		got, err := parseTarget(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("parseTarget(%q): got error %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok && (got.addr != tt.addr || got.hostHeader != tt.hostHeader) {
			t.Errorf("parseTarget(%q): got %q %q, want %q %q", tt.in, got.addr, got.hostHeader,
				tt.addr, tt.hostHeader)
		}
	}
}

func TestMatchesHost(t *testing.T) {
	def, _ := parseTarget("api.openai.com")
	alt, _ := parseTarget("api.openai.com:8443")
	tests := []struct {
		t    target
		host string
		want bool
	}{
		{def, "api.openai.com", true},
		{def, "API.openai.com:443", true},
		{def, "api.openai.com:8443", false},
		{def, "other.example", false},
		{def, "", false},
		{alt, "api.openai.com:8443", true},
		{alt, "api.openai.com", false},
	}
	for _, tt := range tests {
		if got := tt.t.matchesHost(tt.host); got != tt.want {
			t.Errorf("%s matches %q: got %v, want %v", tt.t.addr, tt.host, got, tt.want)
		}
	}
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"api.openai.com", "a.b:1", "[::1]:443", "1.2.3.4", "x:y:z",
		"[::ffff:1.2.3.4]", "A.B."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseTarget(s)
		if err != nil {
			return
		}
		// The normalized address parses to itself.
		again, err := parseTarget(got.addr)
		if err != nil || again != got {
			t.Fatalf("parseTarget(%q) = %+v; its addr parses to %+v, %v", s, got, again, err)
		}
		if got.addr != strings.ToLower(got.addr) {
			t.Fatalf("addr %q is not lowercase", got.addr)
		}
		if !got.matchesHost(got.hostHeader) {
			t.Fatalf("%+v does not match its own host header", got)
		}
	})
}
