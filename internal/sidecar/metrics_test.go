package sidecar

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/logging"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metrics"
)

// probeTOML adds one probe, so the probe families have a series.
const probeTOML = `
[[app.probe]]
name = "app"
path = "/healthz"
every = "1h"
`

// scrapedFamilies are the families a scrape of a sidecar that served
// traffic must show.
var scrapedFamilies = []string{
	"zimmer_sidecar_breaker_state",
	"zimmer_sidecar_requests_total",
	"zimmer_sidecar_request_duration_seconds",
	"zimmer_sidecar_auth_attempts_total",
	"zimmer_sidecar_ledger_ops_total",
	"zimmer_sidecar_ledger_op_duration_seconds",
	"zimmer_sidecar_probe_state",
	"zimmer_sidecar_probe_latency_seconds",
	"zimmer_sidecar_probe_consecutive_failures",
	"zimmer_sidecar_health_status",
	"zimmer_sidecar_egress_lease_events_total",
	"zimmer_sidecar_egress_leases_active",
	"zimmer_sidecar_egress_keys",
	"zimmer_sidecar_egress_tokens_total",
	"zimmer_sidecar_egress_outbox_depth",
	"go_goroutines",
	"process_start_time_seconds",
}

// loadKind is one kind of request in the load run, with the endpoint
// label its answer must be counted under.
type loadKind struct {
	name     string
	method   string
	target   string
	body     string
	token    string // "" sends none
	tenant   bool   // send X-Tenant: 7 (the metered route's user)
	endpoint string
}

// rawPath is a path no label may carry.
const rawPath = "/some/random/path/123"

var loadKinds = []loadKind{
	{name: "health", method: "GET", target: "/health", endpoint: "health"},
	{name: "provision", method: "POST", target: "/provision", body: provisionBody,
		token: testToken, endpoint: "provision"},
	{name: "consume", method: "POST", target: "/api/zimmer/usage/consume",
		body:  `{"user_automation_id": 7, "units": 1, "usage_type": "chat"}`,
		token: testToken, endpoint: "usage/consume"},
	// A matched route is labelled by its pattern, never the raw path.
	{name: "metered route", method: "POST", target: "/chat/send", body: "hi",
		token: testToken, tenant: true, endpoint: "route:/chat/*"},
	{name: "passthrough", method: "GET", target: rawPath, endpoint: "proxy"},
	// A failed authentication still counts against its endpoint.
	{name: "bad token", method: "POST", target: "/provision", body: provisionBody,
		token: "wrong-token", endpoint: "provision"},
}

