package keys

import (
	"fmt"
	"log/slog"
	"strings"
)

// Secret is a credential: an OpenAI API key or a service token. Every way
// of printing it (String, fmt verbs, JSON and text marshalling, slog)
// yields Redacted; only Reveal returns the value. The value is held by a
// closure, which neither fmt nor reflection can look into, so even a
// Secret in an unexported field of another struct prints as an address.
// Secrets are not comparable with ==. The zero Secret is empty.
type Secret struct {
	v func() string
}

// redactedMark is what a Secret prints when too little of it is safe to
// show.
const redactedMark = "[redacted]"

// minShownLen is the shortest secret whose last four characters are shown.
const minShownLen = 20

// NewSecret wraps s.
func NewSecret(s string) Secret {
	if s == "" {
		return Secret{}
	}
	return Secret{v: func() string { return s }}
}

// Reveal returns the value, for the one place that must send it (an
// Authorization header). Never log, wrap or store what it returns.
func (s Secret) Reveal() string {
	if s.v == nil {
		return ""
	}
	return s.v()
}

// IsZero reports whether s is empty.
func (s Secret) IsZero() bool { return s.v == nil }

// Redacted is the printable form: "sk-…abcd" for an OpenAI-style key of at
// least 20 characters (its "sk-" prefix and last four characters, as
// OpenAI's dashboard shows them), "…abcd" for another secret that long,
// "[redacted]" for a shorter one and "" for the zero Secret.
func (s Secret) Redacted() string {
	v := s.Reveal()
	switch {
	case v == "":
		return ""
	case len(v) < minShownLen:
		return redactedMark
	case strings.HasPrefix(v, "sk-"):
		return "sk-…" + v[len(v)-4:]
	default:
		return "…" + v[len(v)-4:]
	}
}

// String returns Redacted.
func (s Secret) String() string { return s.Redacted() }

// GoString returns Redacted, for %#v.
func (s Secret) GoString() string { return s.Redacted() }

// Format writes Redacted for every verb, so %x or %q cannot leak the value.
func (s Secret) Format(f fmt.State, _ rune) {
	_, _ = f.Write([]byte(s.Redacted()))
}

// MarshalText returns Redacted; JSON encodes a Secret as that string.
func (s Secret) MarshalText() ([]byte, error) {
	return []byte(s.Redacted()), nil
}

// LogValue returns Redacted.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.Redacted()) }
