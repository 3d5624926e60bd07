package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
)

// Size is a number of bytes. In the file it is an integer or a string with
// a unit: "512B", "32KB", "32KiB", "1MB", "1MiB", "1GB", "1GiB" (KB is 1000
// bytes, KiB 1024).
type Size int64

// Size units.
const (
	B   Size = 1
	KB  Size = 1000
	KiB Size = 1024
	MB  Size = 1000 * KB
	MiB Size = 1024 * KiB
	GB  Size = 1000 * MB
	GiB Size = 1024 * MiB
)

var sizeUnits = map[string]Size{
	"b": B, "kb": KB, "kib": KiB, "mb": MB, "mib": MiB, "gb": GB, "gib": GiB,
}

// ParseSize parses a whole number of bytes with an optional unit (case
// insensitive, optional space before it). Negative sizes are errors.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, errors.New(`must be a whole number of bytes with an optional ` +
			`unit B, KB, KiB, MB, MiB, GB or GiB, like "1MiB"`)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, errors.New("is too large")
	}
	unit := strings.ToLower(strings.TrimSpace(t[i:]))
	mult := B
	if unit != "" {
		m, ok := sizeUnits[unit]
		if !ok {
			return 0, fmt.Errorf("has unknown unit %q; use B, KB, KiB, MB, MiB, GB or GiB",
				t[i:])
		}
		mult = m
	}
	if n > math.MaxInt64/int64(mult) {
		return 0, errors.New("is too large")
	}
	return Size(n) * mult, nil
}

