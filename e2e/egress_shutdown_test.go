package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/e2etest"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/outbox"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeopenai"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeplatform"
)

// Messages the sidecar must not log in a clean egress drain.
var drainFailures = map[string]bool{
	"egress call: usage record lost": true,
	"egress budget settle failed":    true,
	"egress budget release failed":   true,
	"egress finalisation panic":      true,
	"egress handler panic":           true,
}

// TestShutdownDrainsEgressStream is case C7 on the egress side, with the
// native-sidecar order of issue #6: the Node app streams an assistant
// answer through the sidecar's egress (the key leased from a fake
// platform), held by the upstream after its first piece, when SIGTERM
// reaches the sidecar. Readiness fails at once; a proxied request that
// arrives in the same second is served (listen.shutdown_delay, as a
// Kubernetes deployment sets it); the egress still serves a new call
// during the drain; the stream then runs for seconds more and completes
// fully, as does the proxied request; both egress calls are metered
// exactly and settled on the ledger; the process exits 0. Their usage
// reports are delivered to the platform before the exit or, while the
// platform's report endpoint fails, kept in the outbox file and delivered
// exactly once by the next start.
func TestShutdownDrainsEgressStream(t *testing.T) {
	for _, name := range []string{"delivered", "kept"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testShutdownDrainsEgress(t, name == "kept")
		})
	}
}

