package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Probe is one app probe's state as the scrape sees it. The wiring
// converts health.ProbeStatus into it, so this package does not depend on
// the health package.
type Probe struct {
	// Name is the configured probe name (bounded by the configuration).
	Name string
	// State is one of pending, up, slow, failing, down.
	State string
	// Latency is the last check's time to the response headers; 0 before
	// the first check.
	Latency time.Duration
	// Fails counts consecutive failures; 0 after a pass.
	Fails int
}

// probeCollector reads the probes and the verdict at scrape time, so the
// numbers are never older than the monitor's own state.
type probeCollector struct {
	probes func() []Probe
	health func() string
	max    int

	state   *prometheus.Desc
	latency *prometheus.Desc
	fails   *prometheus.Desc
	verdict *prometheus.Desc
}

func newProbeCollector(probes func() []Probe, health func() string, max int) *probeCollector {
	return &probeCollector{
		probes: probes,
		health: health,
		max:    max,
		state: prometheus.NewDesc(name("probe_state"),
			"1 for the state each app probe is in (pending, up, slow, "+
				"failing, down), 0 for the others.",
			[]string{"probe", "state"}, nil),
		latency: prometheus.NewDesc(name("probe_latency_seconds"),
			"Time to the response headers of each probe's last check.",
			[]string{"probe"}, nil),
		fails: prometheus.NewDesc(name("probe_consecutive_failures"),
			"Failed checks of each probe since its last pass.",
			[]string{"probe"}, nil),
		verdict: prometheus.NewDesc(name("health_status"),
			"1 for the verdict /health answers now (ok, degraded, down), "+
				"0 for the others.",
			[]string{"status"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *probeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.state
	ch <- c.latency
	ch <- c.fails
	ch <- c.verdict
}

// Collect implements prometheus.Collector.
func (c *probeCollector) Collect(ch chan<- prometheus.Metric) {
	if c.probes != nil {
		c.collectProbes(ch)
	}
	if c.health != nil {
		oneHot(ch, c.verdict, c.health(), healthStats)
	}
}

// collectProbes sends the series of at most max probes. Names that clean
// to one already sent are skipped: a registry refuses duplicate series.
func (c *probeCollector) collectProbes(ch chan<- prometheus.Metric) {
	seen := make(map[string]bool)
	for _, p := range c.probes() {
		n := cleanName(p.Name)
		if seen[n] || len(seen) >= c.max {
			continue
		}
		seen[n] = true
		oneHot(ch, c.state, p.State, probeStates, n)
		ch <- prometheus.MustNewConstMetric(c.latency, prometheus.GaugeValue,
			p.Latency.Seconds(), n)
		ch <- prometheus.MustNewConstMetric(c.fails, prometheus.GaugeValue,
			float64(max(p.Fails, 0)), n)
	}
}

// oneHot sends one gauge per state in set, 1 for cur and 0 for the rest,
// plus an "other" series at 1 when cur is outside set. The state label
// comes last, after labels.
func oneHot(ch chan<- prometheus.Metric, d *prometheus.Desc, cur string,
	set []string, labels ...string) {
	cur = pick(cur, set)
	emit := func(s string, v float64) {
		lv := append(labels[:len(labels):len(labels)], s)
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	for _, s := range set {
		emit(s, boolValue(s == cur))
	}
	if cur == Other {
		emit(Other, 1)
	}
}
