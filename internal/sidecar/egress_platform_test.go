package sidecar

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/outbox"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeopenai"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeplatform"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// leasedTOML leases keys from the platform and reports their usage.
const leasedTOML = `
[egress]
listen = "127.0.0.1:0"
upstream = %[1]q
key_source = "platform"

[egress.outbox]
path = %[2]q
`

// outageCalls is the number of egress calls of the outage test.
const outageCalls = 1000

// TestEgressReportsSurvivePlatformOutage: 1,000 calls with a leased key,
// made 16 at a time while the platform's report endpoint drops
// connections, answers 503, and records reports then drops or fails the
// answer, each for a stretch of the calls. Once it recovers, every call's
// report is on the platform exactly once (1,000 distinct records whose
// tokens are the calls' own) and the outbox is empty.
func TestEgressReportsSurvivePlatformOutage(t *testing.T) {
	t.Parallel()
	r := newEgressRig(t, rigConfig{
		egress: leasedTOML,
		fake:   fakeopenai.Options{Keys: []string{upstreamKey}},
	})
	r.plat.AddKey(fakeplatform.Key{ID: 11, AutomationID: rigAutomationID, APIKey: upstreamKey})
	fastDelivery(t, r.harness)
	r.client.Transport.(*http.Transport).MaxIdleConnsPerHost = 32
	r.run()
	r.waitReady()

	// The lease first, with the platform up.
	got := make([]chatUsage, outageCalls)
	r.outageCall(0, got)
	if l := r.plat.Leases(); len(l) != 1 || l[0].KeyID != 11 {
		t.Fatalf("leases %+v, want one of key 11", l)
	}

	// Then the report endpoint fails in four ways, for 150 calls each.
	phases := []struct {
		name  string
		calls int
		fault *fakeplatform.Fault
	}{
		{"healthy", 99, nil},
		{"connection dropped", 150, &fakeplatform.Fault{Down: true}},
		{"503", 150, &fakeplatform.Fault{Status: http.StatusServiceUnavailable}},
		{"applied, then dropped", 150, &fakeplatform.Fault{AfterApply: true, Down: true}},
		{"applied, then 500", 150,
			&fakeplatform.Fault{AfterApply: true, Status: http.StatusInternalServerError}},
		{"recovered", 300, nil},
	}
	next := 1
	for _, ph := range phases {
		before := r.plat.Calls(fakeplatform.EndpointReport)
		if ph.fault != nil {
			r.plat.SetFault(fakeplatform.EndpointReport, *ph.fault)
		} else {
			r.plat.ClearFault(fakeplatform.EndpointReport)
		}
		r.outageCalls(next, next+ph.calls, got)
		next += ph.calls
		if t.Failed() {
			t.FailNow()
		}
		if ph.fault != nil {
			// Make sure the fault met several deliveries before it ends.
			waitFor(t, waitLimit, "deliveries during "+ph.name, func() bool {
				return r.plat.Calls(fakeplatform.EndpointReport) >= before+5
			})
		}
	}
	if next != outageCalls {
		t.Fatalf("the phases made %d calls, want %d", next, outageCalls)
	}

	// Every report arrives once, and the outbox drains.
	waitFor(t, time.Minute, "1,000 reports", func() bool {
		return len(r.plat.Reports()) >= outageCalls
	})
	waitFor(t, waitLimit, "an empty outbox", func() bool {
		return r.outboxList("").Stats.Total == 0
	})
	r.checkReports(got)
	t.Logf("report endpoint: %d requests, %d replays answered",
		r.plat.Calls(fakeplatform.EndpointReport), r.plat.ReportReplays())
	if n := r.plat.ReportReplays(); n == 0 {
		t.Error("no report was replayed: the applied-then-failed faults were not exercised")
	}
	if n := r.plat.Calls(fakeplatform.EndpointReport); n <= outageCalls {
		t.Errorf("the report endpoint got %d requests: the outage caused no retry", n)
	}
	reqs := r.fake.Requests()
	if len(reqs) != outageCalls {
		t.Errorf("upstream got %d requests, want %d", len(reqs), outageCalls)
	}
	for i, q := range reqs {
		if q.Key != upstreamKey {
			t.Fatalf("upstream request %d carried another key than the leased one", i)
		}
	}
	if err := r.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	noSecretIn(t, "the log", r.logs.String(), upstreamKey, rigPlatformToken)
}

