package auth

import (
	"net/http/httptest"
	"testing"
)

// BenchmarkCheckPlain measures a valid plaintext token among two (a
// rotation), through Check with a limiter.
func BenchmarkCheckPlain(b *testing.B) {
	tokens := []Token{
		{Kind: KindPlain, Value: tokNew},
		{Kind: KindPlain, Value: tokHex},
	}
	v := mustNew(b, tokens, Options{Limiter: NewLimiter(30, 0, nil)})
	r := newRequest("192.0.2.1", HeaderName, tokHex)
	b.ReportAllocs()
	for b.Loop() {
		if err := v.Check(r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckBcryptCached measures a valid bcrypt token after its first
// verification, the steady state of a caller configured with a hash.
func BenchmarkCheckBcryptCached(b *testing.B) {
	tokens := []Token{{Kind: KindBcrypt, Value: bcryptHash(b, tokHex)}}
	v := mustNew(b, tokens, Options{Limiter: NewLimiter(30, 0, nil)})
	r := newRequest("192.0.2.1", HeaderName, tokHex)
	if err := v.Check(r); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := v.Check(r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRequirePlain measures the middleware around a trivial handler.
func BenchmarkRequirePlain(b *testing.B) {
	v := mustNew(b, []Token{{Kind: KindPlain, Value: tokHex}}, Options{})
	var app seen
	h := v.Require(app.handler())
	b.ReportAllocs()
	for b.Loop() {
		// Require strips the header, so every round needs a fresh request.
		r := newRequest("192.0.2.1", HeaderName, tokHex)
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
}
