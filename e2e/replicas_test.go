package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/config"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/e2etest"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering/postgres"
	"github.com/zimmer-sidecar/zimmer-sidecar/internal/zimmer"
)

// TestReplicasSharePostgresLedger is issue 5's replica test: three
// sidecar processes on one PostgreSQL schema take 600 concurrent consumes
// on the same four accounts, spread over all three, with keys replayed
// across replicas; one replica is SIGKILLed halfway. No account may
// overspend or go negative, every answer a client received must be the
// ledger's truth, no key may be debited twice, and the survivors must
// keep answering. It runs twice: once the first replica migrates the
// schema at start, once `zimmer-sidecar migrate` does and the replicas
// only check the version.
func TestReplicasSharePostgresLedger(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		migrateCommand bool
	}{
		{name: "migrate-at-start"},
		{name: "migrate-command", migrateCommand: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := startReplicas(t, tc.migrateCommand)
			ctx := testContext(t)
			testReplicaStorm(ctx, t, rs)
		})
	}
}

// The storm. Demand (about 450 requests of 1-3 units) is far above what
// the accounts hold, so the ledger runs dry and overspending is possible.
const (
	replicaCount    = 3
	replicaVictim   = 2 // the replica that is killed
	replicaAccounts = 4
	replicaFirstID  = 901
	replicaDemo     = 10
	replicaCredit   = 100
	replicaUnkeyed  = 200 // requests without a key, one call each
	replicaSingles  = 150 // keys sent once
	replicaDoubles  = 50  // keys sent to two replicas
	replicaTriples  = 50  // keys sent to all three replicas
	replicaBursts   = 20  // of the triples, sent back to back
	replicaWorkers  = 24
	replicaKillAt   = 200 // answers received before the victim is killed
)

// pgLedger replaces the example's bolt ledger path; %t is ledger.migrate.
const pgLedger = `backend = "postgres"
dsn = "env:ZIMMER_LEDGER_DSN"
max_conns = 4
migrate = %t
`

// replicaSet is the Python example app and three sidecars in front of it,
// all on one PostgreSQL schema.
type replicaSet struct {
	schema   *e2etest.PGSchema
	token    string
	config   string // the sidecars' TOML file
	env      []string
	rule     metering.DemoRule
	consume  string // the path of usage/consume
	provide  string // the path of provision
	app      *e2etest.AppProcess
	sidecars []*e2etest.Sidecar
	clients  []*e2etest.Platform
}

// startReplicas starts the app and three sidecars on a fresh schema. With
// migrateCommand the schema is migrated by the CLI first (after showing
// that a sidecar told not to migrate refuses an empty schema) and every
// replica runs with ledger.migrate = false; otherwise the first replica
// migrates at start and the others find the schema current.
func startReplicas(t *testing.T, migrateCommand bool) *replicaSet {
	t.Helper()
	e2etest.PythonApp.Require(t)
	rs := &replicaSet{schema: e2etest.NewPGSchema(t, "e2e_replicas"), token: newToken(t)}
	rs.config = e2etest.WriteConfig(t, e2etest.PythonApp.ConfigPath(t), "", e2etest.Edit{
		Old:   "path = \"./data/python-app-ledger.db\"\n",
		New:   fmt.Sprintf(pgLedger, !migrateCommand),
		Count: 1,
	})
	rs.env = []string{"ZIMMER_LEDGER_DSN=" + rs.schema.DSN}
	cfg, err := config.Load(rs.config, append([]string{"ZIMMER_SERVICE_TOKEN=" + rs.token},
		rs.env...))
	if err != nil {
		t.Fatalf("load %s: %v", rs.config, err)
	}
	rs.rule = metering.DemoRule(cfg.Ledger.DemoRule)
	rs.consume = endpoint(cfg.Zimmer.Prefixes[0], "usage/consume")
	rs.provide = endpoint(cfg.Zimmer.Prefixes[0], "provision")
	rs.app = e2etest.StartApp(t, e2etest.PythonApp, 0, "")

	if v := rs.schema.Version(t); v != 0 {
		t.Fatalf("fresh schema at version %d, want 0", v)
	}
	if migrateCommand {
		refuseUnmigrated(t, rs)
		out := e2etest.MigrateLedger(t, rs.config,
			append([]string{"ZIMMER_SERVICE_TOKEN=" + rs.token}, rs.env...)...)
		want := fmt.Sprintf("schema version %d", postgres.SchemaVersion())
		if !strings.Contains(out, want) {
			t.Fatalf("migrate printed %q, want it to contain %q", out, want)
		}
	}
	for i := range replicaCount {
		s := e2etest.StartSidecar(t, e2etest.SidecarOptions{
			Config: rs.config,
			AppURL: rs.app.URL(),
			Token:  rs.token,
			Env:    rs.env,
			Name:   fmt.Sprintf("replica-%d", i),
		})
		rs.sidecars = append(rs.sidecars, s)
		rs.clients = append(rs.clients, e2etest.NewPlatform(s.PublicURL(), rs.token))
		if v := rs.schema.Version(t); v != postgres.SchemaVersion() {
			t.Fatalf("after replica %d started: schema version %d, want %d",
				i, v, postgres.SchemaVersion())
		}
	}
	return rs
}

