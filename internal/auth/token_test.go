package auth

import (
	"strings"
	"testing"
)

func TestParseToken(t *testing.T) {
	t.Parallel()
	hash := bcryptHash(t, tokHex)
	tests := []struct {
		name      string
		value     string
		wantKind  Kind
		wantValue string
		wantErr   string
	}{
		{name: "plain hex", value: tokHex, wantKind: KindPlain, wantValue: tokHex},
		{name: "plain base64", value: tokB64, wantKind: KindPlain, wantValue: tokB64},
		{name: "zst prefix is plain", value: "zst_abc", wantKind: KindPlain,
			wantValue: "zst_abc"},
		{name: "sha256", value: "sha256:" + hexDigest(tokHex), wantKind: KindSHA256,
			wantValue: hexDigest(tokHex)},
		{name: "sha256 upper case", value: "sha256:" + strings.ToUpper(hexDigest(tokHex)),
			wantKind: KindSHA256, wantValue: strings.ToUpper(hexDigest(tokHex))},
		{name: "bcrypt prefixed", value: "bcrypt:" + hash, wantKind: KindBcrypt,
			wantValue: hash},
		{name: "bcrypt bare", value: hash, wantKind: KindBcrypt, wantValue: hash},
		{name: "bcrypt 2b", value: "$2b$" + hash[4:], wantKind: KindBcrypt,
			wantValue: "$2b$" + hash[4:]},
		{name: "bcrypt 2y", value: "$2y$" + hash[4:], wantKind: KindBcrypt,
			wantValue: "$2y$" + hash[4:]},
		{name: "empty", value: "", wantErr: "empty token"},
		{name: "sha256 short", value: "sha256:" + hexDigest(tokHex)[1:],
			wantErr: "64 hex"},
		{name: "sha256 not hex", value: "sha256:" + strings.Repeat("zz", 32),
			wantErr: "64 hex"},
		{name: "sha256 empty", value: "sha256:", wantErr: "64 hex"},
		{name: "bcrypt truncated", value: hash[:50], wantErr: "malformed"},
		{name: "bcrypt too long", value: hash + "x", wantErr: "malformed"},
		{name: "bcrypt prefixed not a hash", value: "bcrypt:" + tokHex,
			wantErr: "must start with"},
		{name: "bcrypt cost too high", value: "$2a$16$" + hash[7:], wantErr: "cost 16"},
		{name: "bcrypt cost not a number", value: "$2a$xx$" + hash[7:],
			wantErr: "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseToken(tt.value, "auth.tokens[3]")
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("got %+v, want error %q", got, tt.wantErr)
				}
				msg := err.Error()
				if !strings.Contains(msg, tt.wantErr) ||
					!strings.Contains(msg, "auth.tokens[3]") {
					t.Errorf("got error %q, want %q naming the source", msg, tt.wantErr)
				}
				if tt.value != "" && strings.Contains(msg, tt.value) {
					t.Errorf("error %q quotes the secret", msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			want := Token{Kind: tt.wantKind, Value: tt.wantValue, Source: "auth.tokens[3]"}
			if got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}

func TestNewRejectsMalformed(t *testing.T) {
	t.Parallel()
	hash := bcryptHash(t, tokHex)
	tests := []struct {
		name  string
		token Token
	}{
		{"empty plain", Token{Kind: KindPlain, Value: ""}},
		{"short digest", Token{Kind: KindSHA256, Value: tokHex[:62]}},
		{"plaintext as digest", Token{Kind: KindSHA256, Value: tokB64}},
		{"broken hash", Token{Kind: KindBcrypt, Value: hash[:40] + "!"}},
		{"plaintext as hash", Token{Kind: KindBcrypt, Value: tokHex}},
		{"unknown kind", Token{Kind: Kind(9), Value: tokHex}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok := tt.token
			tok.Source = "file:/run/secrets/zimmer"
			good := Token{Kind: KindPlain, Value: tokNew, Source: "good"}
			v, err := New([]Token{good, tok}, Options{})
			if err == nil {
				t.Fatalf("got verifier %v, want error", v)
			}
			if !strings.Contains(err.Error(), tok.Source) {
				t.Errorf("error %q does not name the source", err)
			}
			if tok.Value != "" && strings.Contains(err.Error(), tok.Value) {
				t.Errorf("error %q quotes the secret", err)
			}
		})
	}
}

func TestKindAndOutcomeStrings(t *testing.T) {
	t.Parallel()
	kinds := map[Kind]string{KindPlain: "plain", KindSHA256: "sha256",
		KindBcrypt: "bcrypt", Kind(7): "Kind(7)"}
	for k, want := range kinds {
		if got := k.String(); got != want {
			t.Errorf("Kind %d: got %q, want %q", int(k), got, want)
		}
	}
	outcomes := map[Outcome]string{OutcomeOK: "ok", OutcomeMissing: "missing",
		OutcomeInvalid: "invalid", OutcomeRateLimited: "rate_limited",
		OutcomeAborted: "aborted", Outcome(9): "Outcome(9)"}
	for o, want := range outcomes {
		if got := o.String(); got != want {
			t.Errorf("Outcome %d: got %q, want %q", int(o), got, want)
		}
	}
}
