package auth

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func FuzzTokenFrom(f *testing.F) {
	f.Add(tokHex, "", "", false)
	f.Add("", "Bearer "+tokHex, "", true)
	f.Add("", "bearer\t"+tokB64+" ", "Basic abc", true)
	f.Add(" \t ", "Bearer", "", true)
	f.Add("", "Bearer x", "Bearer y", true)
	f.Add("", "Bearerx", "BEARER  z", true)
	f.Add(tokHex, "Bearer "+tokNew, "", true)
	f.Add("", "Bearer "+tokHex, "", false)
	f.Add("\x00", "Bearer \x00", "Be", true)
	f.Fuzz(func(t *testing.T, zimmer, authz, authz2 string, acceptBearer bool) {
		h := http.Header{}
		if zimmer != "" {
			h.Add(HeaderName, zimmer)
		}
		for _, a := range []string{authz, authz2} {
			if a != "" {
				h.Add("Authorization", a)
			}
		}

		tok, bearer, err := tokenFrom(h, acceptBearer)
		switch {
		case err == nil && tok == "":
			t.Fatalf("no error and no token")
		case err == nil && tok != trimOWS(tok):
			t.Fatalf("token %q keeps surrounding blanks", tok)
		case err == nil && !bearer && tok != trimOWS(zimmer):
			t.Fatalf("header token %q, header %q", tok, zimmer)
		case err == nil && bearer && !acceptBearer:
			t.Fatalf("bearer token accepted with AcceptBearer off")
		case err == nil && bearer &&
			!strings.Contains(authz, tok) && !strings.Contains(authz2, tok):
			t.Fatalf("bearer token %q not from Authorization", tok)
		case err != nil && !errors.Is(err, ErrMissingToken) &&
			!errors.Is(err, ErrInvalidToken):
			t.Fatalf("unexpected error %v", err)
		}
		if trimOWS(zimmer) != "" && (err != nil || bearer) {
			t.Fatalf("header %q present: got bearer %v error %v", zimmer, bearer, err)
		}
		if !acceptBearer && trimOWS(zimmer) == "" && !errors.Is(err, ErrMissingToken) {
			t.Fatalf("no header and Bearer off: got error %v, want missing", err)
		}

		// Whatever was presented, nothing of it survives stripping.
		stripToken(h, acceptBearer)
		if len(h.Values(HeaderName)) != 0 {
			t.Fatalf("header survived stripping")
		}
		for _, v := range h.Values("Authorization") {
			if _, ok := parseBearer(v); ok && acceptBearer {
				t.Fatalf("bearer credential %q survived stripping", v)
			}
		}

		// On an open route only a Bearer service token goes; the rest of
		// Authorization stays, in order.
		r := &http.Request{Header: http.Header{}}
		var want []string
		for _, a := range []string{authz, authz2} {
			r.Header.Add("Authorization", a)
			if cred, ok := parseBearer(a); !ok || cred != tokHex {
				want = append(want, a)
			}
		}
		stripVerifier.StripServiceBearer(r)
		if got := r.Header.Values("Authorization"); !equalStrings(got, want) {
			t.Fatalf("after StripServiceBearer got %q, want %q", got, want)
		}
	})
}

// stripVerifier accepts tokHex, for FuzzTokenFrom.
var stripVerifier, _ = New([]Token{{Kind: KindPlain, Value: tokHex}}, Options{})

func FuzzParseBearer(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer", "BEARER\tx", " Bearer  y ",
		"Basic abc", "Bearerabc", "", "Bear", "Bearer \x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		cred, ok := parseBearer(v)
		if !ok {
			if cred != "" {
				t.Fatalf("not bearer but credential %q", cred)
			}
			return
		}
		tv := trimOWS(v)
		if !strings.EqualFold(tv[:6], "bearer") {
			t.Fatalf("%q taken for a Bearer credential", v)
		}
		if cred != trimOWS(cred) || !strings.HasSuffix(tv, cred) {
			t.Fatalf("credential %q is not the trimmed rest of %q", cred, v)
		}
	})
}

func FuzzParseToken(f *testing.F) {
	f.Add(tokHex)
	f.Add("sha256:" + hexDigest(tokHex))
	f.Add("sha256:" + strings.Repeat("G", 64))
	f.Add("bcrypt:" + bcryptHash(f, tokHex))
	f.Add(bcryptHash(f, tokB64))
	f.Add("$2a$99$" + strings.Repeat(".", 53))
	f.Add("$2y$04$short")
	f.Add("")
	f.Fuzz(func(t *testing.T, value string) {
		const source = "auth.tokens[0]"
		tok, err := ParseToken(value, source)
		if err != nil {
			if value != "" && strings.Contains(err.Error(), value) {
				t.Fatalf("error %q quotes the value", err)
			}
			if !strings.Contains(err.Error(), source) {
				t.Fatalf("error %q does not name the source", err)
			}
			return
		}

		// Whatever ParseToken accepts, New accepts; a plaintext token
		// verifies against itself.
		v, err := New([]Token{tok}, Options{})
		if err != nil {
			t.Fatalf("ParseToken accepted what New refuses: %v", err)
		}
		if tok.Kind == KindPlain {
			if _, _, err := v.verify(context.Background(), value); err != nil {
				t.Fatalf("plaintext token does not verify: %v", err)
			}
		}
	})
}

func FuzzVerify(f *testing.F) {
	tokens := []Token{
		{Kind: KindPlain, Value: tokHex},
		{Kind: KindSHA256, Value: hexDigest(tokB64)},
		{Kind: KindBcrypt, Value: bcryptHash(f, tokNew)},
	}
	v := mustNew(f, tokens, Options{})
	for _, s := range []string{tokHex, tokB64, tokNew, "", tokHex[:63], tokNew + "0",
		hexDigest(tokB64), strings.Repeat("a", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, presented string) {
		idx, _, err := v.verify(context.Background(), presented)
		want := -1
		switch presented {
		case tokHex:
			want = 0
		case tokB64:
			want = 1
		case tokNew:
			want = 2
		}
		if idx != want || (err == nil) != (want >= 0) {
			t.Fatalf("got token %d error %v, want token %d", idx, err, want)
		}
		// verify cached a valid bcrypt token, so the cheap check agrees.
		if got := v.IsServiceToken(presented); got != (want >= 0) {
			t.Fatalf("IsServiceToken got %v, want %v", got, want >= 0)
		}
	})
}
