package metrics

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzNames feeds arbitrary names to every name-like label: none may
// panic the registry (which refuses invalid UTF-8) and every label value
// must be valid and bounded.
func FuzzNames(f *testing.F) {
	for _, s := range []string{
		"", "provision", "route:/chat/*", "bad\xffname", "\x00",
		strings.Repeat("é", 40), "other", "unknown", "gpt-4o\u202e",
	} {
		f.Add(s)
	}
	p := New(Options{
		MaxEndpoints: 8, MaxModels: 8, MaxBreakers: 8,
	})
	f.Fuzz(func(t *testing.T, s string) {
		c := cleanName(s)
		if !utf8.ValidString(c) || c == "" || len(c) > MaxLabelLen {
			t.Fatalf("cleanName(%q) = %q: invalid, empty or too long", s, c)
		}
		if utf8.ValidString(s) && s != "" && len(s) <= MaxLabelLen && c != s {
			t.Fatalf("cleanName changed the fit name %q to %q", s, c)
		}
		p.Request(s, 200, time.Millisecond)
		p.Tokens(s, 1, 1)
		p.Breaker(s, s)
		p.Auth(s)
		p.LedgerOp(s, s, time.Millisecond)
		p.Lease(s)
		p.Keys(s, 1)
		if _, err := p.Registry().Gather(); err != nil {
			t.Fatalf("gather after name %q: %v", s, err)
		}
	})
}
