package health

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/testclock"
)

// fakeClock is the tests' settable clock.
type fakeClock = testclock.Clock

func newClock() *fakeClock {
	return testclock.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
}

// fakeApp is an app whose answers the test controls.
type fakeApp struct {
	status atomic.Int32
	// took is how far the handler moves the clock, standing for the time
	// the app takes to answer.
	took atomic.Int64
	clk  *fakeClock
	hits atomic.Int64
	url  *url.URL
}

// newApp starts a fake app answering 200 on every path.
func newApp(t *testing.T, clk *fakeClock) *fakeApp {
	t.Helper()
	a := &fakeApp{clk: clk}
	a.status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		if d := time.Duration(a.took.Load()); d > 0 {
			a.clk.Advance(d)
		}
		w.WriteHeader(int(a.status.Load()))
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(srv.Close)
	a.url = mustURL(t, srv.URL)
	return a
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return u
}

// newMonitor builds a Monitor on base with clock clk.
func newMonitor(
	t *testing.T, base *url.URL, clk *fakeClock, probes ...ProbeOptions,
) *Monitor {
	t.Helper()
	m, err := New(Options{
		BaseURL: base,
		Probes:  probes,
		Version: "1.2.3",
		Now:     clk.Now,
		Started: clk.Now(),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

// stateOf returns the state of the check called name.
func stateOf(t *testing.T, v Verdict, name string) State {
	t.Helper()
	c, ok := v.Checks[name]
	if !ok {
		t.Fatalf("verdict has no check %q: %+v", name, v.Checks)
	}
	return c.State
}
