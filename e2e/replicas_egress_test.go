package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/e2etest"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/egress/outbox"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeopenai"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeplatform"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// TestReplicasShareEgressOutbox is issue 5's replica test for the egress.
// Three sidecar processes on one PostgreSQL schema share the egress outbox
// (a table of that schema) and deliver usage reports and ledger consumes
// to one fake platform, which leases them their key. A few hundred chat
// completions, each charged to one user and tagged with a model name of
// its own, are spread over the three egress ports while
//
//  1. one replica is SIGKILLed with a consume it sent unanswered (the
//     platform applied it) and calls in flight upstream;
//  2. the platform's report and consume endpoints answer 503 for a
//     stretch, then drop two of each after applying them;
//  3. the killed replica is restarted on the same configuration.
//
// Once the shared outbox has drained: every completed call has exactly
// one usage report, and a report was sent again only after an applied
// attempt's answer was lost; no consume reached the platform twice, so
// none was charged twice; every consume whose outcome its sender could
// not know is unknown, the same list through every replica's admin, and
// nothing else is left; the local balance never went negative.
func TestReplicasShareEgressOutbox(t *testing.T) {
	t.Parallel()
	start := time.Now()
	f := startEgressFleet(t)
	ctx := testContext(t)
	f.provision(ctx, t)

	results := f.runLoad(ctx, t)
	f.waitDrained(ctx, t)
	calls := checkFleetCalls(t, results)
	ids := checkFleetReports(t, f, calls)
	unknown := checkSharedOutbox(ctx, t, f, calls, ids)
	checkFleetConsumes(t, f, calls, ids, unknown)
	checkFleetLedger(t, f, calls, ids)
	t.Logf("%d calls completed, %d unknown consumes left; %s in all",
		len(calls), len(unknown), time.Since(start).Round(time.Millisecond))
}

// The fleet and its load.
const (
	fleetAutomation = int64(77)
	fleetUser       = int64(951)
	fleetKeyID      = int64(5101)
	fleetBalance    = int64(1_000_000) // paid tokens, locally and on the platform
	fleetCalls      = 300              // normal calls
	fleetHeld       = 3                // calls in flight upstream when the victim dies
	fleetKillAt     = 60               // normal calls sent before the kill starts
	fleetTail       = 60               // normal calls sent once the victim is back
	fleetWorkers    = 12
	fleetPace       = 20 * time.Millisecond // between two calls sent
	fleetWords      = 4
	heldPrefix      = "held-" // the model prefix the upstream holds
)

// egressFleet is the Python example app (it provisions the user) and
// three sidecars in front of it on one PostgreSQL schema, each with its
// egress on; the fake platform behind a tap that knows which replica
// sent what; the fake OpenAI upstream behind a gate.
type egressFleet struct {
	schema  *e2etest.PGSchema
	token   string
	config  string
	app     *e2etest.AppProcess
	plat    *fakeplatform.Platform
	tap     *platformTap
	upURL   string
	platURL string
	gate    *heldUpstream

	mu       sync.Mutex
	sidecars [replicaCount]*e2etest.Sidecar
	clients  [replicaCount]*e2etest.Platform // each replica's egress
	instance [replicaCount]int               // 0, or 1 once restarted
	up       [replicaCount]bool              // taking calls
	inflight [replicaCount]int               // normal calls under way
	results  []fleetResult                   // by call: the normal ones, then the held
}

func startEgressFleet(t *testing.T) *egressFleet {
	t.Helper()
	e2etest.PythonApp.Require(t)
	f := &egressFleet{schema: e2etest.NewPGSchema(t, "e2e_egress"), token: newToken(t)}
	leased := "sk-e2e-fleet-" + newToken(t)[:40]

	// The platform: one automation, its key and the user's account.
	f.plat = fakeplatform.New(fakeplatform.Options{})
	f.plat.AddAutomation(fleetAutomation, f.token)
	f.plat.AddKey(fakeplatform.Key{ID: fleetKeyID, AutomationID: fleetAutomation,
		APIKey: leased})
	f.plat.AddAccount(fakeplatform.Account{UserAutomationID: fleetUser,
		AutomationID: fleetAutomation, PaidTokens: fleetBalance})
	f.tap = newPlatformTap(f.plat.Handler())
	platSrv := httptest.NewServer(f.tap)
	t.Cleanup(platSrv.Close)
	t.Cleanup(f.tap.release) // runs first: held requests end
	f.platURL = platSrv.URL

	// The upstream, which holds the calls whose model says so.
	f.gate = newHeldUpstream(fakeopenai.New(fakeopenai.Options{Keys: []string{leased},
		Words: fleetWords}).Handler())
	upSrv := httptest.NewServer(f.gate)
	t.Cleanup(upSrv.Close)
	t.Cleanup(f.gate.release)
	f.upURL = upSrv.URL

	f.config = e2etest.WriteConfig(t, e2etest.PythonApp.ConfigPath(t), "", e2etest.Edit{
		Old:   "path = \"./data/python-app-ledger.db\"\n",
		New:   fmt.Sprintf(pgLedger, true),
		Count: 1,
	})
	f.app = e2etest.StartApp(t, e2etest.PythonApp, 0, "")
	for i := range replicaCount {
		f.startReplica(t, i)
	}
	return f
}