// TestEgressReportsSurviveOutageDefaultTimings is the outage on the
// deliverer the sidecar builds itself, with its default timings: the
// breaker opens on the first failures and stays open 30s, so the test
// takes over half a minute (skipped with -short). 60 calls, 20 of them
// while the report endpoint drops connections; every report arrives once.
func TestEgressReportsSurviveOutageDefaultTimings(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the outbox breaker's 30s")
	}
	t.Parallel()
	r := newEgressRig(t, rigConfig{
		egress: leasedTOML,
		fake:   fakeopenai.Options{Keys: []string{upstreamKey}},
	})
	r.plat.AddKey(fakeplatform.Key{ID: 11, AutomationID: rigAutomationID, APIKey: upstreamKey})
	r.run()
	r.waitReady()

	got := make([]chatUsage, 60)
	r.outageCalls(0, 20, got)
	r.plat.SetFault(fakeplatform.EndpointReport, fakeplatform.Fault{Down: true})
	before := r.plat.Calls(fakeplatform.EndpointReport)
	r.outageCalls(20, 40, got)
	waitFor(t, waitLimit, "deliveries during the outage", func() bool {
		return r.plat.Calls(fakeplatform.EndpointReport) > before
	})
	r.plat.ClearFault(fakeplatform.EndpointReport)
	r.outageCalls(40, 60, got)
	if t.Failed() {
		t.FailNow()
	}

	waitFor(t, 2*time.Minute, "60 reports", func() bool {
		return len(r.plat.Reports()) >= len(got)
	})
	waitFor(t, waitLimit, "an empty outbox", func() bool {
		return r.outboxList("").Stats.Total == 0
	})
	r.checkReports(got)
}

// outageCall makes egress call i and stores the usage the app saw in
// got[i]. Call i asks for i%9+1 completion words with a message of i%4+1
// words, so the calls' usages differ.
func (r *egressRig) outageCall(i int, got []chatUsage) {
	r.t.Helper()
	hdr := http.Header{fakeopenai.HeaderWords: {strconv.Itoa(i%9 + 1)}}
	a, err := r.try("POST", r.egressURL("/v1/chat/completions"), chatBody(i%4+1, false), hdr)
	if err != nil {
		r.t.Errorf("call %d: %v", i, err)
		return
	}
	if a.status != http.StatusOK {
		r.t.Errorf("call %d: %d %s", i, a.status, a.body)
		return
	}
	u, err := usageOf(a.body)
	if err != nil {
		r.t.Errorf("call %d: %v", i, err)
		return
	}
	if want := (chatUsage{int64(i%4 + 2), int64(i%9 + 1), int64(i%4 + i%9 + 3)}); u != want {
		r.t.Errorf("call %d: usage %+v, want %+v", i, u, want)
	}
	got[i] = u
}

// outageCalls makes calls from up to to, 16 at a time.
func (r *egressRig) outageCalls(from, to int, got []chatUsage) {
	work := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range work {
				r.outageCall(i, got)
			}
		})
	}
	for i := from; i < to; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
}

