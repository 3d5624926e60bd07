package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestSecretResolution checks each reference form and each stored form.
func TestSecretResolution(t *testing.T) {
	t.Parallel()
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256Hex("tok")
	env := []string{
		"TOK_ENV= from-env \n",
		"TOK_DIGEST=sha256:" + strings.ToUpper(digest),
		"TOK_ENV=shadowed", // the first occurrence wins
	}
	files := map[string]string{
		"/run/secrets/token":  "from-file\n",
		"/run/secrets/bcrypt": string(hash) + "\n",
	}
	doc := base + fmt.Sprintf(`[auth]
tokens = [
  "env:TOK_ENV",
  "file:/run/secrets/token",
  "inline-token",
  "env:TOK_DIGEST",
  "bcrypt:%[1]s",
  "file:/run/secrets/bcrypt",
  "%[1]s",
]
`, hash)
	c, err := parse(t, doc, env, files)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := []Token{
		{TokenPlain, "from-env", "env:TOK_ENV"},
		{TokenPlain, "from-file", "file:/run/secrets/token"},
		{TokenPlain, "inline-token", "auth.tokens[2] (inline)"},
		{TokenSHA256, digest, "env:TOK_DIGEST"},
		{TokenBcrypt, string(hash), "auth.tokens[4] (inline)"},
		{TokenBcrypt, string(hash), "file:/run/secrets/bcrypt"},
		{TokenBcrypt, string(hash), "auth.tokens[6] (inline)"},
	}
	if len(c.Auth.Tokens) != len(want) {
		t.Fatalf("got %d tokens, want %d", len(c.Auth.Tokens), len(want))
	}
	for i, w := range want {
		if got := c.Auth.Tokens[i]; got != w {
			t.Errorf("token %d: got %s (value %q), want %s (value %q)",
				i, got, got.Value, w, w.Value)
		}
	}
}

// TestSecretProblems checks every failing reference: the path, the line,
// and that no message shows a secret.
func TestSecretProblems(t *testing.T) {
	t.Parallel()
	const secret = "planted-secret-9f2c"
	env := []string{"EMPTY=  ", "SHORT=sha256:" + secret, "BAD_BCRYPT=$2b$" + secret}
	files := map[string]string{"/empty": "\n\t ", "/short": "sha256:abc" + secret}
	tests := []struct {
		name, ref, want string
	}{
		{"env unset", "env:NOPE", "environment variable NOPE is not set"},
		{"env empty", "env:EMPTY", "environment variable EMPTY is empty"},
		{"env no name", "env:", `"env:" needs the name`},
		{"file missing", "file:/missing", "cannot read file /missing: it does not exist"},
		{"file empty", "file:/empty", "file /empty is empty"},
		{"file no path", "file: ", `"file:" needs a path`},
		{"digest from env", "env:SHORT", `the value of env:SHORT is not a valid "sha256:" digest`},
		{"digest from file", "file:/short", "the value of file:/short is not a valid"},
		{"digest inline", "sha256:" + secret, `is not a valid "sha256:" digest`},
		{"bcrypt from env", "env:BAD_BCRYPT", "is not a valid bcrypt hash"},
		{"bcrypt inline", "bcrypt:$2a$10$" + secret, "is not a valid bcrypt hash"},
		{"empty inline", "", "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			doc := base + "[auth]\ntokens = [\n  \"ok\",\n  \"" + tt.ref + "\",\n]\n"
			_, err := parse(t, doc, env, files)
			ps := problemsOf(t, err)
			if len(ps) != 1 {
				t.Fatalf("got %d problems, want 1:\n%v", len(ps), err)
			}
			checkProblem(t, ps[0], "auth.tokens[1]", 6, tt.want)
			if strings.Contains(err.Error(), secret) {
				t.Errorf("message shows the secret: %v", err)
			}
		})
	}
}

// TestSecretWrongTypeHidesValue checks that a token of the wrong type is
// not echoed.
func TestSecretWrongTypeHidesValue(t *testing.T) {
	t.Parallel()
	p := onlyProblem(t, base+"[auth]\ntokens = [12345678]\n")
	checkProblem(t, p, "auth.tokens[0]", 4, "must be a string (got an integer)")
	if strings.Contains(p.Message, "12345678") {
		t.Errorf("message shows the value: %q", p.Message)
	}
}

// TestTokenRedaction checks that printing or logging a Config never shows
// a token.
func TestTokenRedaction(t *testing.T) {
	t.Parallel()
	const secret = "planted-secret-77aa"
	c := mustParse(t, base+"[auth]\ntokens = [\"env:T\", \""+secret+"\"]\n", "T="+secret)
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(format, c.Auth); strings.Contains(out, secret) {
			t.Errorf("%s shows the token: %s", format, out)
		}
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("loaded", "tokens", c.Auth.Tokens,
		"token", c.Auth.Tokens[0])
	if strings.Contains(buf.String(), secret) {
		t.Errorf("log shows the token: %s", buf.String())
	}
	if !strings.Contains(buf.String(), "env:T") {
		t.Errorf("log lacks the token's source: %s", buf.String())
	}
}

// TestEmptyTokensWarn checks that an empty list is legal but warned about.
func TestEmptyTokensWarn(t *testing.T) {
	t.Parallel()
	c := mustParse(t, base+"[auth]\ntokens = []\n")
	ws := c.Warnings()
	if len(ws) != 1 {
		t.Fatalf("got warnings %v, want one", ws)
	}
	checkProblem(t, ws[0], "auth.tokens", 4, "every protected request")
}

// TestTokenFormatNotChecked checks that plaintext tokens of any shape are
// accepted: the platform issues several formats and none has a prefix.
func TestTokenFormatNotChecked(t *testing.T) {
	t.Parallel()
	for _, tok := range []string{
		strings.Repeat("ab", 32), "Zk3_-x9", "zst_legacy", "a b", "sha256", "$2x$notbcrypt",
	} {
		c := mustParse(t, base, "ZIMMER_SIDECAR_AUTH__TOKENS=env:T", "T="+tok)
		if got := c.Auth.Tokens[0]; got.Kind != TokenPlain || got.Value != tok {
			t.Errorf("token %q: got kind %s value %q, want it plain and unchanged",
				tok, got.Kind, got.Value)
		}
	}
}
