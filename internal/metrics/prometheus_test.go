package metrics

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// families are every zimmer_sidecar_ family New registers, with the
// options the test gives it.
var families = []string{
	"zimmer_sidecar_requests_total",
	"zimmer_sidecar_request_duration_seconds",
	"zimmer_sidecar_auth_attempts_total",
	"zimmer_sidecar_ledger_ops_total",
	"zimmer_sidecar_ledger_op_duration_seconds",
	"zimmer_sidecar_probe_state",
	"zimmer_sidecar_probe_latency_seconds",
	"zimmer_sidecar_probe_consecutive_failures",
	"zimmer_sidecar_health_status",
	"zimmer_sidecar_breaker_state",
	"zimmer_sidecar_egress_lease_events_total",
	"zimmer_sidecar_egress_leases_active",
	"zimmer_sidecar_egress_keys",
	"zimmer_sidecar_egress_tokens_total",
	"zimmer_sidecar_egress_outbox_depth",
}

func TestStatusClass(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		want   string
	}{
		{0, Other}, {99, Other}, {100, "1xx"}, {101, "1xx"}, {200, "2xx"},
		{204, "2xx"}, {302, "3xx"}, {404, "4xx"}, {499, "4xx"},
		{500, "5xx"}, {599, "5xx"}, {600, Other}, {-1, Other},
	}
	for _, tt := range tests {
		if got := StatusClass(tt.status); got != tt.want {
			t.Errorf("StatusClass(%d) = %q, want %q", tt.status, got, tt.want)
		}
	}
}

func TestEveryFamilyAfterUse(t *testing.T) {
	t.Parallel()
	p := New(Options{
		Probes: func() []Probe {
			return []Probe{{Name: "app", State: "up", Latency: 30 * time.Millisecond}}
		},
		Health: func() string { return "ok" },
	})
	p.Request("provision", 200, 3*time.Millisecond)
	p.Request("route:/chat/*", 503, time.Second)
	p.Auth(AuthInvalid)
	p.LedgerOp(OpConsume, OutcomeRefused, time.Millisecond)
	p.Breaker("app", "half-open")
	p.Lease(LeaseAcquired)
	p.ActiveLeases(2)
	p.Keys(KeyCooling, 1)
	p.Tokens("gpt-4o-mini", 120, 30)
	p.OutboxDepth(7)

	fams := gather(t, p.Registry())
	for _, f := range families {
		if _, ok := fams[f]; !ok {
			t.Errorf("family %s missing from the scrape", f)
		}
	}
	for _, f := range []string{"go_goroutines", "process_start_time_seconds"} {
		if _, ok := fams[f]; !ok {
			t.Errorf("runtime family %s missing: Go/process collectors not registered", f)
		}
	}

	wantValue(t, fams, "zimmer_sidecar_requests_total", "class=2xx,endpoint=provision", 1)
	wantValue(t, fams, "zimmer_sidecar_requests_total", "class=5xx,endpoint=provision", 0)
	wantValue(t, fams, "zimmer_sidecar_requests_total", "class=5xx,endpoint=route:/chat/*", 1)
	wantValue(t, fams, "zimmer_sidecar_request_duration_seconds", "endpoint=route:/chat/*", 1)
	wantValue(t, fams, "zimmer_sidecar_auth_attempts_total", "outcome=invalid", 1)
	wantValue(t, fams, "zimmer_sidecar_auth_attempts_total", "outcome=rate_limited", 0)
	wantValue(t, fams, "zimmer_sidecar_ledger_ops_total", "op=consume,outcome=refused", 1)
	wantValue(t, fams, "zimmer_sidecar_ledger_ops_total", "op=refund,outcome=ok", 0)
	wantValue(t, fams, "zimmer_sidecar_ledger_op_duration_seconds", "op=consume", 1)
	wantValue(t, fams, "zimmer_sidecar_probe_state", "probe=app,state=up", 1)
	wantValue(t, fams, "zimmer_sidecar_probe_state", "probe=app,state=down", 0)
	wantValue(t, fams, "zimmer_sidecar_probe_latency_seconds", "probe=app", 0.03)
	wantValue(t, fams, "zimmer_sidecar_health_status", "status=ok", 1)
	wantValue(t, fams, "zimmer_sidecar_health_status", "status=down", 0)
	wantValue(t, fams, "zimmer_sidecar_breaker_state", "breaker=app,state=half_open", 1)
	wantValue(t, fams, "zimmer_sidecar_breaker_state", "breaker=app,state=open", 0)
	wantValue(t, fams, "zimmer_sidecar_egress_lease_events_total", "event=acquired", 1)
	wantValue(t, fams, "zimmer_sidecar_egress_leases_active", "", 2)
	wantValue(t, fams, "zimmer_sidecar_egress_keys", "state=cooling", 1)
	wantValue(t, fams, "zimmer_sidecar_egress_keys", "state=active", 0)
	wantValue(t, fams, "zimmer_sidecar_egress_tokens_total", "kind=prompt,model=gpt-4o-mini", 120)
	wantValue(t, fams, "zimmer_sidecar_egress_tokens_total",
		"kind=completion,model=gpt-4o-mini", 30)
	wantValue(t, fams, "zimmer_sidecar_egress_outbox_depth", "", 7)
}