// checkReports compares the platform's reports with the usage the app
// saw: one report per call, each with its own Idempotency-Key, and the
// same multiset of (prompt, completion) tokens.
func (r *egressRig) checkReports(got []chatUsage) {
	t := r.t
	t.Helper()
	reps := r.plat.Reports()
	if len(reps) != len(got) {
		t.Errorf("platform recorded %d reports, want %d", len(reps), len(got))
	}
	keys := map[string]bool{}
	var seen, want []string
	for _, rep := range reps {
		if rep.IdempotencyKey == "" || keys[rep.IdempotencyKey] {
			t.Errorf("report %+v: its Idempotency-Key is empty or repeated", rep)
		}
		keys[rep.IdempotencyKey] = true
		if rep.KeyID != 11 || !rep.Success || rep.Model != "gpt-4o-mini" ||
			rep.TokensUsed != rep.PromptTokens+rep.CompletionTokens {
			t.Errorf("report %+v: want key 11, success, gpt-4o-mini, tokens = sum", rep)
		}
		seen = append(seen, fmt.Sprintf("%d+%d", rep.PromptTokens, rep.CompletionTokens))
	}
	for _, u := range got {
		want = append(want, fmt.Sprintf("%d+%d", u.PromptTokens, u.CompletionTokens))
	}
	slices.Sort(seen)
	slices.Sort(want)
	if !slices.Equal(seen, want) {
		t.Errorf("the reports' tokens differ from the calls' usage")
	}
}

// TestEgressLeaseExpiry: a call after its lease expired gets a new lease;
// while the platform is down a valid cached lease keeps serving, and
// once it expired the app gets 503 with an OpenAI-style JSON error that
// names no key.
func TestEgressLeaseExpiry(t *testing.T) {
	t.Parallel()
	const (
		keyA = "sk-lease-a-7d41c09e2b6f58a3"
		keyB = "sk-lease-b-1f8e6a2d90c4b735"
		ttlA = 2 * time.Second
		ttlB = 5 * time.Second
	)
	r := newEgressRig(t, rigConfig{
		egress: leasedTOML,
		fake:   fakeopenai.Options{Keys: []string{keyA, keyB}},
	})
	r.plat.AddKey(fakeplatform.Key{
		ID: 21, AutomationID: rigAutomationID, APIKey: keyA, TTL: ttlA,
	})
	r.run()
	r.waitReady()
	call := func(step string, want int, wantKey string) answer {
		t.Helper()
		n := len(r.fake.Requests())
		a := r.do("POST", r.egressURL("/v1/chat/completions"), chatBody(2, false), nil)
		if a.status != want {
			t.Fatalf("%s: got %d %s, want %d", step, a.status, a.body, want)
		}
		reqs := r.fake.Requests()
		switch {
		case wantKey == "" && len(reqs) != n:
			t.Fatalf("%s: the upstream was called", step)
		case wantKey != "" && (len(reqs) != n+1 || reqs[n].Key != wantKey):
			t.Fatalf("%s: the upstream did not get one call with the expected key", step)
		}
		return a
	}

	// A first call leases key A.
	call("first call", http.StatusOK, keyA)
	expA := r.leaseExpiry(21, ttlA)

	// The platform now offers only key B; after A's expiry a call leases it.
	r.plat.SetKeyDisabled(21, true)
	r.plat.AddKey(fakeplatform.Key{
		ID: 22, AutomationID: rigAutomationID, APIKey: keyB, TTL: ttlB,
	})
	sleepUntil(expA)
	call("after A expired", http.StatusOK, keyB)
	leases := r.plat.Leases()
	if len(leases) != 2 || leases[1].KeyID != 22 {
		t.Fatalf("leases %+v, want a second one of key 22", leases)
	}
	leasedB := leases[1].At
	expB := r.leaseExpiry(22, ttlB)

	// The platform goes down. Past the minimum interval between lease
	// requests, a call tries to renew B (it is within the refresh margin),
	// fails, and is served with the cached B.
	r.plat.SetFault(fakeplatform.EndpointLease, fakeplatform.Fault{Down: true})
	sleepUntil(leasedB.Add(1500 * time.Millisecond))
	if time.Until(expB) < time.Second {
		t.Fatalf("lease B ends at %v: too soon to test it while the platform is down", expB)
	}
	tried := r.plat.Calls(fakeplatform.EndpointLease)
	call("platform down, lease valid", http.StatusOK, keyB)
	if r.plat.Calls(fakeplatform.EndpointLease) == tried {
		t.Error("the sidecar did not try to renew the lease while the platform was down")
	}

	// B expires with the platform still down: 503, a clear JSON error.
	sleepUntil(expB)
	a := call("platform down, lease expired", http.StatusServiceUnavailable, "")
	var e struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(a.body), &e); err != nil ||
		e.Error.Code != "no_key_available" || e.Error.Message == "" {
		t.Errorf("503 body %q: want an OpenAI-style error with code no_key_available", a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("503 Content-Type %q, want application/json", ct)
	}
	noSecretIn(t, "the 503 answer", a.body, keyA, keyB, rigPlatformToken)
	if err := r.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	noSecretIn(t, "the log", r.logs.String(), keyA, keyB, rigPlatformToken)
}