// scrape GETs /metrics from the admin listener and parses it. trace, when
// not nil, is attached to the request.
func (h *harness) scrape(trace *httptrace.ClientTrace) (map[string]*dto.MetricFamily, error) {
	ctx := context.Background()
	if trace != nil {
		ctx = httptrace.WithClientTrace(ctx, trace)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", h.adminURL()+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, &scrapeError{resp.StatusCode, string(b)}
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

type scrapeError struct {
	status int
	body   string
}

func (e *scrapeError) Error() string {
	return "scrape answered " + http.StatusText(e.status) + ": " + e.body
}

// mustScrape is scrape failing t on error.
func (h *harness) mustScrape() map[string]*dto.MetricFamily {
	h.t.Helper()
	fams, err := h.scrape(nil)
	if err != nil {
		h.t.Fatalf("scrape: %v", err)
	}
	return fams
}

// series sums the values of fam's series whose labels include every
// name=value in match.
func series(fams map[string]*dto.MetricFamily, fam string, match ...string) float64 {
	var sum float64
	for _, m := range fams[fam].GetMetric() {
		if !hasLabels(m, match) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, match []string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == match[i] && lp.GetValue() == match[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// checkFamilies fails t for each wanted family the scrape lacks.
func checkFamilies(t *testing.T, what string, fams map[string]*dto.MetricFamily) {
	t.Helper()
	for _, f := range scrapedFamilies {
		if len(fams[f].GetMetric()) == 0 {
			t.Errorf("%s: family %s missing", what, f)
		}
	}
}

// checkLabelValues fails t for any label value of a zimmer_sidecar_
// family that is not bounded: an endpoint outside the known names, or
// any value carrying a path, a user id or a secret.
func checkLabelValues(t *testing.T, fams map[string]*dto.MetricFamily) {
	t.Helper()
	endpoints := map[string]bool{
		"health": true, "provision": true, "usage/consume": true,
		"kb/status": true, "kb/reset": true, "proxy": true,
		"route:/chat/*": true, "route:/private/*": true,
		metrics.Unknown: true, metrics.Other: true,
	}
	forbidden := []string{rawPath, "random", "123", "7", "70", testToken, "wrong-token"}
	for name, mf := range fams {
		if !strings.HasPrefix(name, metrics.Namespace+"_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				v := lp.GetValue()
				if lp.GetName() == "endpoint" && !endpoints[v] {
					t.Errorf("%s: endpoint label %q is not a known name", name, v)
				}
				for _, bad := range forbidden {
					if v == bad || (len(bad) > 3 && strings.Contains(v, bad)) {
						t.Errorf("%s: label %s=%q carries %q", name, lp.GetName(), v, bad)
					}
				}
			}
		}
	}
}

// TestMetricsDuringLoad runs a bounded concurrent load of every kind of
// public request, scrapes /metrics in the middle of it, and checks that
// the scrape shows every family; a final scrape must count each request
// under its endpoint and status class, and no label may be a raw path,
// a user id or a token.
func TestMetricsDuringLoad(t *testing.T) {
	t.Parallel()
	h := startHarness(t, params{extra: probeTOML})
	h.waitReady()

	// Setup: the metered route's user exists with a balance no load can
	// spend; a credit through the admin API is a ledger op too.
	setup := h.do("POST", h.publicURL()+"/provision",
		`{"user_automation_id": 7, "user_id": 70, "demo_tokens": 1000000}`,
		withToken(testToken))
	if setup.status != http.StatusOK {
		t.Fatalf("setup provision: %d %s", setup.status, setup.body)
	}
	credit := h.do("POST", h.adminURL()+"/admin/ledger/credit",
		`{"user_automation_id": 7, "units": 1000}`, nil)
	if credit.status != http.StatusOK {
		t.Fatalf("setup credit: %d %s", credit.status, credit.body)
	}
	before := h.mustScrape()

	// The load: total requests over workers goroutines. At the halfway
	// mark the workers wait until a scrape's request is on the wire, then
	// go on, so that scrape is served while the load runs.
	const total, workers = 500, 8
	var (
		next, finished atomic.Int64
		tallyMu        sync.Mutex
		tally          = map[[2]string]float64{} // endpoint, class -> answers
		halfway        = make(chan struct{})
		scrapeSent     = make(chan struct{})
		halfOnce       sync.Once
		wg             sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				if i == total/2 {
					halfOnce.Do(func() { close(halfway) })
				}
				if i >= total/2 {
					<-scrapeSent
				}
				k := loadKinds[int(i)%len(loadKinds)]
				var hdr http.Header
				if k.token != "" {
					hdr = withToken(k.token)
				}
				if k.tenant {
					hdr.Set("X-Tenant", "7")
				}
				a, err := h.try(k.method, h.publicURL()+k.target, k.body, hdr)
				if err != nil {
					t.Errorf("%s: %v", k.name, err)
					return
				}
				tallyMu.Lock()
				tally[[2]string{k.endpoint, metrics.StatusClass(a.status)}]++
				tallyMu.Unlock()
				finished.Add(1)
			}
		}()
	}

	<-halfway
	var startedAt int64
	var once sync.Once
	mid, err := h.scrape(&httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) {
			once.Do(func() {
				startedAt = finished.Load()
				close(scrapeSent)
			})
		},
	})
	once.Do(func() { close(scrapeSent) }) // never leave the workers waiting
	wg.Wait()
	if err != nil {
		t.Fatalf("scrape during the load: %v", err)
	}
	if startedAt >= total {
		t.Fatalf("the mid-run scrape started after all %d requests finished", total)
	}
	checkFamilies(t, "scrape during the load", mid)
	checkLabelValues(t, mid)

	// After the load every answer is counted. The access hook runs just
	// after the answer went out, so the last few may lag the client.
	var after map[string]*dto.MetricFamily
	eventually(t, "every load request to be counted", func() bool {
		after = h.mustScrape()
		return series(after, "zimmer_sidecar_requests_total")-
			series(before, "zimmer_sidecar_requests_total") >= total
	})
	checkFamilies(t, "scrape after the load", after)
	checkLabelValues(t, after)

	diff := func(fam string, match ...string) float64 {
		return series(after, fam, match...) - series(before, fam, match...)
	}
	if got := diff("zimmer_sidecar_requests_total"); got != total {
		t.Errorf("requests counted = %v, want %d", got, total)
	}
	for key, want := range tally {
		got := diff("zimmer_sidecar_requests_total", "endpoint", key[0], "class", key[1])
		if got != want {
			t.Errorf("requests_total{endpoint=%q,class=%q} grew by %v, want %v",
				key[0], key[1], got, want)
		}
		if got := diff("zimmer_sidecar_request_duration_seconds", "endpoint", key[0]); got < want {
			t.Errorf("request_duration_seconds{endpoint=%q} has %v samples, want >= %v",
				key[0], got, want)
		}
	}

	// Auth: every bad token is a failure (invalid, or rate_limited once
	// the client spent failures_per_minute); every good one is ok.
	sent := map[string]float64{} // kind name -> requests sent
	for i := range total {
		sent[loadKinds[i%len(loadKinds)].name]++
	}
	bad := diff("zimmer_sidecar_auth_attempts_total", "outcome", "invalid") +
		diff("zimmer_sidecar_auth_attempts_total", "outcome", "rate_limited")
	if want := sent["bad token"]; bad != want {
		t.Errorf("failed auth attempts = %v, want %v", bad, want)
	}
	wantOK := sent["provision"] + sent["consume"] + sent["metered route"]
	if got := diff("zimmer_sidecar_auth_attempts_total", "outcome", "ok"); got != wantOK {
		t.Errorf("ok auth attempts = %v, want %v", got, wantOK)
	}

	// Ledger: each consume and each metered call debits once; each
	// provision provisions once (the bad-token ones never reach it).
	debits := sent["consume"] + sent["metered route"]
	if got := diff("zimmer_sidecar_ledger_ops_total", "op", "consume"); got != debits {
		t.Errorf("ledger consume ops = %v, want %v", got, debits)
	}
	if got := diff("zimmer_sidecar_ledger_op_duration_seconds", "op", "consume"); got != debits {
		t.Errorf("ledger consume latency samples = %v, want %v", got, debits)
	}
	provisions := sent["provision"]
	if got := diff("zimmer_sidecar_ledger_ops_total", "op", "provision"); got != provisions {
		t.Errorf("ledger provision ops = %v, want %v", got, provisions)
	}
	if got := series(after, "zimmer_sidecar_ledger_ops_total", "op", "credit",
		"outcome", "ok"); got != 1 {
		t.Errorf("ledger credit ops = %v, want 1", got)
	}

	// The probe is in exactly one state; the verdict is exactly one.
	if got := series(after, "zimmer_sidecar_probe_state", "probe", "app"); got != 1 {
		t.Errorf("probe app states set = %v, want exactly 1", got)
	}
	if got := series(after, "zimmer_sidecar_health_status"); got != 1 {
		t.Errorf("health statuses set = %v, want exactly 1", got)
	}
	if got := series(after, "zimmer_sidecar_egress_outbox_depth"); got != 0 {
		t.Errorf("outbox depth = %v with no egress, want 0", got)
	}
}

