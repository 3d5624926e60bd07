package metrics

import "github.com/prometheus/client_golang/prometheus"

// EgressRecorder receives the egress's per-call measurements. Prometheus
// and Nop implement it; it is the egress handler's Metrics interface.
type EgressRecorder interface {
	// EgressCall records one finished egress request: outcome is how a
	// call that reached the upstream ended (the Exit* names) or why one
	// was refused before it (the Refused* names); status is what the app
	// got, 0 for nothing.
	EgressCall(outcome string, status int)
	// EgressRetry records a call sent again on another key (the Retry*
	// reasons).
	EgressRetry(reason string)
	// Tokens adds one call's token usage for model.
	Tokens(model string, prompt, completion int)
	// EgressRecordLost records a call whose usage record could not be
	// stored.
	EgressRecordLost()
	// OutboxDelivery records one delivery attempt to the platform: kind
	// "report" or "consume", result one of the delivery results
	// (outbox.Result values, and "refused" for a consume the platform's
	// ledger answered with accepted false).
	OutboxDelivery(kind, result string)
	// EgressShortfall adds the units a call cost beyond what its user's
	// balance could pay.
	EgressShortfall(units int64)
}

// Egress call outcomes: how a call ended (outbox.Exit values) or why it
// was refused before reaching the upstream (egress.Refused* values).
var egressOutcomes = []string{
	"complete", "client_gone", "upstream_error", "timeout", "shutdown",
	"bad_request", "too_large", "forbidden", "budget", "budget_unavailable",
	"backlog_full", "no_key", "shutting_down", "app_gone",
}

// Egress retry reasons (egress.RetryReason* values).
var egressRetryReasons = []string{"auth", "rate_limited", "server_error", "transport"}

// Outbox delivery kinds and results (outbox.Kind and outbox.Result).
var (
	deliveryKinds   = []string{"report", "consume"}
	deliveryResults = []string{
		"delivered", "retry", "unknown", "failed", "store_error", "refused"}
)

// egressCalls are the egress families registered by initEgressCalls.
type egressCalls struct {
	calls      *prometheus.CounterVec
	retries    *prometheus.CounterVec
	lost       prometheus.Counter
	deliveries *prometheus.CounterVec
	shortfall  prometheus.Counter
}

func (p *Prometheus) initEgressCalls() {
	e := &p.egress
	e.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("egress_calls_total"),
		Help: "Egress requests by outcome (how the upstream call ended, or why it " +
			"was refused) and the status class the app got.",
	}, []string{"outcome", "class"})
	e.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("egress_retries_total"),
		Help: "Egress calls sent again on another key, by reason.",
	}, []string{"reason"})
	e.lost = prometheus.NewCounter(prometheus.CounterOpts{
		Name: name("egress_records_lost_total"),
		Help: "Egress calls whose usage record could not be stored (never reported).",
	})
	e.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("egress_outbox_deliveries_total"),
		Help: "Outbox delivery attempts to the platform by kind and result.",
	}, []string{"kind", "result"})
	e.shortfall = prometheus.NewCounter(prometheus.CounterOpts{
		Name: name("egress_budget_shortfall_units_total"),
		Help: "Units egress calls cost beyond what their users' balances could pay " +
			"(charged only what was there).",
	})
	p.reg.MustRegister(e.calls, e.retries, e.lost, e.deliveries, e.shortfall)
	for _, r := range egressRetryReasons {
		e.retries.WithLabelValues(r)
	}
	for _, k := range deliveryKinds {
		for _, r := range deliveryResults {
			e.deliveries.WithLabelValues(k, r)
		}
	}
}

// EgressCall implements EgressRecorder.
func (p *Prometheus) EgressCall(outcome string, status int) {
	class := "none"
	if status != 0 {
		class = StatusClass(status)
	}
	p.egress.calls.WithLabelValues(pick(outcome, egressOutcomes), class).Inc()
}

// EgressRetry implements EgressRecorder.
func (p *Prometheus) EgressRetry(reason string) {
	p.egress.retries.WithLabelValues(pick(reason, egressRetryReasons)).Inc()
}

// EgressRecordLost implements EgressRecorder.
func (p *Prometheus) EgressRecordLost() { p.egress.lost.Inc() }

// OutboxDelivery implements EgressRecorder.
func (p *Prometheus) OutboxDelivery(kind, result string) {
	p.egress.deliveries.WithLabelValues(pick(kind, deliveryKinds),
		pick(result, deliveryResults)).Inc()
}

// EgressShortfall implements EgressRecorder. Negative counts are taken as 0.
func (p *Prometheus) EgressShortfall(units int64) {
	p.egress.shortfall.Add(float64(max(units, 0)))
}

var _ EgressRecorder = (*Prometheus)(nil)
var _ EgressRecorder = Nop{}

// EgressCall implements EgressRecorder.
func (Nop) EgressCall(string, int) {}

// EgressRetry implements EgressRecorder.
func (Nop) EgressRetry(string) {}

// EgressRecordLost implements EgressRecorder.
func (Nop) EgressRecordLost() {}

// OutboxDelivery implements EgressRecorder.
func (Nop) OutboxDelivery(string, string) {}

// EgressShortfall implements EgressRecorder.
func (Nop) EgressShortfall(int64) {}