// replicaEnv is replica i's environment: the shared ledger, the egress
// on a port of its own, its upstream the fake, keys leased from the
// platform and consumes forwarded to it. Each replica reaches the
// platform under a path prefix of its own, which the tap strips.
func (f *egressFleet) replicaEnv(i int) []string {
	return []string{
		"ZIMMER_LEDGER_DSN=" + f.schema.DSN,
		"ZIMMER_SIDECAR_LOG__LEVEL=debug",
		"ZIMMER_SIDECAR_EGRESS__LISTEN=127.0.0.1:0",
		"ZIMMER_SIDECAR_EGRESS__UPSTREAM=" + f.upURL,
		"ZIMMER_SIDECAR_EGRESS__KEY_SOURCE=platform",
		"ZIMMER_SIDECAR_EGRESS__BUDGET__ENABLED=true",
		"ZIMMER_SIDECAR_EGRESS__BUDGET__TOKENS_PER_UNIT=1",
		"ZIMMER_SIDECAR_EGRESS__BUDGET__PLATFORM_LEDGER=true",
		fmt.Sprintf("ZIMMER_SIDECAR_AUTOMATION__ID=%d", fleetAutomation),
		"ZIMMER_SIDECAR_AUTOMATION__PLATFORM_URL=" + f.platURL + tapPrefix(i),
		"ZIMMER_SIDECAR_AUTOMATION__PLATFORM_TOKEN=env:ZIMMER_SERVICE_TOKEN",
	}
}

// startReplica starts replica i (again) and lets it take calls.
func (f *egressFleet) startReplica(t *testing.T, i int) {
	t.Helper()
	f.mu.Lock()
	n := 0
	if f.sidecars[i] != nil {
		n = f.instance[i] + 1
	}
	f.mu.Unlock()
	sc := e2etest.StartSidecar(t, e2etest.SidecarOptions{
		Config: f.config,
		AppURL: f.app.URL(),
		Token:  f.token,
		Env:    f.replicaEnv(i),
		Name:   fmt.Sprintf("replica-%d.%d", i, n),
	})
	client := e2etest.NewPlatform("http://"+egressAddr(t, sc), "")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sidecars[i], f.clients[i], f.instance[i], f.up[i] = sc, client, n, true
}

// sidecar returns replica i's current process.
func (f *egressFleet) sidecar(i int) *e2etest.Sidecar {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sidecars[i]
}

// provision creates the user through replica 0 and credits it through
// replica 1, both on the shared ledger.
func (f *egressFleet) provision(ctx context.Context, t *testing.T) {
	t.Helper()
	p := e2etest.NewPlatform(f.sidecar(0).PublicURL(), f.token)
	r, _, err := p.Provision(ctx, "/provision", e2etest.ProvisionBody{
		UserAutomationID: fleetUser, UserID: 42, DemoTokens: 0})
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("provision %d: %v %v", fleetUser, err, r)
	}
	a := e2etest.LedgerCredit(t, f.sidecar(1).AdminURL(), fleetUser, fleetBalance)
	if a.DemoTokens != 0 || a.PaidTokens != fleetBalance {
		t.Fatalf("account after the credit: %+v, want %d paid tokens", a, fleetBalance)
	}
}

// fleetResult is what one egress call got.
type fleetResult struct {
	model    string // names the call
	replica  int
	instance int
	held     bool // sent to the victim to be in flight when it dies
	status   int
	err      error
	usage    appUsage // from the answer
}

// sender names the process that served the call, as tapRequest.sender.
func (r fleetResult) sender() string {
	return fmt.Sprintf("replica %d.%d", r.replica, r.instance)
}

// fleetJob is one call to send.
type fleetJob struct {
	n        int
	replica  int
	instance int
	client   *e2etest.Platform
}