// refuseUnmigrated starts a sidecar with ledger.migrate = false on the
// still empty schema and checks that it exits with an error that names
// the migrate command.
func refuseUnmigrated(t *testing.T, rs *replicaSet) {
	t.Helper()
	p := e2etest.Start(t, e2etest.Spec{
		Name: "unmigrated",
		Path: e2etest.Binary(t),
		Args: []string{"run", "-config", rs.config},
		Env: append([]string{
			"ZIMMER_SIDECAR_LISTEN__PUBLIC=127.0.0.1:0",
			"ZIMMER_SIDECAR_LISTEN__ADMIN=127.0.0.1:0",
			"ZIMMER_SIDECAR_APP__URL=" + rs.app.URL(),
			"ZIMMER_SERVICE_TOKEN=" + rs.token,
		}, rs.env...),
	})
	code, err := p.Wait(30 * time.Second)
	if err != nil {
		t.Fatalf("sidecar on an unmigrated schema: %v", err)
	}
	const want = "run the migrate command"
	if code == 0 || !strings.Contains(p.Output(), want) {
		t.Fatalf("sidecar on an unmigrated schema: exit code %d, output %q; "+
			"want an error that says %q", code, p.Output(), want)
	}
}

// replicaReq is one logical consume: its body (whose usage type names the
// request, so the journal tells which request each debit belongs to), its
// key ("" for none) and its calls.
type replicaReq struct {
	body  e2etest.ConsumeBody
	key   string
	calls int
	burst bool // its calls are sent back to back
}

// replicaCall is one HTTP call: request req sent to replica.
type replicaCall struct {
	req     int
	replica int
}

// replicaPlan builds the requests and the order of their calls. A key's
// copies go to different replicas; most are shuffled across the run, the
// bursts' three copies are sent back to back so they race.
func replicaPlan() ([]replicaReq, []replicaCall) {
	rng := rand.New(rand.NewPCG(5, 23))
	var (
		reqs   []replicaReq
		groups [][]replicaCall // shuffled as units
	)
	add := func(calls int, keyed, burst bool) {
		r := len(reqs)
		rq := replicaReq{calls: calls, burst: burst, body: e2etest.ConsumeBody{
			UserAutomationID: replicaFirstID + rng.Int64N(replicaAccounts),
			Units:            1 + rng.Int64N(3),
			UsageType:        fmt.Sprintf("replica-%03d", r),
		}}
		if keyed {
			rq.key = fmt.Sprintf("replica-key-%03d", r)
		}
		reqs = append(reqs, rq)
		first := rng.IntN(replicaCount)
		var g []replicaCall
		for j := range calls {
			g = append(g, replicaCall{req: r, replica: (first + j) % replicaCount})
		}
		if burst {
			groups = append(groups, g)
			return
		}
		for _, c := range g {
			groups = append(groups, []replicaCall{c})
		}
	}
	for range replicaUnkeyed {
		add(1, false, false)
	}
	for range replicaSingles {
		add(1, true, false)
	}
	for range replicaDoubles {
		add(2, true, false)
	}
	for i := range replicaTriples {
		add(3, true, i < replicaBursts)
	}
	rng.Shuffle(len(groups), func(i, j int) { groups[i], groups[j] = groups[j], groups[i] })
	return reqs, slices.Concat(groups...)
}

