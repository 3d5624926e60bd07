package sidecar

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// These tests play abusive clients against a running sidecar: clients that
// never finish their headers, that never read their answer, that send too
// much, that open too many connections or send too many requests. Each
// checks that the abuse costs the sidecar no more than its configured
// limit and that honest clients get through once the limit lets them.

// streamCap bounds what the abuse app streams, so that a sidecar that
// buffered without bound still lets the test end (and fail).
const streamCap = 1 << 30

// abuseApp is an app behind the sidecar built for these tests:
//
//	/stream   streams 32 KiB chunks until the write fails, the client
//	          goes away or streamCap bytes went out
//	/hold/... counts itself active, then answers once release gets a value
//	anything else answers 200 {"ok":true} and is recorded
type abuseApp struct {
	srv *httptest.Server

	streamed   atomic.Int64
	streamDone chan error // the stream handler's reason to stop

	release   chan struct{}
	active    atomic.Int64
	maxActive atomic.Int64

	mu   sync.Mutex
	seen []string
}

func newAbuseApp(t *testing.T) *abuseApp {
	t.Helper()
	a := &abuseApp{
		streamDone: make(chan error, 1),
		release:    make(chan struct{}),
	}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *abuseApp) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/stream":
		a.streamDone <- a.stream(w, r)
	case strings.HasPrefix(r.URL.Path, "/hold/"):
		a.hold(w, r)
	default:
		a.mu.Lock()
		a.seen = append(a.seen, r.URL.Path)
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}
}

// stream writes until it cannot and returns why it stopped; nil means it
// wrote streamCap bytes.
func (a *abuseApp) stream(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/octet-stream")
	chunk := make([]byte, 32<<10)
	rc := http.NewResponseController(w)
	for a.streamed.Load() < streamCap {
		if err := r.Context().Err(); err != nil {
			return err
		}
		n, err := w.Write(chunk)
		a.streamed.Add(int64(n))
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (a *abuseApp) hold(w http.ResponseWriter, r *http.Request) {
	n := a.active.Add(1)
	defer a.active.Add(-1)
	for {
		m := a.maxActive.Load()
		if n <= m || a.maxActive.CompareAndSwap(m, n) {
			break
		}
	}
	select {
	case <-a.release:
		_, _ = io.WriteString(w, "released")
	case <-r.Context().Done():
	}
}

func (a *abuseApp) paths() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...)
}

// startAbuse runs a sidecar in front of a fresh abuseApp.
func startAbuse(t *testing.T, p params) (*harness, *abuseApp) {
	t.Helper()
	app := newAbuseApp(t)
	p.appURL = app.srv.URL
	return startHarness(t, p), app
}

// oneShotClient sends each request on a connection of its own, so no idle
// keep-alive connection holds one of the sidecar's connection slots.
func oneShotClient() *http.Client {
	return &http.Client{
		Timeout:   waitLimit,
		Transport: &http.Transport{DisableKeepAlives: true},
	}
}

// dialRaw opens a TCP connection to addr, closed when t ends.
func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitClosedByPeer reads from c until the sidecar closes it, failing t if
// that takes longer than waitLimit.
func waitClosedByPeer(t *testing.T, what string, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(waitLimit))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: still open after %v", what, waitLimit)
	}
}

