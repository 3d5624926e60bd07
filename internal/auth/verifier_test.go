package auth

import (
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	plain := []Token{{Kind: KindPlain, Value: tokHex}}
	digest := []Token{{Kind: KindSHA256, Value: hexDigest(tokB64)}}
	digestUpper := []Token{{Kind: KindSHA256, Value: strings.ToUpper(hexDigest(tokB64))}}
	hashed := []Token{{Kind: KindBcrypt, Value: bcryptHash(t, tokHex)}}
	rotation := []Token{
		{Kind: KindPlain, Value: tokHex, Source: "old"},
		{Kind: KindSHA256, Value: hexDigest(tokNew), Source: "new"},
	}
	mixed := []Token{
		{Kind: KindBcrypt, Value: bcryptHash(t, tokB64)},
		{Kind: KindPlain, Value: tokHex},
	}

	tests := []struct {
		name      string
		tokens    []Token
		headers   []string
		wantErr   error
		wantToken int
	}{
		{"plain ok", plain, []string{HeaderName, tokHex}, nil, 0},
		{"plain lower-case header name", plain,
			[]string{"x-zimmer-service-token", tokHex}, nil, 0},
		{"plain surrounding blanks", plain, []string{HeaderName, " " + tokHex + "\t"},
			nil, 0},
		{"plain missing", plain, nil, ErrMissingToken, -1},
		{"plain blank header", plain, []string{HeaderName, "  "}, ErrMissingToken, -1},
		{"plain last char differs", plain,
			[]string{HeaderName, tokHex[:63] + "b"}, ErrInvalidToken, -1},
		{"plain first char differs", plain,
			[]string{HeaderName, "4" + tokHex[1:]}, ErrInvalidToken, -1},
		{"plain prefix", plain, []string{HeaderName, tokHex[:32]}, ErrInvalidToken, -1},
		{"plain one char", plain, []string{HeaderName, tokHex[:1]}, ErrInvalidToken, -1},
		{"plain extended", plain, []string{HeaderName, tokHex + "0"}, ErrInvalidToken, -1},
		{"plain doubled", plain, []string{HeaderName, tokHex + tokHex},
			ErrInvalidToken, -1},
		{"plain upper case", plain, []string{HeaderName, strings.ToUpper(tokHex)},
			ErrInvalidToken, -1},
		{"plain with zst prefix", plain, []string{HeaderName, "zst_" + tokHex},
			ErrInvalidToken, -1},
		{"plain two headers", plain,
			[]string{HeaderName, tokHex, HeaderName, "other"}, ErrInvalidToken, -1},
		{"plain same header twice", plain,
			[]string{HeaderName, tokHex, HeaderName, tokHex}, ErrInvalidToken, -1},
		{"digest ok", digest, []string{HeaderName, tokB64}, nil, 0},
		{"digest upper case config", digestUpper, []string{HeaderName, tokB64}, nil, 0},
		{"digest presented is not the token", digest,
			[]string{HeaderName, hexDigest(tokB64)}, ErrInvalidToken, -1},
		{"digest wrong", digest, []string{HeaderName, tokB64[:42]}, ErrInvalidToken, -1},
		{"bcrypt ok", hashed, []string{HeaderName, tokHex}, nil, 0},
		{"bcrypt wrong", hashed, []string{HeaderName, tokNew}, ErrInvalidToken, -1},
		{"bcrypt hash presented", hashed,
			[]string{HeaderName, bcryptHash(t, tokHex)}, ErrInvalidToken, -1},
		{"bcrypt prefix", hashed, []string{HeaderName, tokHex[:63]}, ErrInvalidToken, -1},
		{"rotation old", rotation, []string{HeaderName, tokHex}, nil, 0},
		{"rotation new", rotation, []string{HeaderName, tokNew}, nil, 1},
		{"rotation neither", rotation, []string{HeaderName, tokB64}, ErrInvalidToken, -1},
		{"mixed bcrypt", mixed, []string{HeaderName, tokB64}, nil, 0},
		{"mixed plain", mixed, []string{HeaderName, tokHex}, nil, 1},
		{"empty list denies a token", nil, []string{HeaderName, tokHex},
			ErrInvalidToken, -1},
		{"empty list denies no token", nil, nil, ErrMissingToken, -1},
		{"empty list denies empty token", nil, []string{HeaderName, ""},
			ErrMissingToken, -1},
		{"bearer off", plain, []string{"Authorization", "Bearer " + tokHex},
			ErrMissingToken, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got []Result
			v := mustNew(t, tt.tokens, Options{OnResult: func(r Result) {
				got = append(got, r)
			}})
			err := v.Check(newRequest("192.0.2.1", tt.headers...))
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("got error %v, want %v", err, tt.wantErr)
			}
			if len(got) != 1 {
				t.Fatalf("got %d results, want 1", len(got))
			}
			if got[0].Token != tt.wantToken || got[0].ClientAddr != "192.0.2.1" {
				t.Errorf("got result %+v, want token %d from 192.0.2.1",
					got[0], tt.wantToken)
			}
		})
	}
}

