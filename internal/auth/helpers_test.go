package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/testclock"
)

// Realistic tokens: 64 lowercase hex from one platform generator, 43
// URL-safe base64 from the others.
const (
	tokHex = "3f1c9a7be02d4c58a61e9b0f7d2c3e4a5b6c7d8e9f00112233445566778899aa"
	tokB64 = "Zk9xR2wtY0hfN2JQdk1uUXNXeVRyOEVqS2FsZFVvSg_"
	tokNew = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"
)

// hexDigest returns the hex SHA-256 of s.
func hexDigest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// bcryptHashes memoises hashes: even at the minimum cost they add up.
var bcryptHashes sync.Map

// bcryptHash returns a minimum-cost bcrypt hash of s.
func bcryptHash(tb testing.TB, s string) string {
	tb.Helper()
	if h, ok := bcryptHashes.Load(s); ok {
		return h.(string)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(s), bcrypt.MinCost)
	if err != nil {
		tb.Fatalf("bcrypt: %v", err)
	}
	bcryptHashes.Store(s, string(h))
	return string(h)
}

// mustNew builds a Verifier or fails the test.
func mustNew(tb testing.TB, tokens []Token, opts Options) *Verifier {
	tb.Helper()
	v, err := New(tokens, opts)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return v
}

// newRequest builds a request from peer addr carrying the given headers
// (name, value pairs; a name may repeat).
func newRequest(addr string, kv ...string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/provision", nil)
	r.RemoteAddr = addr + ":40000"
	for i := 0; i+1 < len(kv); i += 2 {
		r.Header.Add(kv[i], kv[i+1])
	}
	return r
}

// counters counts calls to the Verifier's comparison hooks.
type counters struct {
	mu     sync.Mutex
	digest int
	bcrypt int
}

// instrument makes v count its digest and bcrypt comparisons.
func instrument(v *Verifier) *counters {
	c := &counters{}
	compare, bcryptCompare := v.compare, v.bcryptCompare
	v.compare = func(x, y [sha256.Size]byte) int {
		c.mu.Lock()
		c.digest++
		c.mu.Unlock()
		return compare(x, y)
	}
	v.bcryptCompare = func(hash, tok []byte) error {
		c.mu.Lock()
		c.bcrypt++
		c.mu.Unlock()
		return bcryptCompare(hash, tok)
	}
	return c
}

// snapshot returns the counts so far.
func (c *counters) snapshot() (digest, bcrypt int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.digest, c.bcrypt
}

// fakeClock is the tests' settable clock.
type fakeClock = testclock.Clock

func newFakeClock() *fakeClock {
	return testclock.New(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
}

// fmtResult renders every field of r.
func fmtResult(r Result) string {
	return fmt.Sprintf("%+v %#v", r, r)
}