// TestSlowHeadersDoNotPinConnections: connections that send nothing, or
// their headers a byte at a time, hold connection slots only until the
// read-header timeout; then a normal request gets through.
func TestSlowHeadersDoNotPinConnections(t *testing.T) {
	const headerTimeout = 300 * time.Millisecond
	h, _ := startAbuse(t, params{env: []string{
		"ZIMMER_SIDECAR_LISTEN__MAX_CONNECTIONS=2",
		"ZIMMER_SIDECAR_LISTEN__READ_HEADER_TIMEOUT=" + headerTimeout.String(),
	}})
	addr := h.sc.PublicAddr()

	// 1. Take both slots: one connection silent, one trickling a header
	// one byte at a time until the sidecar hangs up.
	start := time.Now()
	silent := dialRaw(t, addr)
	trickle := dialRaw(t, addr)
	stop := make(chan struct{})
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		msg := "GET /x HTTP/1.1\r\nHost: sidecar\r\nX-Slow: " + strings.Repeat("a", 1<<20)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < len(msg); i++ {
			if _, err := trickle.Write([]byte{msg[i]}); err != nil {
				return // the sidecar hung up
			}
			select {
			case <-tick.C:
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-trickled })

	// 2. An honest request waits for a slot and then succeeds.
	resp, err := oneShotClient().Get(h.publicURL() + "/x")
	if err != nil {
		t.Fatalf("honest request: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("honest request: got status %d, want 200", resp.StatusCode)
	}

	// It was held until the timeout freed a slot. This bound is a floor,
	// not a speed: a slow machine only makes the wait longer.
	if waited := time.Since(start); waited < headerTimeout {
		t.Errorf("honest request answered after %v, before the read-header "+
			"timeout %v: the connection limit did not hold", waited, headerTimeout)
	}

	// 3. Both abusive connections were closed by the sidecar.
	waitClosedByPeer(t, "silent connection", silent)
	waitClosedByPeer(t, "trickling connection", trickle)
}

// TestClientThatNeverReads: a client asks for an endless stream and never
// reads it. TCP backpressure must stop the app's writes (the sidecar
// buffers a bounded amount), and once the client goes away the app sees
// the disconnect and the sidecar's goroutines return to where they were.
func TestClientThatNeverReads(t *testing.T) {
	h, app := startAbuse(t, params{})
	addr := h.sc.PublicAddr()

	// 1. Warm up the path to the app, then count goroutines and memory.
	resp, err := oneShotClient().Get(h.publicURL() + "/warm")
	if err != nil {
		t.Fatalf("warm-up: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	baseline := settledGoroutines()
	heapBefore := heapInUse()

	// 2. Ask for the stream and read nothing.
	c := dialRaw(t, addr)
	if _, err := io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: sidecar\r\n\r\n"); err != nil {
		t.Fatalf("send request: %v", err)
	}

	// 3. The app's writes stall on backpressure well short of the cap.
	waitStalled(t, app)
	t.Logf("the app's writes stalled after %d bytes", app.streamed.Load())
	if n := app.streamed.Load(); n >= streamCap/2 {
		t.Fatalf("the app wrote %d bytes to a client that reads nothing: "+
			"the sidecar buffers without bound", n)
	}
	const heapSlack = 64 << 20
	if grown := heapInUse() - heapBefore; grown > heapSlack {
		t.Errorf("heap grew by %d bytes while the client read nothing, want "+
			"under %d", grown, heapSlack)
	}
	if n := runtime.NumGoroutine(); n > baseline+16 {
		t.Errorf("got %d goroutines for one stalled stream, baseline %d", n, baseline)
	}

	// 4. The client leaves: the app's handler learns of it and stops.
	_ = c.Close()
	select {
	case err := <-app.streamDone:
		if err == nil {
			t.Fatal("the stream handler wrote everything: it never saw the disconnect")
		}
	case <-time.After(waitLimit):
		t.Fatal("the app's stream handler still runs after the client left")
	}

	// 5. Nothing of the stream lingers in the sidecar.
	eventually(t, "goroutines to return to the baseline", func() bool {
		return runtime.NumGoroutine() <= baseline
	})
}

// settledGoroutines returns the goroutine count once it stopped falling
// (connections of earlier requests finish closing in the background).
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for range 20 {
		time.Sleep(10 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m >= n {
			return max(n, m)
		}
		n = m
	}
	return n
}

// heapInUse returns the live heap after a collection.
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// waitStalled waits until the app's stream has written something and then
// made no progress for a while, failing t after waitLimit or once the
// stream ended.
func waitStalled(t *testing.T, app *abuseApp) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	last, still := int64(-1), 0
	for still < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("the stream never stalled (%d bytes so far)", app.streamed.Load())
		}
		select {
		case err := <-app.streamDone:
			t.Fatalf("the stream ended (%v) after %d bytes, want it blocked",
				err, app.streamed.Load())
		case <-time.After(10 * time.Millisecond):
		}
		n := app.streamed.Load()
		if n > 0 && n == last {
			still++
		} else {
			still = 0
		}
		last = n
	}
}