func TestEveryDigestCompared(t *testing.T) {
	t.Parallel()
	tokens := []Token{
		{Kind: KindPlain, Value: tokHex},
		{Kind: KindSHA256, Value: hexDigest(tokB64)},
		{Kind: KindPlain, Value: "short"},
		{Kind: KindPlain, Value: strings.Repeat("x", 500)},
		{Kind: KindSHA256, Value: hexDigest(tokNew)},
	}
	presented := []string{tokHex, tokB64, "short", strings.Repeat("x", 500), tokNew,
		"wrong", tokHex[:63], strings.Repeat("y", 5000)}
	for _, p := range presented {
		v := mustNew(t, tokens, Options{})
		c := instrument(v)
		_ = v.Check(newRequest("192.0.2.1", HeaderName, p))
		if got, _ := c.snapshot(); got != len(tokens) {
			t.Errorf("token of length %d: got %d comparisons, want %d",
				len(p), got, len(tokens))
		}
	}
}

func TestEveryBcryptHashChecked(t *testing.T) {
	t.Parallel()
	tokens := []Token{
		{Kind: KindBcrypt, Value: bcryptHash(t, tokHex)},
		{Kind: KindBcrypt, Value: bcryptHash(t, tokNew)},
		{Kind: KindPlain, Value: tokB64},
	}
	v := mustNew(t, tokens, Options{})
	c := instrument(v)

	steps := []struct {
		name        string
		token       string
		wantErr     error
		wantBcrypt  int // cumulative
		wantCached  bool
		wantMatched int
	}{
		{"first hash matches, both checked", tokHex, nil, 2, false, 0},
		{"first hash cached", tokHex, nil, 2, true, 0},
		{"second hash matches, both checked", tokNew, nil, 4, false, 1},
		{"wrong checks both", "nope", ErrInvalidToken, 6, false, -1},
		{"wrong again is not cached", "nope", ErrInvalidToken, 8, false, -1},
		{"plain skips bcrypt", tokB64, nil, 8, false, 2},
	}
	for _, s := range steps {
		var res Result
		v.onResult = func(r Result) { res = r }
		err := v.Check(newRequest("192.0.2.1", HeaderName, s.token))
		if !errors.Is(err, s.wantErr) || (err == nil) != (s.wantErr == nil) {
			t.Fatalf("%s: got error %v, want %v", s.name, err, s.wantErr)
		}
		_, gotBcrypt := c.snapshot()
		if gotBcrypt != s.wantBcrypt {
			t.Errorf("%s: got %d bcrypt calls, want %d", s.name, gotBcrypt, s.wantBcrypt)
		}
		if res.Cached != s.wantCached || res.Token != s.wantMatched {
			t.Errorf("%s: got cached %v token %d, want %v %d", s.name,
				res.Cached, res.Token, s.wantCached, s.wantMatched)
		}
	}
}

func TestBcryptCacheDisabled(t *testing.T) {
	t.Parallel()
	tokens := []Token{{Kind: KindBcrypt, Value: bcryptHash(t, tokHex)}}
	v := mustNew(t, tokens, Options{BcryptCacheSize: -1})
	c := instrument(v)
	for range 3 {
		if err := v.Check(newRequest("192.0.2.1", HeaderName, tokHex)); err != nil {
			t.Fatalf("got error %v, want none", err)
		}
	}
	if _, got := c.snapshot(); got != 3 {
		t.Errorf("got %d bcrypt calls, want 3", got)
	}
}

func TestBcryptCacheKeyIsNotTheToken(t *testing.T) {
	t.Parallel()
	tokens := []Token{{Kind: KindBcrypt, Value: bcryptHash(t, tokHex)}}
	v := mustNew(t, tokens, Options{})
	if err := v.Check(newRequest("192.0.2.1", HeaderName, tokHex)); err != nil {
		t.Fatalf("got error %v, want none", err)
	}
	keys := v.cache.Keys()
	if len(keys) != 1 {
		t.Fatalf("got %d cache entries, want 1", len(keys))
	}
	// A plain SHA-256 key would let anyone reading memory test guesses
	// at SHA-256 speed instead of bcrypt speed.
	if hex.EncodeToString(keys[0][:]) == hexDigest(tokHex) {
		t.Errorf("cache key is the plain SHA-256 of the token")
	}
}

func TestBcryptLongTokenNotTruncated(t *testing.T) {
	t.Parallel()
	secret := strings.Repeat("a", 72)
	hash := bcryptHash(t, secret)
	longer := secret + "tail"

	// bcrypt itself reads only 72 bytes and would accept the longer token.
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(longer)); err != nil {
		t.Fatalf("control: raw bcrypt rejected the longer token: %v", err)
	}

	v := mustNew(t, []Token{{Kind: KindBcrypt, Value: hash}}, Options{})
	if err := v.Check(newRequest("192.0.2.1", HeaderName, secret)); err != nil {
		t.Errorf("72-byte token: got error %v, want none", err)
	}
	err := v.Check(newRequest("192.0.2.1", HeaderName, longer))
	if !errors.Is(err, ErrInvalidToken) {
		t.Errorf("76-byte token: got error %v, want ErrInvalidToken", err)
	}
}

