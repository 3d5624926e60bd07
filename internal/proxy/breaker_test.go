package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/httpx"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/zimmer"
)

// fakeClock is an injected clock for Retry-After values.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// newBreaker builds a breaker or fails the test.
func newBreaker(t *testing.T, o BreakerOptions) *Breaker {
	t.Helper()
	b, err := NewBreaker(o)
	if err != nil {
		t.Fatalf("NewBreaker: %v", err)
	}
	return b
}

// sequenceApp answers the n-th request (from 0) with codes[n], 200 past
// the end, and counts requests.
type sequenceApp struct {
	codes []int
	hits  atomic.Int32
}

func (a *sequenceApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := int(a.hits.Add(1)) - 1
	code := http.StatusOK
	if n < len(a.codes) {
		code = a.codes[n]
	}
	w.WriteHeader(code)
}

// repeat returns n copies of code.
func repeat(code, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = code
	}
	return out
}

// alternate returns n codes, every second one (from the second) failing.
func alternate(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = http.StatusOK
		if i%2 == 1 {
			out[i] = http.StatusServiceUnavailable
		}
	}
	return out
}

func TestBreakerTrips(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		opts  BreakerOptions
		codes []int // what the app answers, one call each
		// wantOpenAfter is the number of calls after which the breaker is
		// open; 0: it never opens.
		wantOpenAfter int
	}{
		{"consecutive 5xx", BreakerOptions{ConsecutiveFailures: 3},
			repeat(http.StatusBadGateway, 3), 3},
		{"a success resets the run", BreakerOptions{ConsecutiveFailures: 3},
			[]int{503, 503, 200, 503, 503, 503}, 6},
		{"4xx is a success", BreakerOptions{ConsecutiveFailures: 2},
			repeat(http.StatusNotFound, 6), 0},
		{"ratio after min requests", BreakerOptions{FailureRatio: 0.5,
			MinRequests: 10, Interval: time.Hour}, alternate(10), 10},
		{"ratio below", BreakerOptions{FailureRatio: 0.6, MinRequests: 10,
			Interval: time.Hour}, alternate(12), 0},
		{"ratio waits for min requests", BreakerOptions{FailureRatio: 0.5,
			MinRequests: 10}, repeat(503, 9), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.opts.OpenFor = time.Hour
			b := newBreaker(t, tt.opts)
			app := &sequenceApp{codes: tt.codes}
			p, front := newFront(t, newApp(t, app), Options{Breaker: b, Passthrough: true})
			for i := range tt.codes {
				if got := p.BreakerState(); got != BreakerClosed {
					t.Fatalf("before call %d: state %s, want closed", i+1, got)
				}
				code, _, _ := do(t, newReq(t, "GET", front.URL+"/x", nil))
				if code != tt.codes[i] {
					t.Fatalf("call %d: got %d, want the app's %d", i+1, code, tt.codes[i])
				}
				if i+1 == tt.wantOpenAfter {
					break
				}
			}
			want := BreakerClosed
			if tt.wantOpenAfter > 0 {
				want = BreakerOpen
			}
			if got := p.BreakerState(); got != want {
				t.Errorf("got state %s, want %s", got, want)
			}
		})
	}
}

func TestBreakerOpenAnswersWithoutApp(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	b := newBreaker(t, BreakerOptions{ConsecutiveFailures: 2,
		OpenFor: 30 * time.Second, Now: clock.Now})
	app := &sequenceApp{codes: repeat(http.StatusServiceUnavailable, 2)}
	sink := &errorSink{}
	_, front := newFront(t, newApp(t, app),
		Options{Breaker: b, OnError: sink.on, Passthrough: true})
	for range 2 {
		do(t, newReq(t, "GET", front.URL+"/x", nil))
	}

	tests := []struct {
		name    string
		advance time.Duration
		want    string
	}{
		{"just opened", 0, "30"},
		{"rounds up", 12300 * time.Millisecond, "18"},
		{"last second", 17600 * time.Millisecond, "1"},
	}
	for _, tt := range tests { // in order: the clock moves on
		clock.advance(tt.advance)
		code, body, h := do(t, newReq(t, "POST", front.URL+"/x", nil))
		if code != http.StatusServiceUnavailable {
			t.Fatalf("%s: got %d %s, want 503", tt.name, code, body)
		}
		if got := h.Get("Retry-After"); got != tt.want {
			t.Errorf("%s: Retry-After %q, want %q", tt.name, got, tt.want)
		}
		var ans struct{ Detail string }
		if err := json.Unmarshal([]byte(body), &ans); err != nil ||
			ans.Detail != msgCircuitOpen {
			t.Errorf("%s: body %s, want detail %q", tt.name, body, msgCircuitOpen)
		}
	}
	if got := app.hits.Load(); got != 2 {
		t.Errorf("the app saw %d requests, want 2 (none while open)", got)
	}
	if got := len(sink.get()); got != 0 {
		t.Errorf("OnError got %d causes for refused calls, want 0", got)
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		wait time.Duration
		want string
	}{
		{-time.Second, "1"},
		{0, "1"},
		{time.Millisecond, "1"},
		{time.Second, "1"},
		{1001 * time.Millisecond, "2"},
		{10 * time.Second, "10"},
	}
	for _, tt := range tests {
		if got := httpx.RetryAfter(tt.wait); got != tt.want {
			t.Errorf("RetryAfterSeconds(%s): got %q, want %q", tt.wait, got, tt.want)
		}
	}
}