// TestFirstScrape checks what an idle sidecar shows: every family that
// can exist before any event, at 0.
func TestFirstScrape(t *testing.T) {
	t.Parallel()
	p := New(Options{Health: func() string { return "degraded" }})
	fams := gather(t, p.Registry())
	for _, f := range []string{
		"zimmer_sidecar_auth_attempts_total",
		"zimmer_sidecar_ledger_ops_total",
		"zimmer_sidecar_ledger_op_duration_seconds",
		"zimmer_sidecar_health_status",
		"zimmer_sidecar_egress_lease_events_total",
		"zimmer_sidecar_egress_leases_active",
		"zimmer_sidecar_egress_keys",
		"zimmer_sidecar_egress_tokens_total",
		"zimmer_sidecar_egress_outbox_depth",
	} {
		if _, ok := fams[f]; !ok {
			t.Errorf("family %s missing from the first scrape", f)
		}
	}
	// No breaker has reported, no request was served, no probe exists.
	for _, f := range []string{
		"zimmer_sidecar_breaker_state",
		"zimmer_sidecar_requests_total",
		"zimmer_sidecar_probe_state",
	} {
		if _, ok := fams[f]; ok {
			t.Errorf("family %s present before anything fed it: %v", f, seriesOf(fams, f))
		}
	}
	wantValue(t, fams, "zimmer_sidecar_egress_outbox_depth", "", 0)
	wantValue(t, fams, "zimmer_sidecar_egress_tokens_total", "kind=prompt,model=other", 0)
	wantValue(t, fams, "zimmer_sidecar_health_status", "status=degraded", 1)
}

func TestVocabulariesMapUnknownToOther(t *testing.T) {
	t.Parallel()
	p := New(Options{})
	p.Auth("Outcome(9)")
	p.LedgerOp("drop_table", "weird", time.Millisecond)
	p.Lease("stolen")
	p.Keys("haunted", 3)
	p.Keys(KeyActive, -4)
	p.ActiveLeases(-1)
	p.OutboxDepth(-2)
	p.Tokens("m", -5, 4)

	fams := gather(t, p.Registry())
	wantValue(t, fams, "zimmer_sidecar_auth_attempts_total", "outcome=other", 1)
	wantValue(t, fams, "zimmer_sidecar_ledger_ops_total", "op=other,outcome=other", 1)
	wantValue(t, fams, "zimmer_sidecar_ledger_op_duration_seconds", "op=other", 1)
	wantValue(t, fams, "zimmer_sidecar_egress_lease_events_total", "event=other", 1)
	wantValue(t, fams, "zimmer_sidecar_egress_keys", "state=other", 3)
	wantValue(t, fams, "zimmer_sidecar_egress_keys", "state=active", 0)
	wantValue(t, fams, "zimmer_sidecar_egress_leases_active", "", 0)
	wantValue(t, fams, "zimmer_sidecar_egress_outbox_depth", "", 0)
	wantValue(t, fams, "zimmer_sidecar_egress_tokens_total", "kind=prompt,model=m", 0)
	wantValue(t, fams, "zimmer_sidecar_egress_tokens_total", "kind=completion,model=m", 4)
}