func testShutdownDrainsEgress(t *testing.T, platformFails bool) {
	const (
		words        = 8
		user         = int64(701)
		automationID = int64(77)
		keyID        = int64(4101)
		eventDelay   = 350 * time.Millisecond // the rest lasts ~3.5 s
	)
	token := newToken(t)
	leased := "sk-e2e-leased-" + newToken(t)[:40]

	// The platform leases one key; its report endpoint may be failing.
	plat := fakeplatform.New(fakeplatform.Options{})
	plat.AddAutomation(automationID, token)
	plat.AddKey(fakeplatform.Key{ID: keyID, AutomationID: automationID, APIKey: leased})
	if platformFails {
		plat.SetFault(fakeplatform.EndpointReport,
			fakeplatform.Fault{Status: http.StatusServiceUnavailable})
	}
	platSrv := httptest.NewServer(plat.Handler())
	t.Cleanup(platSrv.Close)

	fake := fakeopenai.New(fakeopenai.Options{Keys: []string{leased}, Words: words,
		Stream: fakeopenai.StreamControl{Delay: eventDelay}})
	es := startEgressStack(t, egressSetup{upstream: fake, token: token, env: []string{
		"ZIMMER_SIDECAR_EGRESS__KEY_SOURCE=platform",
		fmt.Sprintf("ZIMMER_SIDECAR_AUTOMATION__ID=%d", automationID),
		"ZIMMER_SIDECAR_AUTOMATION__PLATFORM_URL=" + platSrv.URL,
		"ZIMMER_SIDECAR_AUTOMATION__PLATFORM_TOKEN=env:ZIMMER_SERVICE_TOKEN",
		"ZIMMER_SIDECAR_LISTEN__SHUTDOWN_GRACE=15s",
		"ZIMMER_SIDECAR_LISTEN__SHUTDOWN_DELAY=2s",
	}})
	ctx := testContext(t)
	p := es.platform
	provision(ctx, t, es.stack, user, 5000)
	mustStatus(ctx, t, p, es.tc.addDoc(user, 1), http.StatusCreated)
	start := balance(e2etest.LedgerAccount(t, es.sidecar.AdminURL(), user))

	// 1. The app's streamed answer is under way, held after its first
	// piece.
	hold := es.gate.Arm(t)
	st, err := openPostStream(ctx, p.Base, assistantRequest(user, "anything green?", true),
		es.token)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	if first, err := nextWithin(st, eventWait); err != nil || first.data != `{"text":"w1"}` {
		t.Fatalf("first event: %+v, %v", first, err)
	}

	// 2. SIGTERM; readiness fails at once.
	if err := es.sidecar.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	signalled := time.Now()
	admin := e2etest.NewPlatform(es.sidecar.AdminURL(), "")
	e2etest.Eventually(t, 5*time.Second, 10*time.Millisecond, func() (bool, string) {
		r, err := admin.Do(ctx, e2etest.Request{Method: http.MethodGet, Path: "/readyz"})
		if err != nil {
			return false, err.Error()
		}
		var v struct {
			Status string `json:"status"`
		}
		_ = json.Unmarshal(r.Body, &v)
		return r.Status == http.StatusServiceUnavailable && v.Status == "shutting_down",
			"readyz: " + r.String()
	})

	// 3. A proxied request arrives in the same second (the platform has
	// not seen the readiness change yet): shutdown_delay serves it.
	slowDone := make(chan result, 1)
	go func() {
		r, err := p.Do(ctx, e2etest.Request{Method: http.MethodGet, Path: es.tc.slow(1500)})
		slowDone <- result{r, err}
	}()
	t.Logf("proxied request sent %s after SIGTERM",
		time.Since(signalled).Round(time.Millisecond))

	// 4. The egress still serves the app during the drain: a new call
	// on a new connection.
	r, err := directCall(ctx, es.egress, user, `{"model":"gpt-4o-mini","max_tokens":20,`+
		`"messages":[{"role":"user","content":"still there?"}]}`)
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("egress call during the drain: %v %v", r, err)
	}
	select {
	case <-es.sidecar.Exited():
		t.Fatal("the sidecar exited while the stream was held")
	default:
	}

	// 5. The stream goes on for seconds and completes fully.
	hold.Release()
	rest, err := st.all()
	if err != nil {
		t.Fatalf("stream across the shutdown: %v", err)
	}
	streamEnded := time.Now()
	text, end := assistantStream(t, rest)
	if want := fakeopenai.Text(words)[len("w1"):]; text != want || !end.Complete ||
		end.FinishReason != "stop" || end.Usage == nil {
		t.Errorf("stream after the first piece: %q, end %+v; want %q, complete", text,
			end, want)
	}
	if res := <-slowDone; res.err != nil || res.resp.Status != http.StatusOK {
		t.Errorf("proxied request across the shutdown: %v, %v", res.resp, res.err)
	}

	// 6. A clean exit, after the stream.
	code, err := es.sidecar.Wait(30 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("sidecar exit: code %d, %v", code, err)
	}
	if _, err := es.sidecar.WaitLine(0, func(l e2etest.Line) bool {
		var v struct{ Msg string }
		return json.Unmarshal([]byte(l.Text), &v) == nil && v.Msg == "drained"
	}); err != nil {
		t.Errorf("no \"drained\" log line: %v", err)
	}
	t.Logf("SIGTERM to end of stream %s", streamEnded.Sub(signalled).Round(time.Millisecond))
	for _, l := range es.sidecar.Lines() {
		var v struct{ Msg string }
		if json.Unmarshal([]byte(l.Text), &v) == nil && drainFailures[v.Msg] {
			t.Errorf("drain failure logged: %s", l.Text)
		}
	}

	// 7. Both calls were metered exactly, with the leased key.
	reqs := fake.Requests()
	if len(reqs) != 2 {
		t.Fatalf("upstream got %d requests, want 2", len(reqs))
	}
	calls, lost := egressCalls(es.sidecar)
	if len(calls) != 2 || lost != 0 {
		t.Fatalf("%d egress call lines (%d lost), want 2: %+v", len(calls), lost, calls)
	}
	// The direct call ended first: the stream was held meanwhile and ran
	// for seconds after it.
	want := map[string]wantUsage{
		calls[0].CallID: upstreamUsage(t, reqs[1], words),
		calls[1].CallID: upstreamUsage(t, reqs[0], words),
	}
	checkCall(t, calls[0], user, keyID, want[calls[0].CallID])
	checkCall(t, calls[1], user, keyID, want[calls[1].CallID])
	for _, rec := range reqs {
		checkUpstreamRequest(t, rec, leased, es.token)
	}
	if u := end.Usage; u == nil || u.TotalTokens != want[calls[1].CallID].total() {
		t.Errorf("the app was told %+v, the sidecar metered %+v", u, want[calls[1].CallID])
	}

	// 8. The reports: delivered before the exit, or kept on disk.
	if platformFails {
		checkKeptReports(t, es.outbox, calls)
		if n := len(plat.Reports()); n != 0 {
			t.Errorf("the failing platform recorded %d reports", n)
		}
		plat.ClearFault(fakeplatform.EndpointReport)
	} else {
		checkReports(t, plat, calls, want, keyID)
		checkKeptReports(t, es.outbox, nil)
	}

	// 9. The next start: the ledger holds both settlements, and the
	// reports reach the platform exactly once.
	es.startSidecar(t, es.env...)
	a := e2etest.LedgerAccount(t, es.sidecar.AdminURL(), user)
	charged := want[calls[0].CallID].total() + want[calls[1].CallID].total()
	if balance(a) != start-charged {
		t.Errorf("reopened ledger: %+v, want a balance of %d", a, start-charged)
	}
	checkJournal(t, es.sidecar.AdminURL(), user, calls)
	e2etest.Eventually(t, 20*time.Second, 50*time.Millisecond, func() (bool, string) {
		n := len(plat.Reports())
		return n >= 2, fmt.Sprintf("%d reports delivered", n)
	})
	checkReports(t, plat, calls, want, keyID)
	admin = e2etest.NewPlatform(es.sidecar.AdminURL(), "")
	e2etest.Eventually(t, 10*time.Second, 50*time.Millisecond, func() (bool, string) {
		r, err := admin.Do(ctx, e2etest.Request{Method: http.MethodGet, Path: "/outbox"})
		if err != nil {
			return false, err.Error()
		}
		var v struct {
			Stats outbox.Stats `json:"stats"`
		}
		_ = json.Unmarshal(r.Body, &v)
		return r.Status == http.StatusOK && v.Stats.Total == 0, "outbox: " + r.String()
	})
	if err := es.sidecar.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := es.sidecar.Wait(30 * time.Second); err != nil || code != 0 {
		t.Errorf("second sidecar exit: code %d, %v", code, err)
	}
	frags := secretFragments(leased)
	for _, l := range es.sidecar.Lines() {
		if f := containsAny(l.Text, frags); f != "" {
			t.Errorf("sidecar line holds part of the leased key: %s", l.Text)
		}
	}
	checkNoGuardRefusal(t, es.app)
}

