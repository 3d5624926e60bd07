package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/crypto/bcrypt"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
)

// Sentinel errors of Check. A rate-limited request fails with a
// *RateLimitError, which matches ErrRateLimited under errors.Is.
var (
	ErrMissingToken = errors.New("missing service token")
	ErrInvalidToken = errors.New("invalid service token")
	ErrRateLimited  = errors.New("too many failed authentication attempts")
)

// RateLimitError refuses a request from a client that has spent its failed
// attempts and whose token passed none of the cheap checks (digests and
// the bcrypt cache); no bcrypt work was done for it.
type RateLimitError struct {
	// RetryAfter is how long until the client may try again.
	RetryAfter time.Duration
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("%v: retry after %v", ErrRateLimited, e.RetryAfter)
}

// Unwrap returns ErrRateLimited.
func (e *RateLimitError) Unwrap() error { return ErrRateLimited }

// DefaultBcryptCacheSize is the number of valid bcrypt-checked tokens
// remembered when Options.BcryptCacheSize is zero.
const DefaultBcryptCacheSize = 1024

// Options tune a Verifier. The zero value is valid: the header only, the
// default cache, no rate limit, no hook.
type Options struct {
	// AcceptBearer also accepts the token as "Authorization: Bearer
	// <token>" when X-Zimmer-Service-Token is absent. Off by default: the
	// platform never sends it.
	AcceptBearer bool

	// BcryptCacheSize bounds the cache of presented tokens that passed a
	// bcrypt check, so a valid caller pays bcrypt once. Zero means
	// DefaultBcryptCacheSize; a negative value disables the cache. Entries
	// are keyed by a keyed SHA-256 (HMAC with a per-Verifier random key)
	// of the presented token, never by the token itself.
	BcryptCacheSize int

	// BcryptConcurrency bounds the bcrypt comparisons running at once
	// across all requests; further requests wait (until their context
	// ends). Zero means half the CPUs, at least one.
	BcryptConcurrency int

	// Limiter, when not nil, is told of every failure; a client with too
	// many failed attempts gets only the cheap checks (digests and the
	// bcrypt cache) and is refused when they fail. Nil limits nothing.
	// Share one Limiter between the Verifiers of successive reloads.
	Limiter *Limiter

	// OnResult, when not nil, is called once per decision, synchronously
	// and from many goroutines at once; it must be quick. The Result never
	// holds the token.
	OnResult func(Result)
}

// Verifier decides whether a request carries a valid service token. It is
// safe for concurrent use and immutable once built, apart from its bcrypt
// cache.
type Verifier struct {
	digests      []digestToken
	hashes       []bcryptToken
	cache        *lru.Cache[[sha256.Size]byte, int] // nil: no caching
	cacheSecret  []byte                             // HMAC key of cache entries
	slots        chan struct{}                      // bcrypt semaphore
	acceptBearer bool
	limiter      *Limiter
	onResult     func(Result)

	// compare and bcryptCompare are compareDigests and
	// bcrypt.CompareHashAndPassword; tests replace them to count calls.
	// compare takes the digests by value so that they stay on the stack
	// despite the indirect call.
	compare       func(x, y [sha256.Size]byte) int
	bcryptCompare func(hash, token []byte) error
}

// digestToken is a plaintext or SHA-256 token reduced to its digest.
type digestToken struct {
	sum   [sha256.Size]byte
	index int // position in the list given to New
}

// bcryptToken is a bcrypt hash.
type bcryptToken struct {
	hash  []byte
	index int
}

// New builds a Verifier accepting any of tokens. It fails closed: an empty
// list is valid and denies every request. A malformed token is an error
// that names its Source, never its Value.
func New(tokens []Token, opts Options) (*Verifier, error) {
	v := &Verifier{
		acceptBearer:  opts.AcceptBearer,
		limiter:       opts.Limiter,
		onResult:      opts.OnResult,
		compare:       compareDigests,
		bcryptCompare: bcrypt.CompareHashAndPassword,
	}

	// Reduce every plaintext and digest token to a digest; keep hashes.
	for i, t := range tokens {
		if err := t.validate(); err != nil {
			return nil, fmt.Errorf("new verifier: %w", err)
		}
		switch t.Kind {
		case KindPlain:
			v.digests = append(v.digests,
				digestToken{sum: sha256.Sum256([]byte(t.Value)), index: i})
		case KindSHA256:
			sum, _ := decodeDigest(t.Value) // validated above
			v.digests = append(v.digests, digestToken{sum: sum, index: i})
		case KindBcrypt:
			v.hashes = append(v.hashes,
				bcryptToken{hash: []byte(t.Value), index: i})
		}
	}
	if len(v.hashes) == 0 {
		return v, nil
	}

	// Only bcrypt needs the cache and the semaphore.
	if err := v.initBcrypt(opts); err != nil {
		return nil, fmt.Errorf("new verifier: %w", err)
	}
	return v, nil
}