func TestBreakerStates(t *testing.T) {
	t.Parallel()
	p := New(Options{})
	steps := []struct {
		state string
		want  map[string]float64 // state label -> value; absent: no series
	}{
		{BreakerClosed, map[string]float64{"closed": 1, "half_open": 0, "open": 0}},
		{BreakerOpen, map[string]float64{"closed": 0, "half_open": 0, "open": 1}},
		{"melted", map[string]float64{"closed": 0, "half_open": 0, "open": 0, "other": 1}},
		{"half-open", map[string]float64{"closed": 0, "half_open": 1, "open": 0}},
	}
	for _, st := range steps {
		p.Breaker("app", st.state)
		fams := gather(t, p.Registry())
		got := map[string]float64{}
		for _, m := range fams["zimmer_sidecar_breaker_state"].GetMetric() {
			got[strings.TrimPrefix(labelsOf(m), "breaker=app,state=")] = m.GetGauge().GetValue()
		}
		if fmt.Sprint(got) != fmt.Sprint(st.want) {
			t.Errorf("after Breaker(app, %q): got %v, want %v", st.state, got, st.want)
		}
	}
}

func TestNameLabelsAreCapped(t *testing.T) {
	t.Parallel()
	p := New(Options{MaxEndpoints: 3, MaxModels: 2, MaxBreakers: 1})
	for i := range 10 {
		p.Request(fmt.Sprintf("route:/r%d", i), 200, time.Millisecond)
		p.Tokens(fmt.Sprintf("model-%d", i), 1, 1)
		p.Breaker(fmt.Sprintf("b%d", i), BreakerClosed)
	}
	p.Request("", 404, time.Millisecond)
	p.Request("", 404, time.Millisecond)
	p.Request("bad\xffname", 200, time.Millisecond)
	p.Request(strings.Repeat("é", 100), 200, time.Millisecond)

	fams := gather(t, p.Registry())
	endpoints := map[string]bool{}
	for _, m := range fams["zimmer_sidecar_request_duration_seconds"].GetMetric() {
		endpoints[strings.TrimPrefix(labelsOf(m), "endpoint=")] = true
	}
	// The first three names, then everything as "other" (the empty name
	// cleans to "unknown", which needs a slot of its own but none is left).
	want := map[string]bool{"route:/r0": true, "route:/r1": true, "route:/r2": true,
		"other": true}
	if fmt.Sprint(endpoints) != fmt.Sprint(want) {
		t.Errorf("endpoint labels = %v, want %v", endpoints, want)
	}
	wantValue(t, fams, "zimmer_sidecar_requests_total", "class=2xx,endpoint=other", 9)
	wantValue(t, fams, "zimmer_sidecar_requests_total", "class=4xx,endpoint=other", 2)
	wantValue(t, fams, "zimmer_sidecar_egress_tokens_total", "kind=prompt,model=other", 8)
	if n := len(fams["zimmer_sidecar_egress_tokens_total"].GetMetric()); n != 6 {
		t.Errorf("token series = %d, want 6 (2 models + other, 2 kinds): %v",
			n, seriesOf(fams, "zimmer_sidecar_egress_tokens_total"))
	}
	wantValue(t, fams, "zimmer_sidecar_breaker_state", "breaker=b0,state=closed", 1)
	wantValue(t, fams, "zimmer_sidecar_breaker_state", "breaker=other,state=closed", 1)
}

func TestUnknownAndCleanedEndpoints(t *testing.T) {
	t.Parallel()
	p := New(Options{})
	p.Request("", 200, time.Millisecond)
	p.Request("", 500, time.Millisecond)
	p.Request("bad\xffname", 200, time.Millisecond)
	p.Request("bad?name", 200, time.Millisecond)
	long := strings.Repeat("é", 100) // 200 bytes
	p.Request(long, 200, time.Millisecond)

	fams := gather(t, p.Registry())
	wantValue(t, fams, "zimmer_sidecar_requests_total", "class=2xx,endpoint=unknown", 1)
	wantValue(t, fams, "zimmer_sidecar_requests_total", "class=5xx,endpoint=unknown", 1)
	wantValue(t, fams, "zimmer_sidecar_requests_total", "class=2xx,endpoint=bad?name", 2)
	cut := strings.Repeat("é", MaxLabelLen/2)
	wantValue(t, fams, "zimmer_sidecar_requests_total", "class=2xx,endpoint="+cut, 1)
}