// replicaResult is what one call got back.
type replicaResult struct {
	afterKill bool // sent after the victim was reaped
	answered  bool // an HTTP answer arrived (any status)
	err       error
	status    int
	answer    zimmer.ConsumeAnswer
	replayed  bool // Idempotent-Replayed: true
}

// replicaStorm sends every call once through a bounded pool and kills the
// victim (SIGKILL to its process group, then waits until it is reaped)
// as soon as replicaKillAt answers have arrived.
func replicaStorm(ctx context.Context, rs *replicaSet, reqs []replicaReq,
	calls []replicaCall) []replicaResult {
	out := make([]replicaResult, len(calls))
	next := make(chan int)
	var (
		wg       sync.WaitGroup
		received atomic.Int64
		killed   atomic.Bool
	)
	for range replicaWorkers {
		wg.Go(func() {
			for i := range next {
				c := calls[i]
				rq := reqs[c.req]
				res := replicaResult{afterKill: killed.Load()}
				r, a, err := rs.clients[c.replica].Consume(ctx, rs.consume, rq.body, rq.key)
				res.err = err
				if r != nil {
					res.answered, res.status, res.answer = true, r.Status, a
					res.replayed = r.Header.Get(zimmer.ReplayedHeader) == "true"
				}
				out[i] = res
				if r != nil && received.Add(1) == replicaKillAt {
					rs.sidecars[replicaVictim].Kill()
					killed.Store(true)
				}
			}
		})
	}
	for i := range calls {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// replicaStats counts what the storm saw, for the checks and the log.
type replicaStats struct {
	accepted, refused, replayed   int // answers
	survivorsAfterKill            int // answers from survivors sent after the kill
	failedAfterKill, lostInFlight int // victim calls without an answer
	inDoubt, inDoubtDebited       int // requests without any answer
	burstsRaced                   int // bursts answered by two or more replicas
}

func testReplicaStorm(ctx context.Context, t *testing.T, rs *replicaSet) {
	admin := func(i int) string { return rs.sidecars[i].AdminURL() }

	// 1. Accounts provisioned through replica 0, credited through replica
	// 1 and read back through replica 2.
	before := map[int64]int64{}
	for id := int64(replicaFirstID); id < replicaFirstID+replicaAccounts; id++ {
		demo := int64(replicaDemo)
		r, _, err := rs.clients[0].Provision(ctx, rs.provide, e2etest.ProvisionBody{
			UserAutomationID: id, UserID: 77, DemoTokens: demo})
		if err != nil || r.Status != http.StatusOK {
			t.Fatalf("provision %d through replica 0: %v %v", id, err, r)
		}
		e2etest.LedgerCredit(t, admin(1), id, replicaCredit)
		a := e2etest.LedgerAccount(t, admin(2), id)
		if a.DemoTokens != replicaDemo || a.PaidTokens != replicaCredit {
			t.Fatalf("account %d through replica 2: %+v, want demo %d paid %d",
				id, a, replicaDemo, replicaCredit)
		}
		before[id] = a.DemoTokens + a.PaidTokens
	}

	// 2. The storm, with the victim killed in the middle.
	reqs, calls := replicaPlan()
	start := time.Now()
	results := replicaStorm(ctx, rs, reqs, calls)
	elapsed := time.Since(start)
	st := checkReplicaCalls(t, rs, reqs, calls, results)

	// 3. The ledger, read through both survivors, against the answers.
	journal := e2etest.LedgerJournal(t, admin(0))
	if other := e2etest.LedgerJournal(t, admin(1)); !sameJournal(journal, other) {
		t.Errorf("journal through replica 0 has %d entries, through replica 1 %d; "+
			"want the same entries", len(journal), len(other))
	}
	checkReplicaLedger(t, rs, reqs, calls, results, journal, before, &st)

	t.Logf("%d calls (%d requests) in %s: %d accepted, %d refused, %d replayed answers; "+
		"%d bursts answered by several replicas; victim: %d calls lost in flight, "+
		"%d calls failed after its death; survivors answered %d calls after the kill; "+
		"%d requests never answered, %d of them debited",
		len(calls), len(reqs), elapsed.Round(time.Millisecond), st.accepted, st.refused,
		st.replayed, st.burstsRaced, st.lostInFlight, st.failedAfterKill,
		st.survivorsAfterKill, st.inDoubt, st.inDoubtDebited)
}

// checkReplicaCalls checks each call on its own: survivors always answer,
// the victim never answers after its death, every answer is a 200 with
// no negative balance, and a refusal could not have been paid.
func checkReplicaCalls(t *testing.T, rs *replicaSet, reqs []replicaReq,
	calls []replicaCall, results []replicaResult) replicaStats {
	t.Helper()
	var st replicaStats
	for i, res := range results {
		c, rq := calls[i], reqs[calls[i].req]
		switch {
		case !res.answered && c.replica != replicaVictim:
			t.Errorf("call %d to surviving replica %d: %v", i, c.replica, res.err)
		case !res.answered && res.afterKill:
			// Mostly ECONNREFUSED; a pooled connection the client had not
			// yet seen close fails otherwise.
			st.failedAfterKill++
		case !res.answered:
			st.lostInFlight++
		case c.replica == replicaVictim && res.afterKill:
			t.Errorf("call %d: the victim answered after it was killed: %d", i, res.status)
		case res.status != http.StatusOK || res.err != nil:
			t.Errorf("call %d to replica %d (%s, key %q): status %d, %v; want 200",
				i, c.replica, rq.body.UsageType, rq.key, res.status, res.err)
		default:
			countAnswer(t, rs.rule, i, rq, res, &st)
			if res.afterKill {
				st.survivorsAfterKill++
			}
		}
	}
	if st.failedAfterKill+st.lostInFlight == 0 {
		t.Errorf("no call to the victim failed: the kill did not happen")
	}
	if st.survivorsAfterKill == 0 {
		t.Errorf("the survivors answered no call sent after the kill")
	}
	if st.accepted == 0 || st.refused == 0 {
		t.Errorf("%d accepted, %d refused: want both, so the ledger ran dry",
			st.accepted, st.refused)
	}
	return st
}

// countAnswer checks one 200 answer and counts it.
func countAnswer(t *testing.T, rule metering.DemoRule, i int, rq replicaReq,
	res replicaResult, st *replicaStats) {
	t.Helper()
	a := res.answer
	if a.RemainingDemoTokens < 0 || a.RemainingPaidTokens < 0 {
		t.Errorf("call %d: negative balance in %+v", i, a)
	}
	if res.replayed {
		st.replayed++
		if rq.key == "" {
			t.Errorf("call %d without a key answered as a replay", i)
		}
	}
	if !a.Accepted {
		st.refused++
		// The remaining balances are those the refusal was decided on.
		if d := metering.Decide(rule, a.RemainingDemoTokens, a.RemainingPaidTokens,
			rq.body.Units); d.Accepted {
			t.Errorf("call %d: %d units refused with demo %d and paid %d left",
				i, rq.body.Units, a.RemainingDemoTokens, a.RemainingPaidTokens)
		}
		return
	}
	st.accepted++
	if a.TokensConsumed != rq.body.Units || a.UserAutomationID != rq.body.UserAutomationID {
		t.Errorf("call %d: accepted %+v for %d units of account %d", i, a,
			rq.body.Units, rq.body.UserAutomationID)
	}
}

// checkReplicaLedger checks each request against its journal debits and
// each account's balance against the accepted units and its journal.
func checkReplicaLedger(t *testing.T, rs *replicaSet, reqs []replicaReq,
	calls []replicaCall, results []replicaResult, journal []metering.Entry,
	before map[int64]int64, st *replicaStats) {
	t.Helper()

	// 1. The journal's debits by request; every debit must have one.
	byUsage := map[string]int{}
	for r, rq := range reqs {
		byUsage[rq.body.UsageType] = r
	}
	debits := make([][]metering.Entry, len(reqs))
	for _, e := range journal {
		if e.Kind != metering.EntryDebit {
			continue
		}
		r, ok := byUsage[e.UsageType]
		if !ok {
			t.Errorf("journal debit %d (%q) belongs to no request", e.Seq, e.UsageType)
			continue
		}
		debits[r] = append(debits[r], e)
	}

	// 2. Each request: answers alike, debited at most once, and debited
	// exactly when its answer accepted it.
	answers := make([][]replicaResult, len(reqs))
	for i, res := range results {
		if res.answered && res.status == http.StatusOK && res.err == nil {
			answers[calls[i].req] = append(answers[calls[i].req], res)
		}
	}
	wantDecrease := map[int64]int64{} // per account
	for r, rq := range reqs {
		deb := debits[r]
		checkRequestDebits(t, r, rq, deb)
		got := answers[r]
		if len(got) == 0 {
			st.inDoubt++
			if len(deb) > 0 {
				st.inDoubtDebited++
				wantDecrease[rq.body.UserAutomationID] += rq.body.Units
			}
			continue
		}
		checkRequestAnswers(t, r, rq, got, len(deb) > 0)
		if got[0].answer.Accepted {
			wantDecrease[rq.body.UserAutomationID] += rq.body.Units
		}
		if rq.burst && len(got) >= 2 {
			st.burstsRaced++
		}
	}

	// 3. Each account: the balance fell by exactly the accepted units, is
	// not negative and equals the sums of its journal.
	demo, paid := map[int64]int64{}, map[int64]int64{}
	for _, e := range journal {
		demo[e.UserAutomationID] += e.DemoDelta
		paid[e.UserAutomationID] += e.PaidDelta
	}
	for id, was := range before {
		a := e2etest.LedgerAccount(t, rs.sidecars[1].AdminURL(), id)
		if a.DemoTokens < 0 || a.PaidTokens < 0 {
			t.Errorf("account %d is negative: %+v", id, a)
		}
		if got := was - a.DemoTokens - a.PaidTokens; got != wantDecrease[id] {
			t.Errorf("account %d: balance fell by %d, answers accepted %d units",
				id, got, wantDecrease[id])
		}
		if demo[id] != a.DemoTokens || paid[id] != a.PaidTokens {
			t.Errorf("account %d: journal sums demo %d paid %d, balances demo %d paid %d",
				id, demo[id], paid[id], a.DemoTokens, a.PaidTokens)
		}
	}
}

// checkRequestDebits checks request r's journal debits: at most one, of
// its account, units and scoped key.
func checkRequestDebits(t *testing.T, r int, rq replicaReq, deb []metering.Entry) {
	t.Helper()
	if len(deb) > 1 {
		t.Errorf("request %d (key %q) debited %d times", r, rq.key, len(deb))
	}
	if len(deb) == 0 {
		return
	}
	e := deb[0]
	wantKey := ""
	if rq.key != "" {
		// /usage/consume scopes a caller's key to its account.
		wantKey = fmt.Sprintf("consume %d %s", rq.body.UserAutomationID, rq.key)
	}
	if e.UserAutomationID != rq.body.UserAutomationID ||
		-e.DemoDelta-e.PaidDelta != rq.body.Units || e.IdempotencyKey != wantKey {
		t.Errorf("request %d (account %d, %d units, key %q): journal debit %+v",
			r, rq.body.UserAutomationID, rq.body.Units, wantKey, e)
	}
}

// checkRequestAnswers checks the answers request r received: all alike,
// at most one of them not a replay, and accepted exactly when debited.
func checkRequestAnswers(t *testing.T, r int, rq replicaReq, got []replicaResult,
	debited bool) {
	t.Helper()
	originals := 0
	for _, res := range got {
		if res.answer != got[0].answer {
			t.Errorf("request %d (key %q): answers differ: %+v and %+v",
				r, rq.key, got[0].answer, res.answer)
		}
		if !res.replayed {
			originals++
		}
	}
	if originals > 1 {
		t.Errorf("request %d (key %q): %d answers are not replays, want at most 1",
			r, rq.key, originals)
	}
	if got[0].answer.Accepted != debited {
		t.Errorf("request %d (key %q): answered accepted=%t, journal debited=%t",
			r, rq.key, got[0].answer.Accepted, debited)
	}
}

// sameJournal reports whether two exports hold the same entries.
func sameJournal(a, b []metering.Entry) bool {
	return slices.EqualFunc(a, b, func(x, y metering.Entry) bool {
		x.Time, y.Time = x.Time.UTC(), y.Time.UTC()
		return x == y
	})
}
