package sidecar

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeopenai"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeplatform"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// leasedBudgetTOML leases keys, reports their usage and charges users one
// unit per token.
const leasedBudgetTOML = `
[egress]
listen = "127.0.0.1:0"
upstream = %[1]q
key_source = "platform"

[egress.budget]
enabled = true
tokens_per_unit = 1
reserve_tokens = 64 # above the 30-word answer: the egress caps uncapped calls at it

[egress.outbox]
path = %[2]q
`

// TestEgressAppGoneMidStreamChargedOnce: an app reads the first event of
// a 30-word stream and hangs up. The sidecar drains the rest from the
// upstream, and the call is charged once with its full usage: one debit
// and one settle in the journal, one usage report on the platform.
func TestEgressAppGoneMidStreamChargedOnce(t *testing.T) {
	t.Parallel()
	const words = 30
	r := newEgressRig(t, rigConfig{
		egress: leasedBudgetTOML,
		fake:   fakeopenai.Options{Keys: []string{upstreamKey}},
	})
	r.plat.AddKey(fakeplatform.Key{ID: 31, AutomationID: rigAutomationID, APIKey: upstreamKey})
	r.run()
	r.waitReady()
	r.provision(rigUser, 1000)

	// The app reads the first content event, then goes away (the
	// client_gone metric below shows it left before the end).
	body := chatBody(2, true)
	prompt, err := fakeopenai.PromptTokens([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	total := int64(prompt + words)
	r.readFirstEventThenHangUp(body, userHeader(
		fakeopenai.HeaderWords, "30", fakeopenai.HeaderDelay, "20ms"))

	// One report with the full usage, once the outbox drained.
	waitFor(t, waitLimit, "a usage report", func() bool { return len(r.plat.Reports()) > 0 })
	waitFor(t, waitLimit, "an empty outbox", func() bool {
		return r.outboxList("").Stats.Total == 0
	})
	reps := r.plat.Reports()
	if len(reps) != 1 || reps[0].TokensUsed != total || reps[0].CompletionTokens != words ||
		reps[0].PromptTokens != int64(prompt) || reps[0].KeyID != 31 {
		t.Fatalf("reports %+v, want one of %d tokens (%d + %d) for key 31",
			reps, total, prompt, words)
	}

	// One debit, one settle, no refund; the balance lost the full usage.
	j := r.journalOf(rigUser)
	if len(j[metering.EntryDebit]) != 1 || len(j[metering.EntrySettle]) != 1 ||
		len(j[metering.EntryRefund]) != 0 {
		t.Errorf("journal: %d debits, %d settles, %d refunds; want 1, 1, 0",
			len(j[metering.EntryDebit]), len(j[metering.EntrySettle]),
			len(j[metering.EntryRefund]))
	}
	acc, err := r.sc.ledger.Account(t.Context(), rigUser)
	if err != nil || acc.DemoTokens != 1000-total {
		t.Errorf("balance %+v (err %v), want %d demo tokens", acc, err, 1000-total)
	}
	m := r.do("GET", r.adminURL()+"/metrics", "", nil)
	if !strings.Contains(m.body,
		`zimmer_sidecar_egress_calls_total{class="2xx",outcome="client_gone"} 1`) {
		t.Error("metrics lack one client_gone egress call")
	}

	// A shutdown flushes nothing more: still one report.
	if err := r.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if n := len(r.plat.Reports()); n != 1 {
		t.Errorf("after the shutdown the platform has %d reports, want 1", n)
	}
	if n := r.plat.Calls(fakeplatform.EndpointReport); n != 1 {
		t.Errorf("the report endpoint got %d requests, want 1", n)
	}
}

// readFirstEventThenHangUp streams body through the egress, reads up to
// the first event with content and closes the connection.
func (r *egressRig) readFirstEventThenHangUp(body string, hdr http.Header) {
	r.t.Helper()
	ctx, cancel := context.WithCancel(r.t.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST",
		r.egressURL("/v1/chat/completions"), strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header = hdr.Clone()
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		r.t.Fatalf("stream: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.t.Fatalf("stream: status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") && strings.Contains(sc.Text(), `"content":"w1"`) {
			cancel() // hang up: the transport closes the connection
			return
		}
	}
	r.t.Fatalf("the stream ended before any content (err %v)", sc.Err())
}