func TestProbeCollector(t *testing.T) {
	t.Parallel()
	probes := []Probe{
		{Name: "app", State: "failing", Latency: 2 * time.Second, Fails: 2},
		{Name: "db", State: "sideways"},
		{Name: "app", State: "up"}, // a duplicate after cleaning is skipped
		{Name: "", State: "pending"},
		{Name: "over-the-cap", State: "up"},
	}
	p := New(Options{
		Probes:    func() []Probe { return probes },
		Health:    func() string { return "" },
		MaxProbes: 3,
	})
	fams := gather(t, p.Registry())
	wantValue(t, fams, "zimmer_sidecar_probe_state", "probe=app,state=failing", 1)
	wantValue(t, fams, "zimmer_sidecar_probe_state", "probe=app,state=up", 0)
	wantValue(t, fams, "zimmer_sidecar_probe_latency_seconds", "probe=app", 2)
	wantValue(t, fams, "zimmer_sidecar_probe_consecutive_failures", "probe=app", 2)
	wantValue(t, fams, "zimmer_sidecar_probe_state", "probe=db,state=other", 1)
	wantValue(t, fams, "zimmer_sidecar_probe_state", "probe=unknown,state=pending", 1)
	if _, ok := value(fams, "zimmer_sidecar_probe_latency_seconds", "probe=over-the-cap"); ok {
		t.Error("a probe past MaxProbes got a series")
	}
	wantValue(t, fams, "zimmer_sidecar_health_status", "status=other", 1)

	// The collector reads at scrape time: a change shows in the next one.
	probes = []Probe{{Name: "app", State: "down", Fails: 3}}
	fams = gather(t, p.Registry())
	wantValue(t, fams, "zimmer_sidecar_probe_state", "probe=app,state=down", 1)
	if _, ok := value(fams, "zimmer_sidecar_probe_state", "probe=db,state=up"); ok {
		t.Error("a probe gone from the source still has series")
	}
}

func TestLint(t *testing.T) {
	t.Parallel()
	p := New(Options{
		Probes: func() []Probe { return []Probe{{Name: "app", State: "up"}} },
		Health: func() string { return "ok" },
	})
	p.Request("health", 200, time.Millisecond)
	p.Breaker("app", BreakerClosed)
	problems, err := testutil.GatherAndLint(p.Registry(), families...)
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	for _, pr := range problems {
		t.Errorf("lint %s: %s", pr.Metric, pr.Text)
	}
}

func TestHandlerServesTextFormat(t *testing.T) {
	t.Parallel()
	p := New(Options{})
	p.Request("health", 200, time.Millisecond)
	srv := httptest.NewServer(p.Handler())
	t.Cleanup(srv.Close)

	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want text/plain", ct)
	}
	want := `zimmer_sidecar_requests_total{class="2xx",endpoint="health"} 1`
	if !strings.Contains(string(body), want) {
		t.Errorf("body lacks %q:\n%s", want, body)
	}
}

func TestRegistriesArePrivate(t *testing.T) {
	t.Parallel()
	// Two recorders in one process must not collide, as they would on
	// the default registry.
	a, b := New(Options{}), New(Options{})
	a.Auth(AuthOK)
	if got := testutil.ToFloat64(b.auth[AuthOK]); got != 0 {
		t.Errorf("b saw a's auth count: %v", got)
	}
}

func TestNopAllocatesNothing(t *testing.T) {
	var r Recorder = Nop{}
	allocs := testing.AllocsPerRun(100, func() {
		r.Request("provision", 200, time.Millisecond)
		r.Auth(AuthOK)
		r.LedgerOp(OpConsume, OutcomeOK, time.Millisecond)
		r.Tokens("m", 1, 2)
	})
	if allocs != 0 {
		t.Errorf("Nop allocated %v times per run, want 0", allocs)
	}
}

func TestRequestAllocatesNothingOnceSeen(t *testing.T) {
	p := New(Options{})
	p.Request("provision", 200, time.Millisecond)
	allocs := testing.AllocsPerRun(100, func() {
		p.Request("provision", 404, time.Millisecond)
		p.Auth(AuthMissing)
	})
	if allocs != 0 {
		t.Errorf("Request+Auth allocated %v times per run, want 0", allocs)
	}
}