// String formats the size with the largest binary unit that divides it.
func (s Size) String() string {
	for _, u := range []struct {
		name string
		size Size
	}{{"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if s != 0 && s%u.size == 0 {
			return strconv.FormatInt(int64(s/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// methods are the HTTP methods accepted in calls, probes and routes.
var methods = []string{
	"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
}

// normMethod returns the upper-case method and whether it is known.
func normMethod(m string) (string, bool) {
	u := strings.ToUpper(m)
	for _, k := range methods {
		if u == k {
			return u, true
		}
	}
	return m, false
}

// Call is an app request written "METHOD /path" in the file, e.g.
// "POST /internal/tenants/{user_automation_id}". Path may hold {field}
// templates (see TemplateFields) and a query string.
type Call struct {
	Method string // upper case
	Path   string // starts with "/"
}

// String gives the call back in its file form.
func (c Call) String() string { return c.Method + " " + c.Path }

// IsZero reports whether the call is unset.
func (c Call) IsZero() bool { return c.Method == "" && c.Path == "" }

// ParseCall parses "METHOD /path". It checks the shape only; templates are
// checked by validation.
func ParseCall(s string) (Call, error) {
	method, p, ok := strings.Cut(strings.TrimSpace(s), " ")
	p = strings.TrimSpace(p)
	if !ok || method == "" || p == "" {
		return Call{}, fmt.Errorf(`must be "METHOD /path", like "POST /tenants" (got %q)`, s)
	}
	m, known := normMethod(method)
	if !known {
		return Call{}, fmt.Errorf("has unknown method %q; use one of %s",
			method, strings.Join(methods, ", "))
	}
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") {
		return Call{}, fmt.Errorf(`path must start with one "/" (got %q)`, p)
	}
	return Call{Method: m, Path: p}, nil
}

// Extract reads one answer field from the app's JSON answer. In the file it
// is either a dot path ("summary.count", "items.0.id") or a table
// { from = "summary.phase", map = { idle = "ready" }, default = "ready" }.
type Extract struct {
	// From is the dot path into the answer; empty means not configured.
	From string
	// Map translates the value found (as text) into another string;
	// values missing from a non-empty Map yield Default.
	Map map[string]string
	// Default is used when the path is absent or null, or its value is
	// not in Map; nil means none. It is a string, int64, float64 or bool.
	Default any
}

// IsZero reports whether the extract is unset.
func (e Extract) IsZero() bool {
	return e.From == "" && len(e.Map) == 0 && e.Default == nil
}

// UserSource says where a metered request names its user.
type UserSource string

// User sources.
const (
	UserFromHeader UserSource = "header"
	UserFromQuery  UserSource = "query"
	UserFromPath   UserSource = "path"
)

// UserRef locates the user_automation_id in a request; written
// "header:NAME", "query:NAME" or "path:PARAM" in the file.
type UserRef struct {
	Source UserSource
	// Name is the header name, the query parameter or the route's path
	// parameter.
	Name string
}

// String gives the reference back in its file form.
func (u UserRef) String() string {
	if u.Source == "" {
		return ""
	}
	return string(u.Source) + ":" + u.Name
}

// ParseUserRef parses "header:NAME", "query:NAME" or "path:PARAM".
func ParseUserRef(s string) (UserRef, error) {
	src, name, ok := strings.Cut(s, ":")
	name = strings.TrimSpace(name)
	switch UserSource(src) {
	case UserFromHeader, UserFromQuery, UserFromPath:
	default:
		return UserRef{}, fmt.Errorf(
			`must be "header:NAME", "query:NAME" or "path:PARAM" (got %q)`, s)
	}
	if !ok || name == "" {
		return UserRef{}, fmt.Errorf("needs a name after %q", src+":")
	}
	if UserSource(src) == UserFromHeader && !validHeaderName(name) {
		return UserRef{}, fmt.Errorf("%q is not a valid header name", name)
	}
	return UserRef{Source: UserSource(src), Name: name}, nil
}

// validHeaderName reports whether s is an HTTP token.
func validHeaderName(s string) bool {
	for _, r := range s {
		if r > 0x7e || r <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return s != ""
}

// TokenKind says how a configured token is compared.
type TokenKind string

// Token kinds.
const (
	// TokenPlain: Value is the token itself.
	TokenPlain TokenKind = "plain"
	// TokenSHA256: Value is the lowercase hex SHA-256 digest of the token.
	TokenSHA256 TokenKind = "sha256"
	// TokenBcrypt: Value is a bcrypt hash of the token.
	TokenBcrypt TokenKind = "bcrypt"
)

// Token is one accepted service token after its secret reference is
// resolved. Its String, GoString and LogValue never show Value.
type Token struct {
	Kind TokenKind
	// Value is the secret: the token, its hex digest or its bcrypt hash,
	// without the "sha256:"/"bcrypt:" prefix.
	Value string
	// Source says where the token came from without revealing it, e.g.
	// "env:ZIMMER_TOKEN", "file:/run/secrets/token" or
	// "auth.tokens[2] (inline)".
	Source string
}

// String describes the token without its value.
func (t Token) String() string { return string(t.Kind) + " token from " + t.Source }

// GoString describes the token without its value, also for %#v.
func (t Token) GoString() string {
	return fmt.Sprintf("config.Token{Kind:%q, Source:%q, Value:<redacted>}", t.Kind, t.Source)
}

// MarshalJSON describes the token without its value, so that encoding a
// Config (or logging one with a JSON handler) cannot leak it.
func (t Token) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"kind": string(t.Kind), "source": t.Source})
}

// LogValue describes the token without its value.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("kind", string(t.Kind)),
		slog.String("source", t.Source),
	)
}

// Secret is a value resolved from a secret reference ("env:NAME",
// "file:/path" or the value itself), such as ledger.dsn. The zero value
// means not configured. Its String, GoString, MarshalJSON and LogValue
// never show Value.
type Secret struct {
	// Value is the secret itself, trimmed.
	Value string
	// Source says where it came from without revealing it, e.g.
	// "env:ZIMMER_LEDGER_DSN", "file:/run/secrets/dsn" or
	// "ledger.dsn (inline)"; empty when not configured.
	Source string
}

// String describes the secret without its value.
func (s Secret) String() string {
	if s.Source == "" {
		return "secret (not set)"
	}
	return "secret from " + s.Source
}

// GoString describes the secret without its value, also for %#v.
func (s Secret) GoString() string {
	return fmt.Sprintf("config.Secret{Source:%q, Value:<redacted>}", s.Source)
}

// MarshalJSON describes the secret without its value.
func (s Secret) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"source": s.Source})
}

// LogValue describes the secret without its value.
func (s Secret) LogValue() slog.Value {
	return slog.GroupValue(slog.String("source", s.Source))
}
