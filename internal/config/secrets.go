package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// secretSource is where secret references are resolved: the environment
// passed to Load or Parse, and a file reader.
type secretSource struct {
	env      map[string]string
	readFile func(name string) ([]byte, error)
}

// newSecretSource indexes environ; the first occurrence of a name wins, as
// with os.Getenv.
func newSecretSource(environ []string, readFile func(string) ([]byte, error)) secretSource {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if _, dup := env[name]; ok && !dup {
			env[name] = value
		}
	}
	return secretSource{env: env, readFile: readFile}
}

// resolveTokens resolves each reference of the token list at p. Entries
// that fail are reported and left out.
func (d *decoder) resolveTokens(p string, refs []string) []Token {
	out := make([]Token, 0, len(refs))
	for i, ref := range refs {
		ep := joinIndex(p, i)
		t, msg := d.secrets.resolve(ep, ref)
		if msg != "" {
			d.addf(ep, "%s", msg)
			continue
		}
		out = append(out, t)
	}
	return out
}

// resolve turns one reference into a Token. On failure it returns a
// message that names where the secret lives but never the secret.
func (s secretSource) resolve(p, ref string) (Token, string) {
	value, source, msg := s.resolveValue(p, ref)
	if msg != "" {
		return Token{}, msg
	}
	t, msg := classify(value)
	t.Source = source
	switch {
	case msg != "" && source == p+" (inline)":
		return Token{}, msg
	case msg != "":
		return Token{}, "the value of " + source + " " + msg
	}
	return t, ""
}

// resolveValue reads the secret ref names: "env:NAME", "file:/path" or
// the value itself (its source is then p+" (inline)"). The value is
// trimmed and must not be empty. On failure it returns a message that
// names where the secret lives but never the secret.
func (s secretSource) resolveValue(p, ref string) (value, source, msg string) {
	switch {
	case strings.HasPrefix(ref, "env:"):
		name := strings.TrimSpace(strings.TrimPrefix(ref, "env:"))
		if name == "" {
			return "", "", `"env:" needs the name of an environment variable, ` +
				`like "env:ZIMMER_TOKEN"`
		}
		v, ok := s.env[name]
		if !ok {
			return "", "", "environment variable " + name + " is not set"
		}
		source, value = "env:"+name, strings.TrimSpace(v)
		if value == "" {
			return "", "", "environment variable " + name + " is empty"
		}
	case strings.HasPrefix(ref, "file:"):
		name := strings.TrimSpace(strings.TrimPrefix(ref, "file:"))
		if name == "" {
			return "", "", `"file:" needs a path, like "file:/run/secrets/zimmer-token"`
		}
		b, err := s.readFile(name)
		if err != nil {
			return "", "", "cannot read file " + name + ": " + fileReason(err)
		}
		source, value = "file:"+name, strings.TrimSpace(string(b))
		if value == "" {
			return "", "", "file " + name + " is empty"
		}
	default:
		source, value = p+" (inline)", ref
		if strings.TrimSpace(value) == "" {
			return "", "", "is empty"
		}
	}
	return value, source, ""
}

// decodeSecret resolves the secret reference at p. An empty string (the
// default) leaves dst unset; a wrong type is reported without its value.
func (d *decoder) decodeSecret(p string, v any, dst *Secret) {
	var ref string
	switch t := v.(type) {
	case string:
		ref = t
	case envValue:
		ref = t.text
	default:
		d.wrongType(p, "a string (a secret reference)", v, true)
		return
	}
	if strings.TrimSpace(ref) == "" {
		*dst = Secret{}
		return
	}
	value, source, msg := d.secrets.resolveValue(p, ref)
	if msg != "" {
		d.addf(p, "%s", msg)
		return
	}
	*dst = Secret{Value: value, Source: source}
}

// fileReason explains a read failure without the error's own path prefix.
func fileReason(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "it does not exist"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// bcryptPrefixes start a bare bcrypt hash.
var bcryptPrefixes = []string{"$2a$", "$2b$", "$2y$"}

// classify tells a digest or a hash from a plaintext token. A plaintext
// token's format is never checked: platforms issue different formats.
func classify(v string) (Token, string) {
	switch {
	case strings.HasPrefix(v, "sha256:"):
		digest := strings.ToLower(strings.TrimPrefix(v, "sha256:"))
		if _, err := hex.DecodeString(digest); err != nil || len(digest) != 64 {
			return Token{}, `is not a valid "sha256:" digest: it needs exactly ` +
				`64 hexadecimal characters after the prefix`
		}
		return Token{Kind: TokenSHA256, Value: digest}, ""
	case strings.HasPrefix(v, "bcrypt:"):
		return bcryptToken(strings.TrimPrefix(v, "bcrypt:"))
	}
	if hasBcryptPrefix(v) {
		return bcryptToken(v)
	}
	return Token{Kind: TokenPlain, Value: v}, ""
}

// bcryptToken checks the shape of a bcrypt hash.
func bcryptToken(h string) (Token, string) {
	const hashLen = 60
	_, err := bcrypt.Cost([]byte(h))
	if err != nil || len(h) != hashLen || !hasBcryptPrefix(h) {
		return Token{}, `is not a valid bcrypt hash: it needs 60 characters ` +
			`starting with "$2a$", "$2b$" or "$2y$" and a cost from 4 to 31`
	}
	return Token{Kind: TokenBcrypt, Value: h}, ""
}

// hasBcryptPrefix reports whether h starts like a bcrypt hash we accept.
func hasBcryptPrefix(h string) bool {
	for _, prefix := range bcryptPrefixes {
		if strings.HasPrefix(h, prefix) {
			return true
		}
	}
	return false
}

// resolveSecretList resolves a list of secret references at p. A "file:"
// reference may hold several secrets, one per line; blank lines and lines
// starting with "#" are skipped, and each secret's Source names its line
// ("file:/path#2"). Problems name the reference's position, never a value.
func (d *decoder) resolveSecretList(p string, refs []string) []Secret {
	out := []Secret{}
	for i, ref := range refs {
		ip := joinIndex(p, i)
		value, source, msg := d.secrets.resolveValue(ip, ref)
		if msg != "" {
			d.addf(ip, "%s", msg)
			continue
		}
		if !strings.HasPrefix(ref, "file:") {
			out = append(out, Secret{Value: value, Source: source})
			continue
		}
		n := 0
		for line := range strings.Lines(value) {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			n++
			out = append(out, Secret{Value: line, Source: fmt.Sprintf("%s#%d", source, n)})
		}
	}
	return out
}