// TestMetricsBehindTokenOffLoopback checks that an admin listener bound
// beyond loopback serves /metrics only with the service token, like the
// ledger admin API. Nothing listens: the handler is called directly.
func TestMetricsBehindTokenOffLoopback(t *testing.T) {
	t.Parallel()
	cfg := parseConfig(t, params{appURL: "http://127.0.0.1:1"})
	cfg.Listen.Admin = "192.0.2.1:9090" // never bound
	red := logging.NewRedactor()
	s, err := New(cfg, Options{Logger: newTestLogger(io.Discard), Redactor: red})
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })

	tests := []struct {
		name  string
		token string
		want  int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"wrong token", "nope", http.StatusUnauthorized},
		{"token", testToken, http.StatusOK},
	}
	for _, tt := range tests {
		req := httptest.NewRequest("GET", "http://192.0.2.1:9090/metrics", nil)
		req.RemoteAddr = "192.0.2.50:40000"
		if tt.token != "" {
			req.Header.Set("X-Zimmer-Service-Token", tt.token)
		}
		rec := httptest.NewRecorder()
		s.AdminHandler().ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, rec.Code, tt.want)
		}
		if tt.want == http.StatusOK &&
			!strings.Contains(rec.Body.String(), "zimmer_sidecar_auth_attempts_total") {
			t.Errorf("%s: body lacks the auth family:\n%.500s", tt.name, rec.Body.String())
		}
	}
}

// TestMetricsOffWithoutAdminListener checks that a sidecar without an
// admin listener records into Nop and hooks nothing.
func TestMetricsOffWithoutAdminListener(t *testing.T) {
	t.Parallel()
	cfg := parseConfig(t, params{appURL: "http://127.0.0.1:1"})
	cfg.Listen.Admin = ""
	s, err := New(cfg, Options{Logger: newTestLogger(io.Discard)})
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, ok := s.metrics.rec.(metrics.Nop); !ok {
		t.Errorf("recorder = %T, want metrics.Nop", s.metrics.rec)
	}
	if s.observe() != nil || s.onAuthResult() != nil {
		t.Error("hooks installed with metrics off")
	}
	mux := http.NewServeMux()
	s.mountMetrics(mux, nil)
	if _, pattern := mux.Handler(httptest.NewRequest("GET", "/metrics", nil)); pattern != "" {
		t.Errorf("/metrics mounted as %q with metrics off", pattern)
	}
}