// TestOversizedRequests: a header block over max_header_bytes gets 431
// from the server itself; a body over max_body gets 413 JSON, whether its
// length is declared or not, and the app hears nothing of it.
func TestOversizedRequests(t *testing.T) {
	t.Parallel()
	h, app := startAbuse(t, params{env: []string{
		"ZIMMER_SIDECAR_LISTEN__MAX_HEADER_BYTES=4KiB",
		"ZIMMER_SIDECAR_LISTEN__MAX_BODY=1KiB",
	}})

	// 1. Headers: net/http allows 4 KiB of slack over the limit, so send
	// 16 KiB. A raw connection, since the server answers and hangs up
	// before it read the whole request.
	c := dialRaw(t, h.sc.PublicAddr())
	_ = c.SetDeadline(time.Now().Add(waitLimit))
	req := "GET /x HTTP/1.1\r\nHost: sidecar\r\nX-Big: " +
		strings.Repeat("h", 16<<10) + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("send 16 KiB header: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("16 KiB header: read answer: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("16 KiB header: got status %d, want 431", resp.StatusCode)
	}

	// 2. Bodies on a Zimmer endpoint and on a protected route.
	big := `{"user_automation_id": 7, "user_id": 70, "pad": "` +
		strings.Repeat("x", 4<<10) + `"}`
	// A chunked body on a proxied route streams to the app until it
	// passes the limit, so the app may see the start of that request
	// (cut off, never complete); every other case stays away from it.
	tests := []struct {
		name, path string
		chunked    bool
		appMaySee  bool
	}{
		{"provision, declared length", "/provision", false, false},
		{"provision, chunked", "/api/zimmer/provision", true, false},
		{"protected route, declared length", "/private/upload", false, false},
		{"protected route, chunked", "/private/upload", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := len(app.paths())
			defer func() {
				if got := app.paths()[seen:]; len(got) > 0 && !tt.appMaySee {
					t.Errorf("the app received %v for an oversized request", got)
				}
			}()
			var body io.Reader = strings.NewReader(big)
			if tt.chunked {
				body = io.MultiReader(body) // hides the length
			}
			req, err := http.NewRequest("POST", h.publicURL()+tt.path, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Zimmer-Service-Token", testToken)
			resp, err := h.client.Do(req)
			if err != nil {
				t.Fatalf("POST %s: %v", tt.path, err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Fatalf("got status %d, want 413", resp.StatusCode)
			}
			var got struct{ Detail string }
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatalf("413 body is not JSON: %v", err)
			}
			if !strings.Contains(strings.ToLower(got.Detail), "too large") {
				t.Errorf("got detail %q, want it to say too large", got.Detail)
			}
		})
	}
	for _, p := range app.paths() {
		if p == "/internal/tenants" {
			t.Error("the provision hook was called for an oversized request")
		}
	}
}

