package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every family name.
const Namespace = "zimmer_sidecar"

// Default caps on name-like labels; Options may change them.
const (
	DefaultMaxEndpoints = 64
	DefaultMaxModels    = 32
	DefaultMaxBreakers  = 16
	DefaultMaxProbes    = 32
)

// LatencyBuckets are the request histogram's upper bounds in seconds:
// 0.5 ms for an answer from memory up to 10 s, the platform's longest
// budget for a Zimmer call.
var LatencyBuckets = []float64{
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// LedgerBuckets are the ledger histogram's upper bounds in seconds: a
// read from memory takes tens of microseconds, a durable write waits for
// an fsync (milliseconds), a database under load longer.
var LedgerBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
	0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// Options configure a Prometheus recorder. The zero value is usable.
type Options struct {
	// Probes, when not nil, is called at every scrape for the state of
	// the app's probes. It must be quick and safe for concurrent use.
	Probes func() []Probe
	// Health, when not nil, is called at every scrape for the verdict
	// /health would answer now ("ok", "degraded" or "down").
	Health func() string

	// Caps on distinct label values; 0 means the Default* above.
	MaxEndpoints int
	MaxModels    int
	MaxBreakers  int
	MaxProbes    int
}

// Prometheus is a Recorder that keeps its numbers on a private registry.
// All methods are safe for concurrent use.
type Prometheus struct {
	reg     *prometheus.Registry
	handler http.Handler

	requests requestMetrics

	auth map[string]prometheus.Counter // by outcome, Other included

	ledgerOps  *prometheus.CounterVec
	ledgerTime map[string]prometheus.Observer // by op, Other included

	breakers     *capped
	breakerState *prometheus.GaugeVec

	leaseEvents  *prometheus.CounterVec
	leasesActive prometheus.Gauge
	keys         *prometheus.GaugeVec
	models       *capped
	tokens       *prometheus.CounterVec
	outbox       prometheus.Gauge
	egress       egressCalls
}

var _ Recorder = (*Prometheus)(nil)

// New builds a Prometheus recorder with every family registered, the Go
// runtime and process collectors included. Series whose labels are known
// in advance start at 0, so they appear in the first scrape.
func New(opts Options) *Prometheus {
	p := &Prometheus{reg: prometheus.NewRegistry()}
	p.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	p.requests.init(p.reg, orDefault(opts.MaxEndpoints, DefaultMaxEndpoints))
	p.initAuth()
	p.initLedger()
	p.initBreakers(orDefault(opts.MaxBreakers, DefaultMaxBreakers))
	p.initEgress(orDefault(opts.MaxModels, DefaultMaxModels))
	p.initEgressCalls()
	if opts.Probes != nil || opts.Health != nil {
		p.reg.MustRegister(newProbeCollector(opts.Probes, opts.Health,
			orDefault(opts.MaxProbes, DefaultMaxProbes)))
	}
	p.handler = promhttp.HandlerFor(p.reg, promhttp.HandlerOpts{
		// A collector that fails loses its own families, not the scrape.
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
	})
	return p
}

func orDefault(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// Handler serves the registry in the Prometheus text format (or
// OpenMetrics, as the scraper asks). At most four scrapes run at once;
// more are answered 503.
func (p *Prometheus) Handler() http.Handler { return p.handler }

// Registry returns the private registry, for tests and for components
// that bring their own collectors.
func (p *Prometheus) Registry() *prometheus.Registry { return p.reg }

func name(s string) string { return Namespace + "_" + s }

// requestMetrics keeps one set of series per endpoint label, found
// without hashing label values on the hot path.
type requestMetrics struct {
	total   *prometheus.CounterVec
	latency *prometheus.HistogramVec
	max     int

	series sync.Map   // endpoint as given -> *endpointSeries
	mu     sync.Mutex // serialises creation; guards n
	n      int        // distinct endpoint labels, Other not counted
}

// endpointSeries are one endpoint's counters by status class and its
// latency histogram.
type endpointSeries struct {
	classes [len(statusClasses)]prometheus.Counter
	latency prometheus.Observer
}

func (q *requestMetrics) init(reg *prometheus.Registry, max int) {
	q.max = max
	q.total = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("requests_total"),
		Help: "Answered public requests by endpoint or route and status class.",
	}, []string{"endpoint", "class"})
	q.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    name("request_duration_seconds"),
		Help:    "Time from a public request's arrival to its handler's return.",
		Buckets: LatencyBuckets,
	}, []string{"endpoint"})
	reg.MustRegister(q.total, q.latency)
}

func (q *requestMetrics) observe(endpoint string, status int, d time.Duration) {
	s := q.lookup(endpoint)
	s.classes[classOf(status)].Inc()
	s.latency.Observe(d.Seconds())
}

func (q *requestMetrics) lookup(endpoint string) *endpointSeries {
	if s, ok := q.series.Load(endpoint); ok {
		return s.(*endpointSeries)
	}
	return q.create(endpoint)
}

// create makes the series for a new endpoint, or finds those of its
// cleaned form, or of Other once the cap is reached. Only names that are
// their own label, and "", are remembered as given, so hostile names
// cannot grow the map.
func (q *requestMetrics) create(endpoint string) *endpointSeries {
	label := cleanName(endpoint)
	q.mu.Lock()
	defer q.mu.Unlock()
	if s, ok := q.series.Load(label); ok {
		return s.(*endpointSeries)
	}
	if label != Other && q.n >= q.max {
		label = Other
		if s, ok := q.series.Load(label); ok {
			return s.(*endpointSeries)
		}
	}
	s := &endpointSeries{latency: q.latency.WithLabelValues(label)}
	for i, class := range statusClasses {
		s.classes[i] = q.total.WithLabelValues(label, class)
	}
	q.series.Store(label, s)
	if endpoint == "" {
		q.series.Store(endpoint, s)
	}
	if label != Other {
		q.n++
	}
	return s
}