// initBcrypt sets up the bcrypt cache and semaphore.
func (v *Verifier) initBcrypt(opts Options) error {
	n := opts.BcryptConcurrency
	if n <= 0 {
		n = max(1, runtime.GOMAXPROCS(0)/2)
	}
	v.slots = make(chan struct{}, n)

	size := opts.BcryptCacheSize
	if size == 0 {
		size = DefaultBcryptCacheSize
	}
	if size < 0 {
		return nil
	}
	cache, err := lru.New[[sha256.Size]byte, int](size)
	if err != nil {
		return fmt.Errorf("bcrypt cache: %w", err)
	}
	v.cache = cache
	v.cacheSecret = make([]byte, 32)
	if _, err := rand.Read(v.cacheSecret); err != nil {
		return fmt.Errorf("bcrypt cache key: %w", err)
	}
	return nil
}

// Check decides r without answering it: nil when r carries a valid token,
// else ErrMissingToken, ErrInvalidToken, a *RateLimitError (a limited
// client whose token the cheap checks did not accept, see checkLimited),
// or the request context's error when it ended while waiting for bcrypt. It
// consults and feeds the Limiter and calls OnResult like Require does, but
// it neither reads the body nor changes r; the caller must remove the token
// headers before forwarding r (Require does).
func (v *Verifier) Check(r *http.Request) error {
	res, err := v.check(r)
	v.report(res)
	return err
}

// check is Check without the hook.
func (v *Verifier) check(r *http.Request) (Result, error) {
	res := Result{ClientAddr: httpx.ClientAddr(r), Token: -1}
	wait, allowed := v.limiter.Allow(res.ClientAddr)

	// Find the token. Several candidates are a failure, none is not.
	tok, bearer, err := tokenFrom(r.Header, v.acceptBearer)
	res.Bearer = bearer
	if !allowed {
		return v.checkLimited(res, tok, err, wait)
	}
	if errors.Is(err, ErrMissingToken) {
		res.Outcome = OutcomeMissing
		return res, err
	}
	if err == nil {
		res.Token, res.Cached, err = v.verify(r.Context(), tok)
	}

	// Only a wrong token counts against the client.
	switch {
	case err == nil:
		res.Outcome = OutcomeOK
	case errors.Is(err, ErrInvalidToken):
		v.limiter.Fail(res.ClientAddr)
		res.Outcome = OutcomeInvalid
	default:
		res.Outcome = OutcomeAborted
	}
	return res, err
}

// checkLimited decides for a client that has spent its failed attempts.
// Only the cheap checks run (every digest in constant time, then the
// bcrypt cache): a token they accept passes, anything else is refused
// with a *RateLimitError and not counted again. No bcrypt work is done
// for a limited client, which is what the limit protects.
//
// The trade-off: behind an ingress or a mesh every client shares one peer
// address, so a stranger's wrong guesses limit the platform too. Letting
// valid cheap tokens through keeps the platform served; a bcrypt token
// that is not cached yet (the first call after a start or a reload) is
// refused until the limit clears, so deployments behind a shared address
// should configure plaintext or sha256 tokens.
func (v *Verifier) checkLimited(
	res Result,
	tok string,
	tokErr error,
	wait time.Duration,
) (Result, error) {
	if tokErr == nil {
		if idx, cached, ok := v.verifyCheap(tok); ok {
			res.Outcome, res.Token, res.Cached = OutcomeOK, idx, cached
			return res, nil
		}
	}
	res.Outcome, res.RetryAfter = OutcomeRateLimited, wait
	return res, &RateLimitError{RetryAfter: wait}
}

