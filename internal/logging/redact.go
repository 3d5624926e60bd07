// Package logging builds the sidecar's structured JSON logger and its
// access-log middleware.
//
// Every log record passes through one redaction path (Redactor), so a
// secret cannot reach the log whichever package or call site produced the
// record: attributes whose keys name a secret are masked, and known secret
// values (service tokens, API keys) and key-shaped strings are cut out of
// every string value. The package never logs query strings or header
// values on its own.
package logging

import (
	"context"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
)

// Mask replaces every redacted value.
const Mask = "[REDACTED]"

// secretKeys are attribute keys (lower-cased) whose values are never
// logged, whatever they hold.
var secretKeys = map[string]bool{
	"token": true, "service_token": true, "x-zimmer-service-token": true,
	"authorization": true, "api_key": true, "api-key": true, "apikey": true,
	"key": true, "password": true, "secret": true, "cookie": true,
	"set-cookie": true, "bot_token": true,
}

// keyShapes match strings that look like provider keys, bearer
// credentials or Telegram bot tokens ("123456:AA..." in bot API paths)
// even when nobody registered them.
var keyShapes = regexp.MustCompile(
	`(?i)(sk-[a-z0-9_\-]{8,}|bearer\s+[a-z0-9_\-\.=]{8,}|\d{6,12}:[a-z0-9_\-]{30,})`)

// Redactor removes secrets from strings. The zero value is not usable; use
// NewRedactor. It is safe for concurrent use; Set may be called at any time
// (a hot reload registers the new tokens).
type Redactor struct {
	// secrets holds the known values, longest first so that overlaps
	// mask fully. The slice is never changed once stored: Set stores a
	// new one, so every log line reads it without a lock.
	secrets atomic.Pointer[[]string]
	mu      sync.Mutex // serialises Set and Add
}

// NewRedactor returns a Redactor that masks the given secret values.
func NewRedactor(secrets ...string) *Redactor {
	r := &Redactor{}
	r.Set(secrets...)
	return r
}

// Set replaces the known secret values. Values shorter than 4 bytes are
// ignored: masking them would shred ordinary text.
func (r *Redactor) Set(secrets ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.set(secrets)
}

// set filters, sorts and stores secrets; the caller holds r.mu.
func (r *Redactor) set(secrets []string) {
	kept := make([]string, 0, len(secrets))
	for _, s := range secrets {
		if len(s) >= 4 {
			kept = append(kept, s)
		}
	}
	// Longest first, so a secret containing another is masked whole.
	for i := 1; i < len(kept); i++ {
		for j := i; j > 0 && len(kept[j]) > len(kept[j-1]); j-- {
			kept[j], kept[j-1] = kept[j-1], kept[j]
		}
	}
	r.secrets.Store(&kept)
}

// Add registers more secret values, keeping the ones already known.
func (r *Redactor) Add(secrets ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	all := append(append([]string(nil), r.known()...), secrets...)
	r.set(all)
}

// known returns the secret values in force (nil before the first Set).
func (r *Redactor) known() []string {
	if p := r.secrets.Load(); p != nil {
		return *p
	}
	return nil
}

// String returns s with every known secret and key-shaped substring masked.
// A string with nothing to mask is returned as it is, without copying.
func (r *Redactor) String(s string) string {
	for _, sec := range r.known() {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, Mask)
		}
	}
	if mayHoldKeyShape(s) && keyShapes.MatchString(s) {
		s = keyShapes.ReplaceAllString(s, Mask)
	}
	return s
}

// mayHoldKeyShape is a cheap filter before the regexp, which is costly on
// every string of every log line: each key shape (matched ignoring case)
// needs "sk-", "bearer", or a ':' right after six ASCII digits (bot
// tokens; a label such as "route:/chat/*" has a ':' but no digits).
func mayHoldKeyShape(s string) bool {
	for i := 6; i < len(s); i++ {
		if s[i] == ':' && allDigits(s[i-6:i]) {
			return true
		}
	}
	for i := 0; i+3 <= len(s); i++ {
		switch s[i] | 0x20 {
		case 's':
			if (s[i+1]|0x20) == 'k' && s[i+2] == '-' {
				return true
			}
		case 'b':
			if i+6 <= len(s) && strings.EqualFold(s[i:i+6], "bearer") {
				return true
			}
		}
	}
	return false
}

// allDigits reports whether s is made of ASCII digits only (what \d
// matches in keyShapes).
func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Bytes is String for byte slices, for bodies that may echo a secret.
func (r *Redactor) Bytes(b []byte) []byte {
	s := r.String(string(b))
	if len(s) == len(b) && s == string(b) {
		return b
	}
	return []byte(s)
}

// attr returns a with its value redacted: masked entirely when the key
// names a secret, scrubbed when it is a string, recursed into for groups.
// changed is false when the result is a itself, which is then safe to
// pass on unchanged.
func (r *Redactor) attr(a slog.Attr) (out slog.Attr, changed bool) {
	if secretKeys[strings.ToLower(a.Key)] {
		return slog.String(a.Key, Mask), true
	}
	resolved := a.Value.Kind() == slog.KindLogValuer
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		s := v.String()
		clean := r.String(s)
		if !resolved && clean == s {
			return a, false
		}
		return slog.String(a.Key, clean), true
	case slog.KindGroup:
		group := v.Group()
		out := make([]any, 0, len(group))
		for _, g := range group {
			ga, _ := r.attr(g)
			out = append(out, ga)
		}
		return slog.Group(a.Key, out...), true
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, r.String(err.Error())), true
		}
		if s, ok := v.Any().(interface{ String() string }); ok {
			return slog.String(a.Key, r.String(s.String())), true
		}
		return a, false
	default:
		return slog.Attr{Key: a.Key, Value: v}, resolved
	}
}

// handler is a slog.Handler that redacts every record before passing it on.
type handler struct {
	next slog.Handler
	red  *Redactor
}

// NewHandler wraps next so that every message and attribute goes through
// red first.
func NewHandler(next slog.Handler, red *Redactor) slog.Handler {
	return &handler{next: next, red: red}
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

// Handle redacts rec and passes it on. A record with nothing to redact
// (the usual access line) is passed on as it is, without a copy.
func (h *handler) Handle(ctx context.Context, rec slog.Record) error {
	msg := h.red.String(rec.Message)
	changed := msg != rec.Message
	var buf [16]slog.Attr
	clean := buf[:0]
	rec.Attrs(func(a slog.Attr) bool {
		ca, c := h.red.attr(a)
		changed = changed || c
		clean = append(clean, ca)
		return true
	})
	if !changed {
		return h.next.Handle(ctx, rec)
	}
	out := slog.NewRecord(rec.Time, rec.Level, msg, rec.PC)
	out.AddAttrs(clean...)
	return h.next.Handle(ctx, out)
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i], _ = h.red.attr(a)
	}
	return &handler{next: h.next.WithAttrs(clean), red: h.red}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{next: h.next.WithGroup(name), red: h.red}
}