// waitState polls b until it reports want, failing after a bound. The open
// time runs on gobreaker's real clock, which cannot be injected.
func waitState(t *testing.T, b *Breaker, want BreakerState) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for b.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("breaker state %s, want %s", b.State(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// changeLog records state changes; its hook reads the breaker's state,
// which would deadlock if it ran under the breaker's lock.
type changeLog struct {
	mu      sync.Mutex
	b       *Breaker
	changes []string
}

func (l *changeLog) on(from, to BreakerState) {
	_ = l.b.State()
	l.mu.Lock()
	l.changes = append(l.changes, string(from)+">"+string(to))
	l.mu.Unlock()
}

func (l *changeLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.changes...)
}

func TestBreakerHalfOpen(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		probe     int // the app's answer to the probe
		wantState BreakerState
		wantLog   []string
	}{
		{"probe succeeds", http.StatusNoContent, BreakerClosed,
			[]string{"closed>open", "open>half-open", "half-open>closed"}},
		{"probe fails", http.StatusServiceUnavailable, BreakerOpen,
			[]string{"closed>open", "open>half-open", "half-open>open"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			log := &changeLog{}
			b := newBreaker(t, BreakerOptions{ConsecutiveFailures: 2,
				OpenFor: 20 * time.Millisecond, OnStateChange: log.on})
			log.b = b
			release := make(chan struct{})
			var hits atomic.Int32
			app := newApp(t, http.HandlerFunc(func(w http.ResponseWriter,
				r *http.Request) {
				if hits.Add(1) <= 2 {
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				<-release // the probe waits until the test lets it go
				w.WriteHeader(tt.probe)
			}))
			_, front := newFront(t, app, Options{Breaker: b, Passthrough: true})
			for range 2 {
				do(t, newReq(t, "GET", front.URL+"/x", nil))
			}
			waitState(t, b, BreakerHalfOpen)

			// One probe goes out; while it is out, other calls are refused.
			probe := make(chan int, 1)
			go func() {
				resp, err := http.Get(front.URL + "/probe")
				if err != nil {
					probe <- 0
					return
				}
				resp.Body.Close()
				probe <- resp.StatusCode
			}()
			for hits.Load() < 3 {
				time.Sleep(time.Millisecond)
			}
			code, _, h := do(t, newReq(t, "GET", front.URL+"/x", nil))
			if code != http.StatusServiceUnavailable || h.Get("Retry-After") != "1" {
				t.Errorf("call beside the probe: got %d Retry-After %q, want 503 and 1",
					code, h.Get("Retry-After"))
			}
			close(release)
			if got := <-probe; got != tt.probe {
				t.Errorf("probe: got %d, want the app's %d", got, tt.probe)
			}
			if got := b.State(); got != tt.wantState && !(tt.wantState == BreakerOpen &&
				got == BreakerHalfOpen) { // open for 20ms only: may be half-open again
				t.Errorf("after the probe: state %s, want %s", got, tt.wantState)
			}
			if got := log.get(); len(got) < 3 || !equalStrings(got[:3], tt.wantLog) {
				t.Errorf("state changes %v, want %v first", got, tt.wantLog)
			}
			if got := hits.Load(); got != 3 {
				t.Errorf("the app saw %d requests, want 3", got)
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// countingLedger accepts every consume and refund and counts them.
type countingLedger struct {
	consumes, refunds atomic.Int32
}

func (c *countingLedger) ledger() *fakeLedger {
	return &fakeLedger{
		consume: func(context.Context, metering.ConsumeRequest) (metering.ConsumeResult, error) {
			c.consumes.Add(1)
			return metering.ConsumeResult{Accepted: true, RemainingDemo: 5}, nil
		},
		refund: func(context.Context, metering.RefundRequest) (metering.Account, error) {
			c.refunds.Add(1)
			return metering.Account{}, nil
		},
	}
}

func TestBreakerOpenMeteredRouteChargesNothing(t *testing.T) {
	t.Parallel()
	b := newBreaker(t, BreakerOptions{ConsecutiveFailures: 2, OpenFor: time.Hour})
	app := &sequenceApp{codes: repeat(http.StatusServiceUnavailable, 2)}
	var counts countingLedger
	_, front := newFront(t, newApp(t, app), Options{Breaker: b,
		Ledger: counts.ledger(), Routes: refundRoutes()})
	for range 2 {
		if code, body := sendMetered(t, front.URL, ""); code != 503 {
			t.Fatalf("failing call: got %d %s, want the app's 503", code, body)
		}
	}
	if c, r := counts.consumes.Load(), counts.refunds.Load(); c != 2 || r != 2 {
		t.Fatalf("two failed calls: %d charges, %d refunds; want 2 and 2", c, r)
	}

	code, body := sendMetered(t, front.URL, "key-1")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("while open: got %d %s, want 503", code, body)
	}
	if c, r := counts.consumes.Load(), counts.refunds.Load(); c != 2 || r != 2 {
		t.Errorf("while open: %d charges, %d refunds; want no new ones", c, r)
	}
	if got := app.hits.Load(); got != 2 {
		t.Errorf("the app saw %d requests, want 2", got)
	}
}

func TestBreakerOpenRefusesHooks(t *testing.T) {
	t.Parallel()
	b := newBreaker(t, BreakerOptions{ConsecutiveFailures: 1, OpenFor: time.Hour})
	app := &sequenceApp{codes: []int{http.StatusBadGateway}}
	srv := newApp(t, app)
	p, err := New(Options{AppURL: srv.URL, Breaker: b})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	h, err := p.NewProvisionHook(ProvisionOptions{Call: Call{Method: "POST",
		Path: "/t/{user_automation_id}"}})
	if err != nil {
		t.Fatalf("NewProvisionHook: %v", err)
	}
	call := zimmer.ProvisionCall{UserAutomationID: 7, UserID: 1}
	if _, err := h.Provision(context.Background(), call); err == nil {
		t.Fatal("the app's 502: got no error")
	}

	_, err = h.Provision(context.Background(), call)
	var open *OpenError
	if !errors.Is(err, ErrCircuitOpen) || !errors.As(err, &open) || open.Wait < time.Minute {
		t.Errorf("while open: got %v, want an *OpenError with the open time left", err)
	}
	if got := app.hits.Load(); got != 1 {
		t.Errorf("the app saw %d calls, want 1", got)
	}
}

func TestOutcome(t *testing.T) {
	t.Parallel()
	live := newReq(t, "GET", "http://app/x", nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	gone := live.WithContext(ctx)
	expired, cancel2 := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel2()
	late := live.WithContext(expired)

	answer := func(code int) *http.Response { return &http.Response{StatusCode: code} }
	tests := []struct {
		name string
		req  *http.Request
		resp *http.Response
		err  error
		want error
	}{
		{"200", live, answer(200), nil, nil},
		{"404", live, answer(404), nil, nil},
		{"499", live, answer(499), nil, nil},
		{"500 is the app's answer", live, answer(500), nil, nil},
		{"501", live, answer(501), nil, nil},
		{"502", live, answer(502), nil, errFailed},
		{"503", live, answer(503), nil, errFailed},
		{"504", live, answer(504), nil, errFailed},
		{"transport error", live, nil, errors.New("refused"), errFailed},
		{"deadline", late, nil, context.DeadlineExceeded, errFailed},
		{"client gone", gone, nil, context.Canceled, errExcluded},
		{"client gone after a 503", gone, answer(503), nil, errFailed},
	}
	for _, tt := range tests {
		if got := outcome(tt.req, tt.resp, tt.err); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestNewBreakerRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts BreakerOptions
	}{
		{"no rule", BreakerOptions{}},
		{"negative run", BreakerOptions{ConsecutiveFailures: -1, FailureRatio: 0.5,
			MinRequests: 1}},
		{"ratio over 1", BreakerOptions{FailureRatio: 1.5, MinRequests: 1}},
		{"ratio without min", BreakerOptions{FailureRatio: 0.5}},
		{"negative open time", BreakerOptions{ConsecutiveFailures: 1, OpenFor: -1}},
	}
	for _, tt := range tests {
		if _, err := NewBreaker(tt.opts); err == nil {
			t.Errorf("%s: got no error", tt.name)
		}
	}
}

// TestBreakerIgnoresAppErrors: any client can make an app answer 500 for
// its own bad input; that must not open the breaker and turn /health down.
func TestBreakerIgnoresAppErrors(t *testing.T) {
	t.Parallel()
	b := newBreaker(t, BreakerOptions{ConsecutiveFailures: 2, OpenFor: time.Hour})
	app := &sequenceApp{codes: repeat(http.StatusInternalServerError, 10)}
	p, front := newFront(t, newApp(t, app), Options{Breaker: b, Passthrough: true})
	for i := 0; i < 10; i++ {
		if code, _, _ := do(t, newReq(t, "GET", front.URL+"/boom", nil)); code != 500 {
			t.Fatalf("call %d: got %d, want the app's 500", i+1, code)
		}
	}
	if got := p.BreakerState(); got != BreakerClosed {
		t.Errorf("after ten 500s: got state %s, want closed", got)
	}
}
