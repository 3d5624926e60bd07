package metrics

import "testing"

// TestEgressCalls: egress outcomes, retries, lost records and outbox
// deliveries each land in their series; names outside the vocabularies
// count as "other"; a request answered nothing has class "none".
func TestEgressCalls(t *testing.T) {
	t.Parallel()
	p := New(Options{})
	fams := gather(t, p.Registry())
	wantValue(t, fams, "zimmer_sidecar_egress_retries_total", "reason=auth", 0)
	wantValue(t, fams, "zimmer_sidecar_egress_outbox_deliveries_total",
		"kind=consume,result=unknown", 0)

	p.EgressCall("complete", 200)
	p.EgressCall("complete", 200)
	p.EgressCall("budget", 402)
	p.EgressCall("client_gone", 0)
	p.EgressCall("made-up", 500)
	p.EgressRetry("rate_limited")
	p.EgressRetry("sideways")
	p.EgressRecordLost()
	p.OutboxDelivery("report", "delivered")
	p.OutboxDelivery("consume", "unknown")
	p.OutboxDelivery("fax", "lost")
	p.OutboxDelivery("consume", "refused")
	p.EgressShortfall(191)
	p.EgressShortfall(-4)

	fams = gather(t, p.Registry())
	const calls = "zimmer_sidecar_egress_calls_total"
	wantValue(t, fams, calls, "class=2xx,outcome=complete", 2)
	wantValue(t, fams, calls, "class=4xx,outcome=budget", 1)
	wantValue(t, fams, calls, "class=none,outcome=client_gone", 1)
	wantValue(t, fams, calls, "class=5xx,outcome=other", 1)
	wantValue(t, fams, "zimmer_sidecar_egress_retries_total", "reason=rate_limited", 1)
	wantValue(t, fams, "zimmer_sidecar_egress_retries_total", "reason=other", 1)
	wantValue(t, fams, "zimmer_sidecar_egress_records_lost_total", "", 1)
	const del = "zimmer_sidecar_egress_outbox_deliveries_total"
	wantValue(t, fams, del, "kind=report,result=delivered", 1)
	wantValue(t, fams, del, "kind=consume,result=unknown", 1)
	wantValue(t, fams, del, "kind=other,result=other", 1)
	wantValue(t, fams, del, "kind=consume,result=refused", 1)
	wantValue(t, fams, "zimmer_sidecar_egress_budget_shortfall_units_total", "", 191)
}