func TestBcryptConcurrencyBounded(t *testing.T) {
	t.Parallel()
	tokens := []Token{{Kind: KindBcrypt, Value: bcryptHash(t, tokHex)}}
	var mu sync.Mutex
	outcomes := map[string]Outcome{}
	v := mustNew(t, tokens, Options{BcryptConcurrency: 2, OnResult: func(r Result) {
		mu.Lock()
		defer mu.Unlock()
		outcomes[r.ClientAddr] = r.Outcome
	}})

	// The fake bcrypt parks every caller until released.
	entered := make(chan struct{})
	release := make(chan struct{})
	var calls sync.WaitGroup
	v.bcryptCompare = func(hash, tok []byte) error {
		entered <- struct{}{}
		<-release
		return bcrypt.ErrMismatchedHashAndPassword
	}

	// Two wrong tokens occupy both slots.
	errs := make(chan error, 3)
	for i := range 2 {
		calls.Go(func() {
			errs <- v.Check(newRequest("192.0.2.1", HeaderName, "wrong"+string(rune('a'+i))))
		})
	}
	<-entered
	<-entered

	// A third, whose client has gone, cannot get a slot.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := newRequest("192.0.2.2", HeaderName, "wrongc").WithContext(ctx)
	if err := v.Check(r); !errors.Is(err, context.Canceled) {
		t.Errorf("third check: got error %v, want context.Canceled", err)
	}
	mu.Lock()
	got := outcomes["192.0.2.2"]
	mu.Unlock()
	if got != OutcomeAborted {
		t.Errorf("third check: got outcome %v, want aborted", got)
	}

	// Once released, the slots serve again.
	close(release)
	calls.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrInvalidToken) {
			t.Errorf("parked check: got error %v, want ErrInvalidToken", err)
		}
	}
	go func() { <-entered }()
	if err := v.Check(newRequest("192.0.2.1", HeaderName, "later")); !errors.Is(
		err, ErrInvalidToken) {
		t.Errorf("later check: got error %v, want ErrInvalidToken", err)
	}
}

func TestResultNeverHoldsToken(t *testing.T) {
	t.Parallel()
	var results []Result
	lim := NewLimiter(1, 0, nil)
	v := mustNew(t, []Token{{Kind: KindPlain, Value: tokHex, Source: "src"}},
		Options{AcceptBearer: true, Limiter: lim,
			OnResult: func(r Result) { results = append(results, r) }})
	for _, h := range [][]string{
		{HeaderName, tokHex},
		{"Authorization", "Bearer " + tokHex},
		{HeaderName, tokNew},
		{HeaderName, tokB64},
	} {
		_ = v.Check(newRequest("192.0.2.9", h...))
	}
	if len(results) != 4 {
		t.Fatalf("got %d results, want 4", len(results))
	}
	for _, r := range results {
		s := strings.ToLower(fmtResult(r))
		for _, secret := range []string{tokHex, tokNew, tokB64} {
			if strings.Contains(s, strings.ToLower(secret)) {
				t.Errorf("result %s holds a token", s)
			}
		}
	}
	if results[3].Outcome != OutcomeRateLimited {
		t.Errorf("got outcome %v after a failure at 1/min, want rate_limited",
			results[3].Outcome)
	}
}

func TestIsServiceToken(t *testing.T) {
	t.Parallel()
	lim := NewLimiter(1, 0, nil)
	var results int
	v := mustNew(t, []Token{
		{Kind: KindPlain, Value: tokHex},
		{Kind: KindSHA256, Value: hexDigest(tokB64)},
		{Kind: KindBcrypt, Value: bcryptHash(t, tokNew)},
	}, Options{Limiter: lim, OnResult: func(Result) { results++ }})
	c := instrument(v)

	tests := []struct {
		name  string
		value string
		want  bool
	}{
		{"plain", tokHex, true},
		{"digest", tokB64, true},
		{"bcrypt not yet verified", tokNew, false},
		{"digest itself", hexDigest(tokB64), false},
		{"prefix", tokHex[:63], false},
		{"padded", " " + tokHex, false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		if got := v.IsServiceToken(tt.value); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
	if _, n := c.snapshot(); n != 0 {
		t.Errorf("IsServiceToken ran bcrypt %d times, want 0", n)
	}
	if results != 0 || lim.Len() != 0 {
		t.Errorf("IsServiceToken reported %d results and fed the limiter %d "+
			"clients, want none", results, lim.Len())
	}

	// Once a request verified the bcrypt token, the cache recognises it.
	if err := v.Check(newRequest("192.0.2.1", HeaderName, tokNew)); err != nil {
		t.Fatalf("check: %v", err)
	}
	if !v.IsServiceToken(tokNew) {
		t.Errorf("verified bcrypt token: got false, want true")
	}
	var none *Verifier
	if none.IsServiceToken(tokHex) {
		t.Errorf("nil verifier: got true, want false")
	}
}