// IsServiceToken reports whether value is one of the configured service
// tokens, by the cheap checks only: the constant-time comparison with
// every plaintext and digest token, then the bcrypt cache. A bcrypt token
// is therefore recognised only once a request has verified it (and never
// with the cache disabled). It neither consults nor feeds the Limiter and
// calls no hook. A nil Verifier and an empty value report false.
func (v *Verifier) IsServiceToken(value string) bool {
	if v == nil || value == "" {
		return false
	}
	_, _, ok := v.verifyCheap(value)
	return ok
}

// report hands res to the hook.
func (v *Verifier) report(res Result) {
	if v.onResult != nil {
		v.onResult(res)
	}
}

// verify checks tok against every configured token and returns the index
// of the match: first the cheap checks (verifyCheap), then, only when they
// failed, bcrypt.
func (v *Verifier) verify(ctx context.Context, tok string) (int, bool, error) {
	if idx, cached, ok := v.verifyCheap(tok); ok {
		return idx, cached, nil
	}
	if !v.bcryptable(tok) {
		return -1, false, ErrInvalidToken
	}
	return v.verifyBcrypt(ctx, tok)
}

// verifyCheap runs the checks that cost no bcrypt work. The SHA-256 of
// tok is compared with the digest of every plaintext and digest token, all
// of them, whatever matched: the time taken depends on neither the
// position of the match nor the length of the common prefix. When nothing
// matched, the bcrypt cache of verified tokens is consulted. It reports
// the index of the match and whether it came from the cache.
func (v *Verifier) verifyCheap(tok string) (idx int, cached, ok bool) {
	// A token of usual length is hashed from a stack buffer.
	var buf [128]byte
	sum := sha256.Sum256(append(buf[:0], tok...))
	match, idx := 0, -1
	for _, d := range v.digests {
		eq := v.compare(sum, d.sum)
		idx = subtle.ConstantTimeSelect(eq, d.index, idx)
		match |= eq
	}
	if match == 1 {
		return idx, false, true
	}
	if !v.bcryptable(tok) {
		return -1, false, false
	}
	if idx, ok := v.cached(v.cacheKey(tok)); ok {
		return idx, true, true
	}
	return -1, false, false
}

// compareDigests is 1 when x and y are equal, else 0, in time that does
// not depend on their contents.
func compareDigests(x, y [sha256.Size]byte) int {
	return subtle.ConstantTimeCompare(x[:], y[:])
}

// bcryptable reports whether tok may be checked against the bcrypt
// hashes: there are some, and bcrypt would not silently truncate tok into
// a match (over maxBcryptInput bytes, or a NUL byte).
func (v *Verifier) bcryptable(tok string) bool {
	return len(v.hashes) > 0 && len(tok) <= maxBcryptInput &&
		strings.IndexByte(tok, 0) < 0
}

// verifyBcrypt checks tok, which verifyCheap did not accept, against
// every bcrypt hash without stopping at a match. It reports whether the
// answer came from the cache (filled meanwhile by a concurrent request).
func (v *Verifier) verifyBcrypt(ctx context.Context, tok string) (int, bool, error) {
	// Wait for a slot, then look again: a concurrent request with the
	// same token may have filled the cache meanwhile.
	select {
	case v.slots <- struct{}{}:
	case <-ctx.Done():
		return -1, false, fmt.Errorf("wait for bcrypt: %w", ctx.Err())
	}
	defer func() { <-v.slots }()
	key := v.cacheKey(tok)
	if idx, ok := v.cached(key); ok {
		return idx, true, nil
	}

	idx := -1
	for _, h := range v.hashes {
		if v.bcryptCompare(h.hash, []byte(tok)) == nil {
			idx = h.index
		}
	}
	if idx < 0 {
		return -1, false, ErrInvalidToken
	}
	if v.cache != nil {
		v.cache.Add(key, idx)
	}
	return idx, false, nil
}

// cacheKey is the HMAC-SHA-256 of tok under the Verifier's random key.
// Keying it keeps a fast unsalted digest of a bcrypt-protected token out of
// memory.
func (v *Verifier) cacheKey(tok string) [sha256.Size]byte {
	var key [sha256.Size]byte
	if v.cache == nil {
		return key
	}
	mac := hmac.New(sha256.New, v.cacheSecret)
	mac.Write([]byte(tok))
	mac.Sum(key[:0])
	return key
}

// cached looks key up in the cache, if there is one.
func (v *Verifier) cached(key [sha256.Size]byte) (int, bool) {
	if v.cache == nil {
		return 0, false
	}
	return v.cache.Get(key)
}