// runLoad sends every call, paced, through a pool of workers, and meanwhile
// kills the victim, breaks the platform for a stretch and restarts the
// victim (see TestReplicasShareEgressOutbox). It returns each call's
// result: the normal calls first, then the held ones.
func (f *egressFleet) runLoad(ctx context.Context, t *testing.T) []fleetResult {
	t.Helper()
	f.results = make([]fleetResult, fleetCalls+fleetHeld)
	loadCtx, stop := context.WithCancel(ctx)
	atKill, resume, loadDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(loadDone)
		f.dispatch(loadCtx, atKill, resume)
	}()
	t.Cleanup(func() { stop(); <-loadDone })

	select {
	case <-atKill:
	case <-loadDone:
		t.Fatal("the load ended before the kill")
	}
	f.killVictim(ctx, t)
	f.breakPlatform(ctx, t)
	close(resume)
	<-loadDone
	if ctx.Err() != nil {
		t.Fatalf("the load did not finish: %v", ctx.Err())
	}
	return f.snapshot()
}

// store records call n's result.
func (f *egressFleet) store(n int, r fleetResult) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.results[n] = r
}

// snapshot copies the results so far.
func (f *egressFleet) snapshot() []fleetResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.results)
}

// dispatch sends the normal calls: one every fleetPace, to the replicas
// that take calls in turn. It tells atKill when the kill is due and waits
// for resume before the tail.
func (f *egressFleet) dispatch(ctx context.Context, atKill chan<- struct{},
	resume <-chan struct{}) {
	jobs := make(chan fleetJob)
	var wg sync.WaitGroup
	for range fleetWorkers {
		wg.Go(func() {
			for j := range jobs {
				res := f.call(ctx, j, false)
				f.mu.Lock()
				f.results[j.n] = res
				f.inflight[j.replica]--
				f.mu.Unlock()
			}
		})
	}
	defer wg.Wait()
	defer close(jobs)

	tick := time.NewTicker(fleetPace)
	defer tick.Stop()
	for n := range fleetCalls {
		if n == fleetKillAt {
			close(atKill)
		}
		if n == fleetCalls-fleetTail {
			select {
			case <-resume:
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
		select {
		case jobs <- f.route(n):
		case <-ctx.Done():
			return
		}
	}
}

// route picks the replica of call n among those taking calls and counts
// the call as under way there.
func (f *egressFleet) route(n int) fleetJob {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := n % replicaCount
	for !f.up[i] {
		i = (i + 1) % replicaCount
	}
	f.inflight[i]++
	return fleetJob{n: n, replica: i, instance: f.instance[i], client: f.clients[i]}
}

// call sends one chat completion to a replica's egress, charged to the
// user, as an app would (a placeholder key).
func (f *egressFleet) call(ctx context.Context, j fleetJob, held bool) fleetResult {
	model := fmt.Sprintf("e2e-call-%03d", j.n)
	if held {
		model = heldPrefix + model
	}
	res := fleetResult{model: model, replica: j.replica, instance: j.instance, held: held}
	body := fmt.Sprintf(`{"model":%q,"max_tokens":16,`+
		`"messages":[{"role":"user","content":"call %d"}]}`, model, j.n)
	r, err := j.client.Do(ctx, e2etest.Request{Method: http.MethodPost,
		Path: "/v1/chat/completions", RawBody: body,
		Header: http.Header{
			"Authorization":  {"Bearer " + placeholderKey},
			egressUserHeader: {strconv.FormatInt(fleetUser, 10)},
			"Content-Type":   {"application/json"},
		}})
	if err != nil {
		res.err = err
		return res
	}
	res.status = r.Status
	var raw struct {
		Usage struct {
			Prompt     int64 `json:"prompt_tokens"`
			Completion int64 `json:"completion_tokens"`
			Total      int64 `json:"total_tokens"`
		} `json:"usage"`
		Model string `json:"model"`
	}
	switch {
	case r.Status != http.StatusOK:
		res.err = fmt.Errorf("answer %s", r)
	case json.Unmarshal(r.Body, &raw) != nil || raw.Model != model:
		res.err = fmt.Errorf("answer %s is not the model's completion", r)
	default:
		res.usage = appUsage{raw.Usage.Prompt, raw.Usage.Completion, raw.Usage.Total}
	}
	return res
}

// killVictim kills the victim at a moment that is the same in every
// run: a consume it sent is held by the tap after the platform applied
// it, fleetHeld of its calls are held upstream, and every other call it
// answered has been logged (so its record is in the outbox). It then
// stops holding.
func (f *egressFleet) killVictim(ctx context.Context, t *testing.T) {
	t.Helper()

	// 1. The victim's next consume is applied and left unanswered.
	f.tap.setHold(true)
	waitUntil(ctx, t, 15*time.Second, func() (bool, string) {
		n := f.tap.count(func(q tapRequest) bool { return q.held && !q.done })
		return n > 0, fmt.Sprintf("%d consumes of the victim held", n)
	})

	// 2. No more normal calls to the victim; some that the upstream holds.
	f.mu.Lock()
	f.up[replicaVictim] = false
	victim := fleetJob{replica: replicaVictim, client: f.clients[replicaVictim]}
	f.mu.Unlock()
	var held sync.WaitGroup
	for k := range fleetHeld {
		j := victim
		j.n = fleetCalls + k
		held.Go(func() { f.store(j.n, f.call(ctx, j, true)) })
	}
	t.Cleanup(held.Wait)

	// 3. Those are upstream; every other call it answered is logged.
	sc := f.sidecar(replicaVictim)
	waitUntil(ctx, t, 15*time.Second, func() (bool, string) {
		f.mu.Lock()
		busy := f.inflight[replicaVictim]
		f.mu.Unlock()
		if busy > 0 || f.gate.arrived() < fleetHeld {
			return false, fmt.Sprintf("%d calls to the victim under way, %d of %d held "+
				"upstream", busy, f.gate.arrived(), fleetHeld)
		}
		missing := unloggedCalls(sc, f.snapshot()[:fleetCalls])
		return len(missing) == 0, fmt.Sprintf("answered, not logged: %v", missing)
	})

	// 4. SIGKILL; the held requests end with the process.
	sc.Kill()
	f.tap.setHold(false)
	held.Wait()
}

// unloggedCalls returns the models of the calls the victim answered 200
// that its log does not show yet.
func unloggedCalls(sc *e2etest.Sidecar, results []fleetResult) []string {
	calls, _ := egressCalls(sc)
	logged := map[string]bool{}
	for _, c := range calls {
		logged[c.Model] = true
	}
	var missing []string
	for _, r := range results {
		if r.replica == replicaVictim && r.status == http.StatusOK && !logged[r.model] {
			missing = append(missing, r.model)
		}
	}
	return missing
}

// breakPlatform makes the platform's report and consume endpoints answer
// 503 until both survivors have met it often enough to open their
// breakers, then drop two requests of each after applying them; the
// victim is restarted meanwhile, and meets those with a fresh breaker.
func (f *egressFleet) breakPlatform(ctx context.Context, t *testing.T) {
	t.Helper()
	down := fakeplatform.Fault{Status: http.StatusServiceUnavailable}
	f.plat.SetFault(fakeplatform.EndpointReport, down)
	f.plat.SetFault(fakeplatform.EndpointConsume, down)
	waitUntil(ctx, t, 15*time.Second, func() (bool, string) {
		var met [replicaCount]int
		for i := range met {
			met[i] = f.tap.count(func(q tapRequest) bool {
				return q.replica == i && q.done && q.status == http.StatusServiceUnavailable
			})
		}
		return met[0] >= 5 && met[1] >= 5, fmt.Sprintf("survivors met %v 503s", met[:2])
	})

	drop := fakeplatform.Fault{Down: true, AfterApply: true, Times: 2}
	f.plat.SetFault(fakeplatform.EndpointReport, drop)
	f.plat.SetFault(fakeplatform.EndpointConsume, drop)
	f.tap.restarted(replicaVictim) // the first process is reaped
	f.startReplica(t, replicaVictim)
	waitUntil(ctx, t, 15*time.Second, func() (bool, string) {
		var dropped [2]int
		for k, ep := range []fakeplatform.Endpoint{fakeplatform.EndpointReport,
			fakeplatform.EndpointConsume} {
			dropped[k] = f.tap.count(func(q tapRequest) bool {
				return q.ep == ep && q.done && q.status == 0 && !q.held
			})
		}
		return dropped[0] >= 2 && dropped[1] >= 2,
			fmt.Sprintf("%d reports and %d consumes dropped", dropped[0], dropped[1])
	})
	f.plat.ClearFault(fakeplatform.EndpointReport)
	f.plat.ClearFault(fakeplatform.EndpointConsume)
}

// waitDrained waits until the shared outbox holds only unknown consumes:
// every report delivered, no consume pending (the victim's claims lapse
// after the deliverer's claim duration, 30 s) or failed.
func (f *egressFleet) waitDrained(ctx context.Context, t *testing.T) {
	t.Helper()
	waitUntil(ctx, t, 50*time.Second, func() (bool, string) {
		st, _, err := outboxList(ctx, f.sidecar(0).AdminURL())
		if err != nil {
			return false, err.Error()
		}
		busy := f.tap.count(func(q tapRequest) bool { return !q.done })
		return st.Report.Total() == 0 && st.Consume.Pending == 0 &&
				st.Consume.Failed == 0 && busy == 0,
			fmt.Sprintf("outbox %+v, %d platform requests under way", st, busy)
	})
}

// waitUntil is e2etest.Eventually bounded by ctx too.
func waitUntil(ctx context.Context, t *testing.T, d time.Duration,
	check func() (bool, string)) {
	t.Helper()
	e2etest.Eventually(t, d, 20*time.Millisecond, func() (bool, string) {
		if ctx.Err() != nil {
			return true, ""
		}
		return check()
	})
	if ctx.Err() != nil {
		t.Fatalf("waiting: %v", ctx.Err())
	}
}

// outboxList reads a replica's admin GET /outbox: the stats and up to
// 1000 items.
func outboxList(ctx context.Context, admin string) (outbox.Stats, []outbox.Item, error) {
	r, err := e2etest.NewPlatform(admin, "").Do(ctx, e2etest.Request{
		Method: http.MethodGet, Path: "/outbox?limit=1000"})
	if err != nil {
		return outbox.Stats{}, nil, err
	}
	var v struct {
		Stats outbox.Stats  `json:"stats"`
		Items []outbox.Item `json:"items"`
	}
	if r.Status != http.StatusOK {
		return outbox.Stats{}, nil, fmt.Errorf("GET /outbox: %s", r)
	}
	if err := r.JSON(&v); err != nil {
		return outbox.Stats{}, nil, err
	}
	return v.Stats, v.Items, nil
}

// checkFleetCalls checks the calls: every normal one answered 200 with
// usage, the held ones died with the victim, each instance answered some.
// It returns the completed calls by model.
func checkFleetCalls(t *testing.T, results []fleetResult) map[string]fleetResult {
	t.Helper()
	calls := map[string]fleetResult{}
	perInstance := map[[2]int]int{}
	for _, r := range results {
		switch {
		case r.held && r.err == nil:
			t.Errorf("call %s, held upstream, was answered %d through the killed victim",
				r.model, r.status)
		case r.held:
		case r.err != nil || r.usage.TotalTokens <= 0:
			t.Errorf("call %s to replica %d.%d: %v (usage %+v)", r.model, r.replica,
				r.instance, r.err, r.usage)
		default:
			calls[r.model] = r
			perInstance[[2]int{r.replica, r.instance}]++
		}
	}
	for _, ri := range [][2]int{{0, 0}, {1, 0}, {2, 0}, {2, 1}} {
		if perInstance[ri] == 0 {
			t.Errorf("replica %d.%d completed no call: the load was not spread", ri[0], ri[1])
		}
	}
	t.Logf("completed calls per replica.instance: %v", perInstance)
	return calls
}

// checkFleetReports checks the usage reports the platform recorded: one
// per completed call, with its usage and the leased key, under distinct
// Idempotency-Keys; none for another call. A report reached the platform
// again after an applied attempt only when that attempt's answer was
// lost (dropped by a fault, or its sender killed). It returns each
// completed call's id (its report's Idempotency-Key) by model.
func checkFleetReports(t *testing.T, f *egressFleet,
	calls map[string]fleetResult) map[string]string {
	t.Helper()
	ids := map[string]string{}
	for _, r := range f.plat.Reports() {
		c, ok := calls[r.Model]
		switch {
		case !ok:
			t.Errorf("a report of no completed call: %+v", r)
			continue
		case ids[r.Model] != "":
			t.Errorf("call %s reported twice: keys %s and %s", r.Model, ids[r.Model],
				r.IdempotencyKey)
		}
		ids[r.Model] = r.IdempotencyKey
		if r.KeyID != fleetKeyID || !r.Success || r.TokensUsed != c.usage.TotalTokens ||
			r.PromptTokens != c.usage.PromptTokens ||
			r.CompletionTokens != c.usage.CompletionTokens {
			t.Errorf("report %+v, want key %d and usage %+v", r, fleetKeyID, c.usage)
		}
	}
	distinct := map[string]bool{}
	for m := range calls {
		if ids[m] == "" {
			t.Errorf("completed call %s has no usage report", m)
		}
		distinct[ids[m]] = true
	}
	if len(distinct) != len(calls) {
		t.Errorf("%d distinct Idempotency-Keys for %d completed calls", len(distinct),
			len(calls))
	}

	// Each report sent again after an applied attempt: that attempt's
	// answer was lost.
	replays, dropped, killed := 0, 0, 0
	for id, reqs := range f.tap.byID(fakeplatform.EndpointReport) {
		for k, q := range reqs {
			if !q.applied() || k == len(reqs)-1 {
				continue
			}
			replays++
			switch {
			case q.status == 0:
				dropped++
			case q.diedWithSender():
				killed++
			default:
				t.Errorf("report %s was sent again after %s had it answered %d: %+v",
					id, q.sender(), q.status, reqs)
			}
		}
	}
	if got := f.plat.ReportReplays(); got != replays {
		t.Errorf("the platform answered %d replayed reports, the tap saw %d", got, replays)
	}
	t.Logf("reports replayed: %d after an answer dropped by a fault, %d after their "+
		"sender was killed", dropped, killed)
	return ids
}

// checkSharedOutbox checks what the drained outbox holds through every
// running replica's admin: the same unknown consumes of completed calls,
// nothing else. It returns them by call id.
func checkSharedOutbox(ctx context.Context, t *testing.T, f *egressFleet,
	calls map[string]fleetResult, ids map[string]string) map[string]outbox.Item {
	t.Helper()
	var first map[string]outbox.Item
	for i := range replicaCount {
		st, items, err := outboxList(ctx, f.sidecar(i).AdminURL())
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		got := map[string]outbox.Item{}
		for _, it := range items {
			got[it.Record.ID] = it
			if it.Kind != outbox.KindConsume || it.State != outbox.StateUnknown ||
				it.Claimed {
				t.Errorf("replica %d lists %s (%s, %s): want only unknown consumes", i,
					it.ID, it.Kind, it.State)
			}
			if c, ok := calls[it.Record.Model]; !ok || ids[c.model] != it.Record.ID {
				t.Errorf("unknown consume %s is of no completed call (%s)", it.ID,
					it.Record.Model)
			}
		}
		if st.Total != len(items) || st.Consume.Unknown != len(items) {
			t.Errorf("replica %d: stats %+v, %d items listed", i, st, len(items))
		}
		if first == nil {
			first = got
			continue
		}
		if !sameKeys(first, got) {
			t.Errorf("replica %d lists %d unknown consumes, replica 0 %d: want the same",
				i, len(got), len(first))
		}
	}
	return first
}

// checkFleetConsumes checks each completed call's consume against what
// reached the platform: at most one request each, never re-sent; applied
// and removed when its sender read a 200; unknown otherwise. Every way of
// ending unknown must have happened at least once.
func checkFleetConsumes(t *testing.T, f *egressFleet, calls map[string]fleetResult,
	ids map[string]string, unknown map[string]outbox.Item) {
	t.Helper()
	reqs := f.tap.byID(fakeplatform.EndpointConsume)
	applied := map[string][]fakeplatform.ConsumeRecord{}
	for _, c := range f.plat.Consumes() {
		var meta struct {
			CallID string `json:"call_id"`
		}
		_ = json.Unmarshal(c.Meta, &meta)
		applied[meta.CallID] = append(applied[meta.CallID], c)
	}
	ways := map[string]int{}
	shared := 0
	for m, c := range calls {
		id := ids[m]
		sent, done := reqs[id], applied[id]
		_, isUnknown := unknown[id]
		if len(sent) > 1 || len(done) > 1 {
			t.Errorf("consume of call %s reached the platform %d times, applied %d: %+v",
				m, len(sent), len(done), sent)
			continue
		}
		for _, d := range done {
			if !d.Accepted || d.Units != c.usage.TotalTokens {
				t.Errorf("consume of call %s applied as %+v, want %d units accepted", m, d,
					c.usage.TotalTokens)
			}
		}
		way := consumeEnd(sent, len(done) == 1)
		switch {
		case way == "delivered" && isUnknown && sent[0].diedWithSender():
			way = "answered, sender killed" // before it recorded the answer
		case way == "delivered" && isUnknown:
			t.Errorf("consume of call %s answered 200 to %s, yet unknown", m, sent[0].sender())
		case way == "delivered" && sent[0].sender() != c.sender():
			shared++
		case way != "delivered" && !isUnknown:
			t.Errorf("consume of call %s ended %q but is not unknown", m, way)
		}
		ways[way]++
	}
	for _, way := range []string{"delivered", "refused 503", "applied, dropped",
		"applied, sender killed"} {
		if ways[way] == 0 {
			t.Errorf("no consume ended %q: the run did not test it (%v)", way, ways)
		}
	}
	if shared == 0 {
		t.Errorf("every consume was delivered by the replica that served its call")
	}
	t.Logf("consumes by how they ended: %v; %d delivered by another replica than "+
		"the call's", ways, shared)
	a, _ := f.plat.Account(fleetUser)
	charged := int64(0)
	known := map[string]bool{}
	for _, id := range ids {
		known[id] = true
	}
	for id, d := range applied {
		if !known[id] {
			t.Errorf("the platform applied a consume of no completed call: %+v", d)
		}
		charged += d[0].Units
	}
	if a.PaidTokens != fleetBalance-charged {
		t.Errorf("platform balance %d, want %d less %d applied", a.PaidTokens, fleetBalance,
			charged)
	}
}

// consumeEnd names how a consume ended at the platform, from the requests
// that reached it (at most one) and whether it was applied.
func consumeEnd(sent []tapRequest, applied bool) string {
	switch {
	case len(sent) == 0:
		return "begun, never sent" // its sender died between the two
	case sent[0].held:
		return "applied, sender killed"
	case sent[0].status == http.StatusOK && applied:
		return "delivered"
	case sent[0].status == http.StatusServiceUnavailable && !applied:
		return "refused 503"
	case sent[0].status == 0 && applied:
		return "applied, dropped"
	}
	return fmt.Sprintf("status %d, applied %t", sent[0].status, applied)
}

// checkFleetLedger checks the shared local ledger: its balances never went
// negative, each completed call was reserved and settled at its usage
// once, and only the calls killed with the victim hold a reservation.
func checkFleetLedger(t *testing.T, f *egressFleet, calls map[string]fleetResult,
	ids map[string]string) {
	t.Helper()
	journal := e2etest.LedgerJournal(t, f.sidecar(0).AdminURL())
	var demo, paid int64
	kinds := map[string][]metering.EntryKind{}
	net := map[string]int64{}
	for _, e := range journal {
		if e.UserAutomationID != fleetUser {
			continue
		}
		demo, paid = demo+e.DemoDelta, paid+e.PaidDelta
		if demo < 0 || paid < 0 {
			t.Errorf("journal entry %d (%s) left demo %d paid %d", e.Seq, e.Kind, demo, paid)
		}
		if id, ok := strings.CutPrefix(e.IdempotencyKey, "egress "); ok {
			kinds[id] = append(kinds[id], e.Kind)
			net[id] += e.DemoDelta + e.PaidDelta
		}
	}
	for m, c := range calls {
		id := ids[m]
		if k := kinds[id]; !slices.Equal(k, []metering.EntryKind{metering.EntryDebit,
			metering.EntrySettle}) || net[id] != -c.usage.TotalTokens {
			t.Errorf("call %s: journal %v charging %d, want a debit and a settle "+
				"charging %d", m, k, -net[id], c.usage.TotalTokens)
		}
		delete(kinds, id)
	}
	for id, k := range kinds {
		if !slices.Equal(k, []metering.EntryKind{metering.EntryDebit}) {
			t.Errorf("egress call %s of no completed call: journal %v", id, k)
		}
	}
	if len(kinds) > fleetHeld {
		t.Errorf("%d reservations never settled, want at most the %d calls killed",
			len(kinds), fleetHeld)
	}
	a := e2etest.LedgerAccount(t, f.sidecar(1).AdminURL(), fleetUser)
	if a.DemoTokens < 0 || a.PaidTokens < 0 || a.DemoTokens != demo || a.PaidTokens != paid {
		t.Errorf("account %+v, journal sums demo %d paid %d", a, demo, paid)
	}
	t.Logf("local balance %d, platform's %d; %d reservations left by the killed calls",
		balance(a), platformPaid(f), len(kinds))
}

func platformPaid(f *egressFleet) int64 {
	a, _ := f.plat.Account(fleetUser)
	return a.PaidTokens
}

// sameKeys reports whether two maps have the same keys.
func sameKeys[V any](a, b map[string]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

// tapPrefix is the path prefix of replica i's platform URL.
func tapPrefix(i int) string { return fmt.Sprintf("/replica-%d", i) }

// tapRequest is one report or consume that reached the platform.
type tapRequest struct {
	replica, instance int
	ep                fakeplatform.Endpoint
	id                string // report: Idempotency-Key; consume: meta.call_id
	status            int    // the answer's; 0 when none was written
	held              bool   // applied, then held unanswered until its sender died
	done              bool
}

// applied reports whether the platform applied the request (only a
// fault's own 503 answers before applying).
func (q tapRequest) applied() bool { return q.status != http.StatusServiceUnavailable }

// diedWithSender reports whether the request came from the victim's
// first process, which may have died before it recorded the answer.
func (q tapRequest) diedWithSender() bool { return q.replica == replicaVictim && q.instance == 0 }

func (q tapRequest) sender() string { return fmt.Sprintf("replica %d.%d", q.replica, q.instance) }

// platformTap serves the fake platform under one path prefix per replica
// and records every report and consume with the replica and process that
// sent it and how it was answered. While holding, the victim's consumes
// are applied and then left unanswered until the victim goes away.
type platformTap struct {
	next http.Handler
	stop chan struct{}
	once sync.Once

	mu       sync.Mutex
	reqs     []tapRequest
	instance [replicaCount]int
	hold     bool
}

func newPlatformTap(next http.Handler) *platformTap {
	return &platformTap{next: next, stop: make(chan struct{})}
}

// release ends every held request; it is idempotent.
func (p *platformTap) release() { p.once.Do(func() { close(p.stop) }) }

func (p *platformTap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	replica, rest := -1, ""
	for i := range replicaCount {
		if s, ok := strings.CutPrefix(r.URL.Path, tapPrefix(i)+"/"); ok {
			replica, rest = i, "/"+s
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if replica < 0 || err != nil {
		http.Error(w, "no such replica", http.StatusNotFound)
		return
	}
	in := r.Clone(r.Context())
	in.URL.Path, in.URL.RawPath = rest, ""
	in.Body = io.NopCloser(bytes.NewReader(body))
	ep, id := tapClassify(in, body)
	if ep == fakeplatform.EndpointLease {
		p.next.ServeHTTP(w, in)
		return
	}
	i, hold := p.begin(replica, ep, id)
	if hold {
		rec := httptest.NewRecorder()
		p.next.ServeHTTP(rec, in)
		p.holdUnanswered(in.Context(), i)
		return
	}
	sw := &tapWriter{ResponseWriter: w}
	defer func() { p.end(i, sw.status) }() // also when a fault aborts the answer
	p.next.ServeHTTP(sw, in)
}

// tapClassify names a request's endpoint and the call it is about.
func tapClassify(r *http.Request, body []byte) (fakeplatform.Endpoint, string) {
	switch {
	case strings.HasSuffix(r.URL.Path, "/openai-usage"):
		return fakeplatform.EndpointReport, r.Header.Get("Idempotency-Key")
	case strings.HasSuffix(r.URL.Path, "/automation-usage/consume"):
		var v struct {
			Meta struct {
				CallID string `json:"call_id"`
			} `json:"meta"`
		}
		_ = json.Unmarshal(body, &v)
		return fakeplatform.EndpointConsume, v.Meta.CallID
	}
	return fakeplatform.EndpointLease, ""
}

// begin records a request; hold says to apply it and not answer.
func (p *platformTap) begin(replica int, ep fakeplatform.Endpoint, id string) (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	q := tapRequest{replica: replica, instance: p.instance[replica], ep: ep, id: id}
	q.held = p.hold && ep == fakeplatform.EndpointConsume && q.diedWithSender()
	p.reqs = append(p.reqs, q)
	return len(p.reqs) - 1, q.held
}

// holdUnanswered keeps held request i open until its sender goes away.
func (p *platformTap) holdUnanswered(ctx context.Context, i int) {
	select {
	case <-ctx.Done():
	case <-p.stop:
	}
	p.end(i, 0)
}

func (p *platformTap) end(i, status int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reqs[i].status, p.reqs[i].done = status, true
}

func (p *platformTap) setHold(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold = on
}

// restarted counts replica i's next requests as its next process's.
func (p *platformTap) restarted(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.instance[i]++
}

// count counts the requests that match.
func (p *platformTap) count(match func(tapRequest) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, q := range p.reqs {
		if match(q) {
			n++
		}
	}
	return n
}

// byID returns the requests to ep by the call they are about, in
// arrival order. Every request must have ended.
func (p *platformTap) byID(ep fakeplatform.Endpoint) map[string][]tapRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string][]tapRequest{}
	for _, q := range p.reqs {
		if q.ep == ep {
			out[q.id] = append(out[q.id], q)
		}
	}
	return out
}

// tapWriter notes the status an answer was written with.
type tapWriter struct {
	http.ResponseWriter
	status int
}

func (w *tapWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *tapWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// heldUpstream serves the fake OpenAI API, except that a call whose
// model starts with heldPrefix waits until its client goes away.
type heldUpstream struct {
	next http.Handler
	stop chan struct{}
	once sync.Once

	mu   sync.Mutex
	seen int // held calls that arrived
}

func newHeldUpstream(next http.Handler) *heldUpstream {
	return &heldUpstream{next: next, stop: make(chan struct{})}
}

// release ends every held call; it is idempotent.
func (u *heldUpstream) release() { u.once.Do(func() { close(u.stop) }) }

func (u *heldUpstream) arrived() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen
}

func (u *heldUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "body", http.StatusBadRequest)
		return
	}
	var v struct {
		Model string `json:"model"`
	}
	if json.Unmarshal(body, &v) == nil && strings.HasPrefix(v.Model, heldPrefix) {
		u.mu.Lock()
		u.seen++
		u.mu.Unlock()
		select {
		case <-r.Context().Done():
		case <-u.stop:
		}
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	u.next.ServeHTTP(w, r)
}