// Request implements Recorder.
func (p *Prometheus) Request(endpoint string, status int, d time.Duration) {
	p.requests.observe(endpoint, status, d)
}

func (p *Prometheus) initAuth() {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("auth_attempts_total"),
		Help: "Service-token decisions by outcome (ok, missing, invalid, " +
			"rate_limited, aborted).",
	}, []string{"outcome"})
	p.reg.MustRegister(vec)
	p.auth = make(map[string]prometheus.Counter, len(authOutcomes)+1)
	for _, o := range append(authOutcomes[:len(authOutcomes):len(authOutcomes)], Other) {
		p.auth[o] = vec.WithLabelValues(o)
	}
}

// Auth implements Recorder.
func (p *Prometheus) Auth(outcome string) {
	p.auth[pick(outcome, authOutcomes)].Inc()
}

func (p *Prometheus) initLedger() {
	p.ledgerOps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("ledger_ops_total"),
		Help: "Ledger calls by operation and outcome.",
	}, []string{"op", "outcome"})
	hist := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    name("ledger_op_duration_seconds"),
		Help:    "Ledger call latency by operation.",
		Buckets: LedgerBuckets,
	}, []string{"op"})
	p.reg.MustRegister(p.ledgerOps, hist)
	p.ledgerTime = make(map[string]prometheus.Observer, len(ledgerOps)+1)
	for _, op := range ledgerOps {
		p.ledgerTime[op] = hist.WithLabelValues(op)
		p.ledgerOps.WithLabelValues(op, OutcomeOK)
	}
	p.ledgerTime[Other] = hist.WithLabelValues(Other)
}

// LedgerOp implements Recorder.
func (p *Prometheus) LedgerOp(op, outcome string, d time.Duration) {
	op = pick(op, ledgerOps)
	p.ledgerOps.WithLabelValues(op, pick(outcome, ledgerOutcomes)).Inc()
	p.ledgerTime[op].Observe(d.Seconds())
}

func (p *Prometheus) initBreakers(max int) {
	p.breakers = newCapped(max)
	p.breakerState = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: name("breaker_state"),
		Help: "1 for the state each circuit breaker is in (closed, " +
			"half_open, open), 0 for the others.",
	}, []string{"breaker", "state"})
	p.reg.MustRegister(p.breakerState)
}

// Breaker implements Recorder. A state outside the vocabulary sets the
// breaker's "other" series to 1 until the next known state removes it.
func (p *Prometheus) Breaker(breaker, state string) {
	if state == "half-open" {
		state = BreakerHalfOpen
	}
	b := p.breakers.admit(breaker)
	state = pick(state, breakerStates)
	for _, s := range breakerStates {
		p.breakerState.WithLabelValues(b, s).Set(boolValue(s == state))
	}
	if state == Other {
		p.breakerState.WithLabelValues(b, Other).Set(1)
	} else {
		p.breakerState.DeleteLabelValues(b, Other)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (p *Prometheus) initEgress(maxModels int) {
	p.leaseEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("egress_lease_events_total"),
		Help: "Upstream key lease events. Fed by the egress component; " +
			"0 until it exists.",
	}, []string{"event"})
	p.leasesActive = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: name("egress_leases_active"),
		Help: "Upstream key leases held now. 0 until the egress component exists.",
	})
	p.keys = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: name("egress_keys"),
		Help: "Upstream keys by state. 0 until the egress component exists.",
	}, []string{"state"})
	p.models = newCapped(maxModels)
	p.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("egress_tokens_total"),
		Help: "Tokens used upstream by model and kind (prompt, completion); " +
			`models past the cap count as "other".`,
	}, []string{"model", "kind"})
	p.outbox = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: name("egress_outbox_depth"),
		Help: "Platform deliveries (usage reports, ledger consumes) in the egress outbox.",
	})
	p.reg.MustRegister(p.leaseEvents, p.leasesActive, p.keys, p.tokens, p.outbox)

	for _, e := range leaseEvents {
		p.leaseEvents.WithLabelValues(e)
	}
	for _, s := range keyStates {
		p.keys.WithLabelValues(s)
	}
	// The overflow series exists from the start, so the family does too;
	// it truly holds 0 tokens until a model past the cap is seen.
	for _, k := range tokenKinds {
		p.tokens.WithLabelValues(Other, k)
	}
}

// Lease implements Recorder.
func (p *Prometheus) Lease(event string) {
	p.leaseEvents.WithLabelValues(pick(event, leaseEvents)).Inc()
}

// ActiveLeases implements Recorder.
func (p *Prometheus) ActiveLeases(n int) { p.leasesActive.Set(float64(max(n, 0))) }

// Keys implements Recorder. Unknown states share the "other" series; the
// last call wins.
func (p *Prometheus) Keys(state string, n int) {
	p.keys.WithLabelValues(pick(state, keyStates)).Set(float64(max(n, 0)))
}

// Tokens implements Recorder. Negative counts are taken as 0.
func (p *Prometheus) Tokens(model string, prompt, completion int) {
	m := p.models.admit(model)
	p.tokens.WithLabelValues(m, "prompt").Add(float64(max(prompt, 0)))
	p.tokens.WithLabelValues(m, "completion").Add(float64(max(completion, 0)))
}

// OutboxDepth implements Recorder.
func (p *Prometheus) OutboxDepth(n int) { p.outbox.Set(float64(max(n, 0))) }