// checkReports checks that the platform recorded exactly one report per
// call, under the call's id, with its exact usage and the leased key.
func checkReports(t *testing.T, plat *fakeplatform.Platform, calls []egressCall,
	want map[string]wantUsage, keyID int64) {
	t.Helper()
	reports := plat.Reports()
	if len(reports) != len(calls) {
		t.Errorf("platform recorded %d reports, want %d: %+v", len(reports), len(calls),
			reports)
	}
	seen := map[string]int{}
	for _, r := range reports {
		seen[r.IdempotencyKey]++
		u, ok := want[r.IdempotencyKey]
		if !ok {
			t.Errorf("a report of no call: %+v", r)
			continue
		}
		if r.KeyID != keyID || r.TokensUsed != u.total() || r.PromptTokens != u.prompt ||
			r.CompletionTokens != u.completion || !r.Success || r.Model != "gpt-4o-mini" {
			t.Errorf("report %+v, want key %d and usage %+v", r, keyID, u)
		}
	}
	for _, c := range calls {
		if seen[c.CallID] != 1 {
			t.Errorf("call %s reported %d times, want once", c.CallID, seen[c.CallID])
		}
	}
}

// checkKeptReports opens the outbox file of a stopped sidecar and checks
// that it holds exactly a pending report for each of calls.
func checkKeptReports(t *testing.T, path string, calls []egressCall) {
	t.Helper()
	st, err := outbox.OpenBolt(path, outbox.BoltOptions{Max: 1000})
	if err != nil {
		t.Fatalf("open the outbox after the exit: %v", err)
	}
	defer st.Close()
	items, err := st.List(context.Background(), outbox.Filter{})
	if err != nil {
		t.Fatalf("list the outbox: %v", err)
	}
	kept := map[string]outbox.Item{}
	for _, it := range items {
		kept[it.ID] = it
	}
	for _, c := range calls {
		it, ok := kept[outbox.ItemID(outbox.KindReport, c.CallID)]
		if !ok {
			t.Errorf("call %s: no report kept in the outbox: %+v", c.CallID, items)
			continue
		}
		if it.State != outbox.StatePending || it.Record.TotalTokens != c.TotalTokens ||
			!it.Record.Leased {
			t.Errorf("kept report %+v, want pending with %d tokens", it, c.TotalTokens)
		}
	}
	if len(items) != len(calls) {
		t.Errorf("the outbox holds %d items after the exit, want %d: %+v", len(items),
			len(calls), items)
	}
}