// TestConnectionsBeyondTheLimitWait: with max_connections 2, five
// concurrent clients are served at most two at a time, and every one of
// them is answered in the end.
func TestConnectionsBeyondTheLimitWait(t *testing.T) {
	t.Parallel()
	const limit, clients = 2, 5
	h, app := startAbuse(t, params{env: []string{
		fmt.Sprintf("ZIMMER_SIDECAR_LISTEN__MAX_CONNECTIONS=%d", limit),
	}})

	// 1. Every client sends its request at once.
	client := oneShotClient()
	statuses := make(chan int, clients)
	for i := range clients {
		go func() {
			resp, err := client.Get(fmt.Sprintf("%s/hold/%d", h.publicURL(), i))
			if err != nil {
				statuses <- 0
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}

	// 2. Two reach the app; the rest wait in the listen queue. Release
	// them one by one.
	eventually(t, "the first clients to reach the app", func() bool {
		return app.active.Load() == limit
	})
	for i := range clients {
		select {
		case app.release <- struct{}{}:
		case <-time.After(waitLimit):
			t.Fatalf("client %d never reached the app", i+1)
		}
	}

	// 3. All were answered, never more than the limit at once.
	for range clients {
		select {
		case s := <-statuses:
			if s != http.StatusOK {
				t.Errorf("got status %d (0: transport error), want 200", s)
			}
		case <-time.After(waitLimit):
			t.Fatal("a client got no answer")
		}
	}
	if got := app.maxActive.Load(); got > limit {
		t.Errorf("the app served %d requests at once, want at most %d", got, limit)
	}
	if got := h.do("GET", h.publicURL()+"/after", "", nil).status; got != http.StatusOK {
		t.Errorf("after the burst: got status %d, want 200", got)
	}
}

// TestRequestRateLimit: the per-client limit refuses a client past its
// burst with 429 JSON and Retry-After, whatever X-Forwarded-For says;
// /health has a bucket of its own; without the keys nothing is limited.
func TestRequestRateLimit(t *testing.T) {
	t.Parallel()

	t.Run("off by default", func(t *testing.T) {
		t.Parallel()
		h, _ := startAbuse(t, params{})
		for i := range 40 {
			if got := h.do("GET", h.publicURL()+"/x", "", nil).status; got != http.StatusOK {
				t.Fatalf("request %d: got status %d, want 200", i+1, got)
			}
		}
	})

	t.Run("limited", func(t *testing.T) {
		t.Parallel()
		h, app := startAbuse(t, params{env: []string{
			"ZIMMER_SIDECAR_LISTEN__REQUESTS_PER_SECOND=1",
			"ZIMMER_SIDECAR_LISTEN__BURST=2",
		}})

		// 1. The burst passes; a flood from one peer, each request
		// claiming another forwarded address, is refused. Twenty requests
		// at one a second of refill cannot all pass unless they take
		// eighteen seconds.
		var refusedOne answer
		statuses := make([]int, 0, 20)
		for i := range 20 {
			hdr := http.Header{"X-Forwarded-For": {fmt.Sprintf("203.0.113.%d", i+1)}}
			a := h.do("GET", h.publicURL()+"/x", "", hdr)
			statuses = append(statuses, a.status)
			if a.status == http.StatusTooManyRequests && refusedOne.status == 0 {
				refusedOne = a
			}
		}
		if statuses[0] != http.StatusOK || statuses[1] != http.StatusOK {
			t.Fatalf("got statuses %v, want the first two 200", statuses)
		}
		if refusedOne.status == 0 {
			t.Fatalf("got statuses %v, want some 429", statuses)
		}
		if got := len(app.paths()); got >= 20 {
			t.Errorf("the app received %d of 20 requests, want the refused ones kept away", got)
		}

		// 2. The refusal's shape.
		if got := refusedOne.header.Get("Retry-After"); got != "1" {
			t.Errorf("got Retry-After %q, want \"1\"", got)
		}
		if got := refusedOne.header.Get("Content-Type"); got != "application/json" {
			t.Errorf("got Content-Type %q, want application/json", got)
		}
		if refusedOne.body != "{\"detail\":\"Too many requests\"}\n" {
			t.Errorf("got body %q", refusedOne.body)
		}

		// 3. /health draws from its own bucket, full at this point, and
		// is limited too.
		if got := h.do("GET", h.publicURL()+"/health", "", nil).status; got != http.StatusOK {
			t.Errorf("/health after the flood: got status %d, want 200", got)
		}
		healthRefused := false
		for range 20 {
			if h.do("GET", h.publicURL()+"/api/zimmer/health", "", nil).status ==
				http.StatusTooManyRequests {
				healthRefused = true
				break
			}
		}
		if !healthRefused {
			t.Error("20 /health requests in a row were all answered, want a 429")
		}
	})
}

// TestRequestRateLimitFollowsAppliedConfig: the limiter takes its limits
// from the configuration in effect, so the configuration a reload applies
// turns it on, changes it or turns it off without a restart. Refusals are
// labelled rate_limited in the access log.
func TestRequestRateLimitFollowsAppliedConfig(t *testing.T) {
	t.Parallel()
	h, _ := startAbuse(t, params{})
	apply := func(rate, burst int) {
		next := *h.sc.applied()
		next.Listen.RequestsPerSecond, next.Listen.Burst = rate, burst
		h.sc.live.Store(&next)
	}
	count429 := func(n int) int {
		refused := 0
		for range n {
			if h.do("GET", h.publicURL()+"/x", "", nil).status == http.StatusTooManyRequests {
				refused++
			}
		}
		return refused
	}

	if got := count429(20); got != 0 {
		t.Fatalf("limit off: got %d of 20 refused, want 0", got)
	}
	apply(1, 1)
	if got := count429(20); got == 0 {
		t.Fatal("after applying 1/s burst 1: got no 429 in 20 requests")
	}
	apply(0, 0)
	if got := count429(20); got != 0 {
		t.Fatalf("limit off again: got %d of 20 refused, want 0", got)
	}

	labelled := false
	for _, rec := range h.logs.records(t) {
		if rec["msg"] == "request" && rec["status"] == float64(429) {
			if rec["endpoint"] != endpointRateLimited {
				t.Errorf("429 access line has endpoint %v, want %q",
					rec["endpoint"], endpointRateLimited)
			}
			labelled = true
		}
	}
	if !labelled {
		t.Error("no access-log line for a 429")
	}
}