// leaseExpiry returns when the platform's last lease of keyID ends, as
// its answer says: expires_at is RFC 3339 text, in whole seconds.
func (r *egressRig) leaseExpiry(keyID int64, ttl time.Duration) time.Time {
	r.t.Helper()
	leases := r.plat.Leases()
	for i := len(leases) - 1; i >= 0; i-- {
		if leases[i].KeyID == keyID {
			return leases[i].At.Add(ttl).Truncate(time.Second)
		}
	}
	r.t.Fatalf("the platform leased no key %d", keyID)
	return time.Time{}
}

// ledgerTOML charges calls to users, 1 unit per 10 tokens, and forwards
// the units to the platform's ledger.
const ledgerTOML = `
[egress]
listen = "127.0.0.1:0"
upstream = %[1]q
keys = ["env:ZS_OPENAI_KEY"]

[egress.budget]
enabled = true
tokens_per_unit = 10
reserve_tokens = 50
platform_ledger = true

[egress.outbox]
path = %[2]q
`

// TestEgressPlatformLedger: a call's units are forwarded to the
// platform's consume and the local balances follow the platform's answer.
// A consume applied by the platform whose answer is lost is parked as
// unknown, shown on admin /outbox, never sent again, and an admin can drop
// it.
func TestEgressPlatformLedger(t *testing.T) {
	t.Parallel()
	r := newEgressRig(t, rigConfig{
		egress: ledgerTOML,
		fake:   fakeopenai.Options{Keys: []string{upstreamKey}, Words: 6},
		env:    []string{"ZS_OPENAI_KEY=" + upstreamKey},
	})
	r.plat.AddAccount(fakeplatform.Account{
		UserAutomationID: rigUser, AutomationID: rigAutomationID, PaidTokens: 500,
	})
	r.run()
	r.waitReady()
	r.provision(rigUser, 100)
	call := func(step string) {
		t.Helper()
		a := r.do("POST", r.egressURL("/v1/chat/completions"), chatBody(2, false), userHeader())
		if a.status != http.StatusOK {
			t.Fatalf("%s: %d %s", step, a.status, a.body)
		}
	}
	localIs := func(demo, paid int64) func() bool {
		return func() bool {
			a, err := r.sc.ledger.Account(t.Context(), rigUser)
			return err == nil && a.DemoTokens == demo && a.PaidTokens == paid
		}
	}

	// Call 1: 3 + 6 tokens, 1 unit, forwarded; the local balances become
	// the platform's (no demo, 499 paid) instead of the local demo 99.
	call("call 1")
	waitFor(t, waitLimit, "local balances from the platform (0, 499)", localIs(0, 499))
	cons := r.plat.Consumes()
	if len(cons) != 1 || cons[0].Units != 1 || cons[0].UsageType != "openai_tokens" ||
		!cons[0].Accepted {
		t.Fatalf("platform consumes %+v, want one accepted of 1 openai_tokens unit", cons)
	}
	var meta struct {
		CallID           string `json:"call_id"`
		Model            string `json:"model"`
		PromptTokens     int64  `json:"prompt_tokens"`
		CompletionTokens int64  `json:"completion_tokens"`
	}
	if err := json.Unmarshal(cons[0].Meta, &meta); err != nil || len(meta.CallID) != 32 ||
		meta.Model != "gpt-4o-mini" || meta.PromptTokens != 3 || meta.CompletionTokens != 6 {
		t.Errorf("consume meta %s (err %v): want call_id, model and 3 + 6 tokens",
			cons[0].Meta, err)
	}

	// Call 2: the platform applies the consume, then drops the connection.
	r.plat.SetFault(fakeplatform.EndpointConsume,
		fakeplatform.Fault{AfterApply: true, Down: true, Times: 1})
	call("call 2")
	var parked outbox.Item
	waitFor(t, waitLimit, "an unknown consume on admin /outbox", func() bool {
		v := r.outboxList("?state=unknown")
		if len(v.Items) == 1 {
			parked = v.Items[0]
		}
		return len(v.Items) == 1
	})
	rec := parked.Record
	if parked.Kind != outbox.KindConsume || parked.Attempts != 1 || parked.LastError == "" ||
		rec.UserAutomationID != rigUser || rec.Units != 1 || rec.TotalTokens != 9 {
		t.Errorf("parked item %+v: want a consume of user 42, 1 unit, 1 attempt, an error",
			parked)
	}

	// The user buys tokens on the platform (1,000 paid). Call 3 goes
	// through: a later delivery round does not resend call 2's consume,
	// and the local balances take the platform's 999.
	r.plat.AddAccount(fakeplatform.Account{
		UserAutomationID: rigUser, AutomationID: rigAutomationID, PaidTokens: 1000,
	})
	call("call 3")
	waitFor(t, waitLimit, "local balances from the platform (0, 999)", localIs(0, 999))
	if n := r.consumesOf(rec.ID); n != 1 {
		t.Errorf("the platform got call 2's consume %d times, want 1", n)
	}
	if n := r.plat.Calls(fakeplatform.EndpointConsume); n != 3 {
		t.Errorf("consume endpoint got %d requests, want 3", n)
	}
	v := r.outboxList("")
	if v.Stats.Total != 1 || v.Stats.Consume.Unknown != 1 || v.Items[0].Attempts != 1 {
		t.Errorf("outbox %+v: want only the unknown item, still at 1 attempt", v)
	}
	if acc, _ := r.plat.Account(rigUser); acc.PaidTokens != 999 {
		t.Errorf("platform balance %d, want 999", acc.PaidTokens)
	}
	if settles := r.journalOf(rigUser)[metering.EntrySettle]; len(settles) != 3 {
		t.Errorf("journal: %d settle entries, want 3", len(settles))
	}

	// An admin drops the parked item; nothing more reaches the platform.
	a := r.do("POST", r.adminURL()+"/outbox/resolve",
		fmt.Sprintf(`{"id": %q, "action": "drop"}`, parked.ID), nil)
	if a.status != http.StatusOK {
		t.Fatalf("resolve: %d %s", a.status, a.body)
	}
	if v := r.outboxList(""); v.Stats.Total != 0 {
		t.Errorf("outbox after the drop: %+v, want empty", v)
	}
	if err := r.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if n := r.plat.Calls(fakeplatform.EndpointConsume); n != 3 {
		t.Errorf("consume endpoint got %d requests after the drop, want 3", n)
	}
}

// consumesOf counts the platform's consumes whose meta names callID.
func (r *egressRig) consumesOf(callID string) int {
	n := 0
	for _, c := range r.plat.Consumes() {
		if strings.Contains(string(c.Meta), `"call_id":"`+callID+`"`) {
			n++
		}
	}
	return n
}
