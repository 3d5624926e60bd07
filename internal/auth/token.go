package auth

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// Kind says how a configured Token's Value is to be read.
type Kind int

const (
	// KindPlain means Value is the token itself.
	KindPlain Kind = iota
	// KindSHA256 means Value is the hex SHA-256 digest of the token
	// (64 hex characters, either case).
	KindSHA256
	// KindBcrypt means Value is a bcrypt hash ($2a$, $2b$ or $2y$) of the
	// token.
	KindBcrypt
)

// String returns "plain", "sha256" or "bcrypt".
func (k Kind) String() string {
	switch k {
	case KindPlain:
		return "plain"
	case KindSHA256:
		return "sha256"
	case KindBcrypt:
		return "bcrypt"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Token is one accepted service token.
type Token struct {
	Kind Kind
	// Value is the plaintext token, its hex SHA-256 digest or its bcrypt
	// hash, depending on Kind. It is secret and never appears in errors.
	Value string
	// Source is a secret-free description of where the token came from
	// (for example "auth.tokens[1] (env:ZIMMER_SERVICE_TOKEN)"). Errors
	// name a token by its Source, never by its Value.
	Source string
}

// maxBcryptCost is the highest bcrypt cost New accepts. A cost of 15 already
// takes seconds a verification; anything above would turn every uncached
// check into a self-inflicted outage.
const maxBcryptCost = 15

// maxBcryptInput is the longest token bcrypt can tell apart: it reads at
// most 72 bytes of its input, so a longer presented token is refused
// instead of being truncated into a match.
const maxBcryptInput = 72

// bcryptHashLen is the length of every well-formed bcrypt hash.
const bcryptHashLen = 60

// Prefixes of a resolved secret value recognised by ParseToken.
const (
	prefixSHA256 = "sha256:"
	prefixBcrypt = "bcrypt:"
)

// ParseToken classifies a resolved secret value in the configuration's
// notation: "sha256:<64 hex>" is a digest, "bcrypt:<hash>" or a bare hash
// starting with $2a$, $2b$ or $2y$ is a bcrypt hash, anything else is the
// plaintext token. The format of a plaintext token is never checked. An
// empty value, a malformed digest or a malformed hash is an error naming
// source but never value.
func ParseToken(value, source string) (Token, error) {
	var tok Token
	switch {
	case strings.HasPrefix(value, prefixSHA256):
		tok = Token{Kind: KindSHA256, Value: value[len(prefixSHA256):]}
	case strings.HasPrefix(value, prefixBcrypt):
		tok = Token{Kind: KindBcrypt, Value: value[len(prefixBcrypt):]}
	case isBcryptHash(value):
		tok = Token{Kind: KindBcrypt, Value: value}
	default:
		tok = Token{Kind: KindPlain, Value: value}
	}
	tok.Source = source
	if err := tok.validate(); err != nil {
		return Token{}, err
	}
	return tok, nil
}

// isBcryptHash reports whether s starts like a bcrypt hash.
func isBcryptHash(s string) bool {
	for _, p := range []string{"$2a$", "$2b$", "$2y$"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// validate checks that Value can be used as its Kind says. Its errors name
// the Source only.
func (t Token) validate() error {
	var err error
	switch t.Kind {
	case KindPlain:
		if t.Value == "" {
			err = errors.New("empty token")
		}
	case KindSHA256:
		if _, derr := decodeDigest(t.Value); derr != nil {
			err = errors.New("sha256 digest must be 64 hex characters")
		}
	case KindBcrypt:
		err = validateBcrypt(t.Value)
	default:
		err = fmt.Errorf("unknown token kind %d", int(t.Kind))
	}
	if err != nil {
		return fmt.Errorf("token %s: %w", t.describe(), err)
	}
	return nil
}

// describe names the token in errors.
func (t Token) describe() string {
	if t.Source == "" {
		return "(unnamed)"
	}
	return t.Source
}

// decodeDigest parses a hex SHA-256 digest.
func decodeDigest(s string) ([32]byte, error) {
	var d [32]byte
	if hex.DecodedLen(len(s)) != len(d) {
		return d, errors.New("wrong length")
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, errors.New("not hex")
	}
	return d, nil
}

// validateBcrypt checks a bcrypt hash's shape and cost. The bcrypt package's
// own errors are not wrapped: some of them quote bytes of the hash.
func validateBcrypt(hash string) error {
	if !isBcryptHash(hash) {
		return errors.New("bcrypt hash must start with $2a$, $2b$ or $2y$")
	}
	cost, err := bcrypt.Cost([]byte(hash))
	if err != nil || len(hash) != bcryptHashLen {
		return errors.New("malformed bcrypt hash")
	}
	if cost > maxBcryptCost {
		return fmt.Errorf("bcrypt cost %d is above the maximum %d",
			cost, maxBcryptCost)
	}
	return nil
}
