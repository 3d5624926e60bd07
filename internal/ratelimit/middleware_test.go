package ratelimit

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
)

// served is a handler that counts the requests it gets.
type served struct{ n int }

func (s *served) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	s.n++
	w.WriteHeader(http.StatusNoContent)
}

// get sends one request from remote through h and returns the recording.
func get(h http.Handler, path, remote string, hdr http.Header) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.RemoteAddr = remote
	for k, v := range hdr {
		r.Header[k] = v
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestMiddlewareRefusal(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	var (
		limitedPath string
		limitedWait time.Duration
	)
	l := New(Options{
		Rate: 0.4, Burst: 1, Now: clock.Now, // a token every 2.5 s
		OnLimit: func(r *http.Request, d time.Duration) {
			limitedPath, limitedWait = r.URL.Path, d
		},
	})
	next := &served{}
	h := l.Middleware(next)

	if w := get(h, "/a", "192.0.2.1:1000", nil); w.Code != http.StatusNoContent {
		t.Fatalf("first request: got status %d, want 204", w.Code)
	}

	// The body is never read: a refused upload costs nothing.
	body := &countingReader{r: strings.NewReader(`{"big": "upload"}`)}
	r := httptest.NewRequest(http.MethodPost, "/b", body)
	r.RemoteAddr = "192.0.2.1:1001"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)

	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("got status %d, want 429", w.Code)
	}
	if next.n != 1 {
		t.Errorf("next served %d requests, want 1", next.n)
	}
	if body.n != 0 {
		t.Errorf("read %d body bytes of a refused request, want 0", body.n)
	}
	wantHeader := map[string]string{
		"Content-Type":  "application/json",
		"Cache-Control": "no-store",
		"Retry-After":   "3", // 2.5 s rounded up
	}
	for k, want := range wantHeader {
		if got := w.Header().Get(k); got != want {
			t.Errorf("got %s %q, want %q", k, got, want)
		}
	}
	var got map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatalf("body %q is not JSON: %v", w.Body.String(), err)
	}
	if len(got) != 1 || got["detail"] != DetailLimited {
		t.Errorf("got body %v, want only detail %q", got, DetailLimited)
	}
	if limitedPath != "/b" || limitedWait != 2500*time.Millisecond {
		t.Errorf("OnLimit got %q %v, want /b 2.5s", limitedPath, limitedWait)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestForwardingHeadersIgnored: the client writes forwarding headers, so
// changing them never earns a new bucket, and sharing them never shares
// one.
func TestForwardingHeadersIgnored(t *testing.T) {
	t.Parallel()
	l := New(Options{Rate: 1, Burst: 2, Now: newFakeClock().Now})
	next := &served{}
	h := l.Middleware(next)

	// One peer, a new forwarded address on every request: limited.
	codes := []int{}
	for i := range 5 {
		hdr := http.Header{
			"X-Forwarded-For": {"203.0.113." + string(rune('1'+i))},
			"X-Real-Ip":       {"203.0.113.99"},
			"Forwarded":       {"for=203.0.113.77"},
		}
		codes = append(codes, get(h, "/", "192.0.2.1:4000", hdr).Code)
	}
	want := []int{204, 204, 429, 429, 429}
	for i := range want {
		if codes[i] != want[i] {
			t.Fatalf("one peer, rotating X-Forwarded-For: got %v, want %v", codes, want)
		}
	}

	// Other peers claiming the same forwarded address: their own buckets.
	hdr := http.Header{"X-Forwarded-For": {"192.0.2.1"}}
	for _, peer := range []string{"192.0.2.2:1", "192.0.2.3:1", "[2001:db8::1]:1"} {
		if w := get(h, "/", peer, hdr); w.Code != http.StatusNoContent {
			t.Errorf("peer %s: got status %d, want 204", peer, w.Code)
		}
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	l := New(Options{
		Rate: 1, Burst: 1, Now: newFakeClock().Now,
		Classify: func(r *http.Request) (string, bool) {
			switch r.URL.Path {
			case "/free":
				return "", false
			case "/health":
				return "health", true
			}
			return "", true
		},
	})
	h := l.Middleware(&served{})
	const peer = "192.0.2.1:1"
	steps := []struct {
		path string
		want int
	}{
		{"/x", 204},
		{"/x", 429},      // the default bucket is spent
		{"/health", 204}, // health has a bucket of its own
		{"/health", 429},
		{"/free", 204}, // exempt paths take no token
		{"/free", 204},
		{"/x", 429}, // and gave none back
	}
	for i, s := range steps {
		if got := get(h, s.path, peer, nil).Code; got != s.want {
			t.Errorf("step %d %s: got status %d, want %d", i+1, s.path, got, s.want)
		}
	}
	if got := l.Len(); got != 2 {
		t.Errorf("got %d buckets, want 2 (exempt requests keep none)", got)
	}
}

func TestMiddlewareDisabledPassesEverything(t *testing.T) {
	t.Parallel()
	var nilLimiter *Limiter
	for _, l := range []*Limiter{nilLimiter, New(Options{})} {
		next := &served{}
		h := l.Middleware(next)
		for range 100 {
			if w := get(h, "/", "192.0.2.1:1", nil); w.Code != http.StatusNoContent {
				t.Fatalf("got status %d, want 204", w.Code)
			}
		}
		if next.n != 100 {
			t.Errorf("next served %d, want 100", next.n)
		}
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "1"},
		{time.Nanosecond, "1"},
		{time.Second, "1"},
		{time.Second + time.Nanosecond, "2"},
		{90 * time.Second, "90"},
		{1<<63 - 1, "9223372037"},
	}
	for _, tt := range tests {
		if got := httpx.RetryAfter(tt.in); got != tt.want {
			t.Errorf("retryAfterSeconds(%v): got %q, want %q", tt.in, got, tt.want)
		}
	}
}
