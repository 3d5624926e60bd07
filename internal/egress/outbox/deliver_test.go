package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/fakeplatform"
)

// rig is an outbox on a bbolt store with a deliverer to a fake platform.
type rig struct {
	pl      *platform
	store   Store
	ob      *Outbox
	d       *Deliverer
	ev      *events
	mu      sync.Mutex
	answers []ConsumeAnswer
}

// newRig builds a rig; mod adjusts the deliverer's options.
func newRig(t *testing.T, store Store, consume bool, mod func(*DeliverOptions)) *rig {
	t.Helper()
	if store == nil {
		store = openBoltAt(t, filepath.Join(t.TempDir(), "outbox.db"), 0, nil)
	}
	r := &rig{pl: newPlatform(t), store: store, ev: &events{}}
	r.ob = New(store, Options{Consume: consume})
	opts := deliverOptions(r.pl)
	opts.OnEvent = r.ev.add
	opts.OnConsumeAnswer = func(a ConsumeAnswer) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.answers = append(r.answers, a)
	}
	if mod != nil {
		mod(&opts)
	}
	r.d = mustDeliverer(t, r.ob, opts)
	return r
}

// mustDeliverer builds a deliverer or fails.
func mustDeliverer(t *testing.T, ob *Outbox, opts DeliverOptions) *Deliverer {
	t.Helper()
	d, err := NewDeliverer(ob, opts)
	if err != nil {
		t.Fatalf("new deliverer: %v", err)
	}
	return d
}

// run starts d.Run until the test ends.
func run(t *testing.T, d *Deliverer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// enqueue stores records or fails.
func (r *rig) enqueue(t *testing.T, recs ...Record) {
	t.Helper()
	for _, rec := range recs {
		if err := r.ob.Enqueue(t.Context(), rec); err != nil {
			t.Fatalf("enqueue: %v", err)
		}
	}
}

// flush runs Flush or fails.
func (r *rig) flush(t *testing.T) {
	t.Helper()
	if err := r.d.Flush(t.Context()); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

// drain flushes until the store holds no pending item.
func (r *rig) drain(t *testing.T) {
	t.Helper()
	waitFor(t, "the pending items to be delivered", func() bool {
		r.flush(t)
		st := mustStats(t, r.store)
		return st.Report.Pending+st.Consume.Pending == 0
	})
}

// consumeAnswers returns the hook's answers.
func (r *rig) consumeAnswers() []ConsumeAnswer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.answers)
}

func TestDeliverReports(t *testing.T) {
	r := newRig(t, nil, false, nil)
	unleased := leased(9)
	unleased.Leased = false
	r.enqueue(t, leased(1), leased(2), leased(3), unleased)
	r.flush(t)

	reps := r.pl.p.Reports()
	slices.SortFunc(reps, func(a, b fakeplatform.UsageReport) int {
		return strings.Compare(a.IdempotencyKey, b.IdempotencyKey)
	})
	if len(reps) != 3 {
		t.Fatalf("got %d reports, want 3 (none for the static key)", len(reps))
	}
	for i, rep := range reps {
		rec := leased(i + 1)
		want := fakeplatform.UsageReport{
			AutomationID: automationID, KeyID: 1, TokensUsed: rec.TotalTokens,
			Model: rec.Model, PromptTokens: rec.PromptTokens,
			CompletionTokens: rec.CompletionTokens, Success: true, IdempotencyKey: rec.ID,
			At: rep.At,
		}
		if rep != want {
			t.Errorf("report %d: got %+v, want %+v", i, rep, want)
		}
	}
	if st := mustStats(t, r.store); st.Total != 0 {
		t.Fatalf("%d items left, want none", st.Total)
	}
	for _, ev := range r.ev.list() {
		if ev.Result != ResultDelivered || ev.Status != 200 || ev.Attempts != 1 || ev.Err != nil {
			t.Errorf("event: got %+v, want delivered at the first attempt", ev)
		}
	}
}

func TestReportTokensUsedFallsBackToTheSum(t *testing.T) {
	r := newRig(t, nil, false, nil)
	rec := leased(1)
	rec.TotalTokens = 0
	r.enqueue(t, rec)
	r.flush(t)
	if reps := r.pl.p.Reports(); len(reps) != 1 || reps[0].TokensUsed != 1+7 {
		t.Fatalf("got %+v, want tokens_used 8", reps)
	}
}

func TestReportAnswers(t *testing.T) {
	tests := []struct {
		status int
		want   State // StatePending: retried
	}{
		{302, StateFailed}, {400, StateFailed}, {404, StateFailed}, {422, StateFailed},
		{401, StatePending}, {403, StatePending},
		{408, StatePending}, {409, StatePending}, {425, StatePending}, {429, StatePending},
		{500, StatePending}, {502, StatePending}, {503, StatePending},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			t.Parallel()
			r := newRig(t, nil, false, nil)
			r.pl.p.SetFault(fakeplatform.EndpointReport,
				fakeplatform.Fault{Status: tt.status, Times: 1})
			r.enqueue(t, leased(1))
			r.flush(t)
			it, ok := itemByID(t, r.store, "report:"+recordID(1))
			if !ok || it.State != tt.want || it.Attempts != 1 {
				t.Fatalf("after %d: got %+v, want %s", tt.status, it, tt.want)
			}
			if tt.want == StateFailed {
				r.flush(t)
				if n := r.pl.p.Calls(fakeplatform.EndpointReport); n != 1 {
					t.Fatalf("a failed report was sent again: %d calls", n)
				}
				return
			}
			r.drain(t)
			if reps := r.pl.p.Reports(); len(reps) != 1 {
				t.Fatalf("after the retry: %d reports, want 1", len(reps))
			}
		})
	}
}

// TestOutageThousandReportsExactlyOnce is issue #3's showcase: the
// platform fails in every way while 1,000 calls are recorded, some
// reports applied before the connection drops; after recovery each
// report is recorded exactly once.
func TestOutageThousandReportsExactlyOnce(t *testing.T) {
	const n = 1000
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			store, _ := b.open(t, 0)
			r := newRig(t, store, false, func(o *DeliverOptions) {
				o.CallTimeout = 300 * time.Millisecond
				o.Batch = 32
			})
			ep := fakeplatform.EndpointReport

			// Reports applied and then cut off, before any record exists.
			r.pl.p.SetFault(ep, fakeplatform.Fault{Down: true, AfterApply: true})
			run(t, r.d)

			// Record the calls from 10 callers while the outage plays.
			var wg sync.WaitGroup
			for w := range 10 {
				wg.Go(func() {
					for i := w; i < n; i += 10 {
						if err := r.ob.Enqueue(context.Background(), leased(i)); err != nil {
							t.Errorf("enqueue %d: %v", i, err)
							return
						}
					}
				})
			}
			waitFor(t, "reports applied then dropped", func() bool {
				return len(r.pl.p.Reports()) >= 10
			})
			phases := []fakeplatform.Fault{
				{Status: 503},
				{Down: true},
				{Status: 500, AfterApply: true},
				{Delay: time.Second}, // longer than CallTimeout: not applied
				{Status: 429},
				{Delay: 5 * time.Millisecond},
				{Down: true, AfterApply: true},
			}
			for _, f := range phases {
				r.pl.p.SetFault(ep, f)
				time.Sleep(40 * time.Millisecond)
			}
			wg.Wait()

			// Recovery.
			r.pl.p.ClearFault(ep)
			waitFor(t, "the backlog to drain", func() bool {
				return mustStats(t, r.store).Total == 0
			})
			reps := r.pl.p.Reports()
			seen := make(map[string]int, n)
			for _, rep := range reps {
				seen[rep.IdempotencyKey]++
			}
			for i := range n {
				if c := seen[recordID(i)]; c != 1 {
					t.Errorf("record %d: reported %d times, want once", i, c)
				}
			}
			if len(reps) != n || len(seen) != n {
				t.Fatalf("got %d reports of %d records, want %d of %d", len(reps), len(seen), n, n)
			}
			if r.pl.p.ReportReplays() == 0 {
				t.Fatal("no report was resent: the outage did not exercise the dedupe")
			}
			t.Logf("%d calls for %d reports, %d answered from the key",
				r.pl.p.Calls(ep), n, r.pl.p.ReportReplays())
		})
	}
}

func TestConsumeDelivered(t *testing.T) {
	r := newRig(t, nil, true, func(o *DeliverOptions) { o.UsageType = "llm_units" })
	r.pl.p.AddAccount(fakeplatform.Account{
		UserAutomationID: 43, AutomationID: automationID, PaidTokens: 10,
	})
	poor := charged(2, 50)
	poor.UserAutomationID = 43
	r.enqueue(t, charged(1, 30), poor)
	r.flush(t)

	cons := r.pl.p.Consumes()
	if len(cons) != 2 {
		t.Fatalf("got %d consumes, want 2", len(cons))
	}
	slices.SortFunc(cons, func(a, b fakeplatform.ConsumeRecord) int {
		return int(a.UserAutomationID - b.UserAutomationID)
	})
	var meta map[string]any
	_ = json.Unmarshal(cons[0].Meta, &meta)
	if c := cons[0]; c.UserAutomationID != userID || c.Units != 30 || c.UsageType != "llm_units" ||
		meta["call_id"] != recordID(1) || meta["model"] != "gpt-4o-mini" {
		t.Fatalf("consume: got %+v meta %v", c, meta)
	}
	answers := r.consumeAnswers()
	slices.SortFunc(answers, func(a, b ConsumeAnswer) int {
		return strings.Compare(a.CallID, b.CallID)
	})
	want := []ConsumeAnswer{
		{CallID: recordID(1), UserAutomationID: userID, Units: 30, Accepted: true,
			RemainingPaidTokens: 1<<40 - 30},
		{CallID: recordID(2), UserAutomationID: 43, Units: 50, Accepted: false,
			RemainingPaidTokens: 10},
	}
	if !slices.Equal(answers, want) {
		t.Fatalf("hook: got %+v, want %+v", answers, want)
	}
	if st := mustStats(t, r.store); st.Total != 0 {
		t.Fatalf("%d items left; a refused consume is still delivered", st.Total)
	}
}

func TestConsumeOnlyWhenCharged(t *testing.T) {
	r := newRig(t, nil, true, nil)
	noUser := charged(1, 10)
	noUser.UserAutomationID = 0
	r.enqueue(t, noUser, charged(2, 0))
	st := mustStats(t, r.store)
	if st.Consume.Total() != 0 || st.Report.Pending != 2 {
		t.Fatalf("got %+v, want two reports and no consume", st)
	}
}

// failingDialer fails its first n dials, then dials for real.
type failingDialer struct {
	left  atomic.Int32
	dials atomic.Int32
}

func (f *failingDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	f.dials.Add(1)
	if f.left.Add(-1) >= 0 {
		return nil, errors.New("injected dial failure")
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// dialingClient is a client whose dials go through f.
func dialingClient(f *failingDialer) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = f.dial
	return &http.Client{Transport: tr}
}

func TestConsumeDialFailureRetried(t *testing.T) {
	fd := &failingDialer{}
	fd.left.Store(2)
	r := newRig(t, nil, true, func(o *DeliverOptions) { o.Client = dialingClient(fd) })
	r.enqueue(t, charged(1, 30))
	r.flush(t)
	it, _ := itemByID(t, r.store, "consume:"+recordID(1))
	if it.State != StatePending || it.Attempts != 1 || !strings.Contains(it.LastError, "not sent") {
		t.Fatalf("after a dial failure: got %+v, want pending, not sent", it)
	}
	r.drain(t)
	if n := len(r.pl.p.Consumes()); n != 1 {
		t.Fatalf("got %d consumes, want 1", n)
	}
	if a := r.consumeAnswers(); len(a) != 1 || !a[0].Accepted {
		t.Fatalf("hook: got %+v, want one accepted answer", a)
	}
}

func TestConsumeUnknownIsNeverResent(t *testing.T) {
	tests := []struct {
		name    string
		fault   fakeplatform.Fault
		applied bool
	}{
		{"applied then dropped", fakeplatform.Fault{Down: true, AfterApply: true}, true},
		{"dropped before applying", fakeplatform.Fault{Down: true}, false},
		{"applied then 500", fakeplatform.Fault{Status: 500, AfterApply: true}, true},
		{"502", fakeplatform.Fault{Status: 502}, false},
		{"timeout after sending", fakeplatform.Fault{Delay: 10 * time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, nil, true, func(o *DeliverOptions) {
				o.CallTimeout = 200 * time.Millisecond
			})
			ep := fakeplatform.EndpointConsume
			r.pl.p.SetFault(ep, tt.fault)
			r.enqueue(t, charged(1, 30))
			r.flush(t)
			it, _ := itemByID(t, r.store, "consume:"+recordID(1))
			if it.State != StateUnknown || !strings.Contains(it.LastError, "unknown") {
				t.Fatalf("got %+v, want unknown", it)
			}
			if applied := len(r.pl.p.Consumes()) == 1; applied != tt.applied {
				t.Fatalf("applied: got %t, want %t", applied, tt.applied)
			}

			// The deliverer keeps running: nothing is sent again.
			run(t, r.d)
			r.enqueue(t, leased(2)) // wakes the deliverer
			waitFor(t, "the report", func() bool { return len(r.pl.p.Reports()) == 1 })
			r.flush(t)
			if n := r.pl.p.Calls(ep); n != 1 {
				t.Fatalf("consume calls: got %d, want 1", n)
			}
			if len(r.consumeAnswers()) != 0 {
				t.Fatal("the hook was called without a 200")
			}

			// An admin requeues it: it goes once more.
			r.pl.p.ClearFault(ep)
			if err := r.store.Resolve(t.Context(), it.ID, ActionRequeue, time.Now()); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the requeued consume", func() bool { return len(r.consumeAnswers()) == 1 })
			if n := r.pl.p.Calls(ep); n != 2 {
				t.Fatalf("consume calls after requeue: got %d, want 2", n)
			}
		})
	}
}

func TestConsumeRefusedIsFailed(t *testing.T) {
	tests := []struct {
		name  string
		user  int64
		token string
		want  int
	}{
		{"unknown user", 4242, serviceToken, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, nil, true, func(o *DeliverOptions) {
				o.Token = func() string { return tt.token }
			})
			rec := charged(1, 5)
			rec.UserAutomationID = tt.user
			rec.Leased = false
			r.enqueue(t, rec)
			r.flush(t)
			r.flush(t)
			it, _ := itemByID(t, r.store, "consume:"+recordID(1))
			if it.State != StateFailed || r.pl.p.Calls(fakeplatform.EndpointConsume) != 1 {
				t.Fatalf("got %+v after %d calls, want failed after 1", it,
					r.pl.p.Calls(fakeplatform.EndpointConsume))
			}
			evs := r.ev.list()
			if len(evs) != 1 || evs[0].Status != tt.want || evs[0].Result != ResultFailed {
				t.Fatalf("events: got %+v, want one failed with %d", evs, tt.want)
			}
		})
	}
}

// TestTokenRefusalIsRetried: a 401 or 403 is about the service token,
// not the item. Reports and consumes stay pending with a clear error (the
// consume was not applied), the refusals open the breaker, and once the
// token is right each item is delivered once.
func TestTokenRefusalIsRetried(t *testing.T) {
	tests := []struct {
		name   string
		status int
		fault  bool // a 403 fault; else the platform's own 401 for a wrong token
	}{
		{"wrong token", http.StatusUnauthorized, false},
		{"forbidden", http.StatusForbidden, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var token atomic.Value
			token.Store("not-the-token")
			r := newRig(t, nil, true, func(o *DeliverOptions) {
				o.Token = func() string { return token.Load().(string) }
				o.BreakerFailures = 2
			})
			if tt.fault {
				token.Store(serviceToken)
				for _, ep := range []fakeplatform.Endpoint{
					fakeplatform.EndpointReport, fakeplatform.EndpointConsume,
				} {
					r.pl.p.SetFault(ep, fakeplatform.Fault{Status: tt.status, Times: 1})
				}
			}
			r.enqueue(t, charged(1, 5))
			r.flush(t)

			// Both kept, retried, with the reason; nothing charged.
			st := mustStats(t, r.store)
			if st.Report.Pending != 1 || st.Consume.Pending != 1 || len(r.pl.p.Consumes()) != 0 {
				t.Fatalf("got %+v, %d consumes applied; want both pending, none applied",
					st, len(r.pl.p.Consumes()))
			}
			evs := r.ev.list()
			for _, ev := range evs {
				if ev.Result != ResultRetry || ev.Status != tt.status || ev.Err == nil ||
					!strings.Contains(ev.Err.Error(), "platform refused the service token") {
					t.Errorf("event: got %+v, want a retry after %d naming the token",
						ev, tt.status)
				}
			}
			if len(evs) != 2 {
				t.Fatalf("got %d events, want 2", len(evs))
			}

			// The two refusals opened the breaker (half-open already, if
			// its short open time is over: either way it tripped).
			if s := r.d.breaker.State(); s == gobreaker.StateClosed {
				t.Fatalf("breaker: got %s, want it tripped", s)
			}

			// With the right token, each item goes once.
			token.Store(serviceToken)
			r.drain(t)
			if len(r.pl.p.Reports()) != 1 || len(r.pl.p.Consumes()) != 1 {
				t.Fatalf("got %d reports and %d consumes, want 1 each",
					len(r.pl.p.Reports()), len(r.pl.p.Consumes()))
			}
		})
	}
}

func TestNoTokenSendsNothing(t *testing.T) {
	var token atomic.Value
	token.Store("")
	r := newRig(t, nil, true, func(o *DeliverOptions) {
		o.Token = func() string { return token.Load().(string) }
	})
	r.enqueue(t, charged(1, 5))
	r.flush(t)
	st := mustStats(t, r.store)
	if st.Report.Pending != 1 || st.Consume.Pending != 1 ||
		r.pl.p.Calls(fakeplatform.EndpointReport)+r.pl.p.Calls(fakeplatform.EndpointConsume) != 0 {
		t.Fatalf("got %+v and some calls, want both pending and nothing sent", st)
	}
	token.Store(serviceToken) // the token arrives (or rotates)
	r.drain(t)
	if len(r.pl.p.Reports()) != 1 || len(r.pl.p.Consumes()) != 1 {
		t.Fatal("not delivered once the token came")
	}
}

func TestBreakerOpenSendsNothing(t *testing.T) {
	fd := &failingDialer{}
	fd.left.Store(1000)
	r := newRig(t, nil, true, func(o *DeliverOptions) {
		o.Client = dialingClient(fd)
		o.BreakerFailures = 1
		o.BreakerOpenFor = time.Hour
	})
	r.enqueue(t, charged(1, 5), charged(2, 5))
	r.flush(t) // trips the breaker
	dials := fd.dials.Load()
	if err := r.d.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if fd.dials.Load() != dials {
		t.Fatal("flush dialled with the breaker open")
	}
	it, _ := itemByID(t, r.store, "consume:"+recordID(1))
	a := r.d.deliver(t.Context(), it)
	if a.outcome.State != StatePending || !strings.Contains(a.outcome.Error, "breaker open") {
		t.Fatalf("consume with the breaker open: got %+v, want a retry", a.outcome)
	}
	if fd.dials.Load() != dials {
		t.Fatal("a call went out with the breaker open")
	}
}

func TestFlushStopsWhilePlatformDown(t *testing.T) {
	r := newRig(t, nil, false, func(o *DeliverOptions) { o.BreakerFailures = 1000 })
	r.pl.p.SetFault(fakeplatform.EndpointReport, fakeplatform.Fault{Status: 503})
	r.enqueue(t, leased(1), leased(2))
	r.flush(t)
	if st := mustStats(t, r.store); st.Report.Pending != 2 {
		t.Fatalf("got %+v, want both reports kept", st)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := r.d.Flush(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("flush with an ended context: got %v, want context.Canceled", err)
	}
}

func TestRunStopsWithItsContext(t *testing.T) {
	r := newRig(t, nil, false, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.d.Run(ctx)
	}()
	r.enqueue(t, leased(1))
	waitFor(t, "the report", func() bool { return len(r.pl.p.Reports()) == 1 })
	cancel()
	<-done
}

// TestCrashRedeliversOnlyUnacked: a deliverer sends and acks some items,
// then its process dies with the rest claimed (some sent, not acked).
// After a restart, only the unacked items go again, and the reports that
// had been sent are recorded once.
func TestCrashRedeliversOnlyUnacked(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			store, reopen := b.open(t, 0)
			r := newRig(t, store, false, nil)
			for i := range 10 {
				r.enqueue(t, leased(i))
			}

			// The first life: four delivered and acked, two sent but not
			// acked, four claimed and never sent.
			now := time.Now()
			c := Claim{Owner: "first", Now: now, Until: now.Add(300 * time.Millisecond), Limit: 10}
			items := mustClaim(t, store, c)
			for _, it := range items[:6] {
				if a := r.d.deliverReport(t.Context(), it); !a.outcome.Done {
					t.Fatalf("first life: %+v", a.outcome)
				}
			}
			for _, it := range items[:4] {
				mustFinish(t, store, "first", Outcome{ID: it.ID, Done: true})
			}
			acked := ids(items[:4])

			// The restart.
			store = reopen()
			r2 := newRig(t, store, false, nil)
			r2.pl = r.pl
			r2.d = mustDeliverer(t, r2.ob, deliverOptions(r.pl))
			r2.drain(t)
			reps := r.pl.p.Reports()
			if len(reps) != 10 {
				t.Fatalf("got %d reports, want 10", len(reps))
			}
			if got := r.pl.p.ReportReplays(); got != 2 {
				t.Fatalf("replays: got %d, want the 2 sent but unacked", got)
			}
			if got := r.pl.p.Calls(fakeplatform.EndpointReport); got != 6+6 {
				t.Fatalf("calls: got %d, want 12 (6 before, the 6 unacked after)", got)
			}
			for _, id := range acked {
				if _, ok := itemByID(t, store, id); ok {
					t.Fatalf("acked item %s came back", id)
				}
			}
		})
	}
}

// TestTwoDeliverersOnePostgresTable: replicas share one table; each item
// is delivered by exactly one of them, and a crashed replica's claims
// come back to the others (its sent consume as unknown).
func TestTwoDeliverersOnePostgresTable(t *testing.T) {
	const n = 300
	table := freshTable(t)
	pl := newPlatform(t)
	var obs []*Outbox
	var ds []*Deliverer
	var delivered [2]atomic.Int32
	for i := range 2 {
		store := openPg(t, ownPool(t), table, 0)
		ob := New(store, Options{Consume: true})
		opts := deliverOptions(pl)
		opts.Owner = []string{"replica-a", "replica-b"}[i]
		opts.Batch = 8
		opts.OnEvent = func(e Event) {
			if e.Result == ResultDelivered {
				delivered[i].Add(1)
			}
		}
		obs = append(obs, ob)
		ds = append(ds, mustDeliverer(t, ob, opts))
	}

	// A third replica claimed three records' items, began one consume,
	// and died.
	dead := obs[0].Store()
	for i := n; i < n+3; i++ {
		if err := obs[0].Enqueue(t.Context(), charged(i, 3)); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	c := Claim{Owner: "replica-dead", Now: now, Until: now.Add(time.Second), Limit: 6}
	if got := mustClaim(t, dead, c); len(got) != 6 {
		t.Fatalf("dead replica claimed %d, want 6", len(got))
	}
	begun := ItemID(KindConsume, recordID(n))
	if held, err := dead.Begin(t.Context(), c, []string{begun}); err != nil || len(held) != 1 {
		t.Fatalf("begin: %v %v", held, err)
	}

	// Calls arrive at both replicas.
	run(t, ds[0])
	run(t, ds[1])
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := w; i < n; i += 2 {
				if err := obs[w].Enqueue(context.Background(), charged(i, 3)); err != nil {
					t.Errorf("enqueue: %v", err)
				}
			}
		})
	}
	wg.Wait()
	waitFor(t, "the backlog to drain", func() bool {
		st := mustStats(t, dead)
		return st.Total == 1 && st.Consume.Unknown == 1
	})

	reps, cons := pl.p.Reports(), pl.p.Consumes()
	if len(reps) != n+3 || pl.p.ReportReplays() != 0 ||
		pl.p.Calls(fakeplatform.EndpointReport) != n+3 {
		t.Fatalf("reports: %d recorded in %d calls, %d replays; want %d, each sent once",
			len(reps), pl.p.Calls(fakeplatform.EndpointReport), pl.p.ReportReplays(), n+3)
	}
	calls := map[string]int{}
	for _, c := range cons {
		var meta struct {
			CallID string `json:"call_id"`
		}
		_ = json.Unmarshal(c.Meta, &meta)
		calls[meta.CallID]++
	}
	if len(cons) != n+2 || len(calls) != n+2 || calls[recordID(n)] != 0 {
		t.Fatalf("consumes: %d for %d calls, begun one sent %d times; want %d, none for it",
			len(cons), len(calls), calls[recordID(n)], n+2)
	}
	it, _ := itemByID(t, dead, begun)
	if it.State != StateUnknown || it.LastError != lapseNote {
		t.Fatalf("begun consume: got %+v, want unknown", it)
	}
	t.Logf("replica a delivered %d, replica b %d", delivered[0].Load(), delivered[1].Load())
}

func TestSecretsStayOut(t *testing.T) {
	fd := &failingDialer{}
	fd.left.Store(1)
	r := newRig(t, nil, true, func(o *DeliverOptions) {
		o.Client = dialingClient(fd)
		o.CallTimeout = 200 * time.Millisecond
	})
	r.pl.p.AddAutomation(automationID, "the-platform-expects-another-token")
	r.enqueue(t, charged(1, 5)) // dial failure, then 401s for both, retried
	waitFor(t, "a 401 for the report and the consume", func() bool {
		r.flush(t)
		refused := map[Kind]bool{}
		for _, ev := range r.ev.list() {
			refused[ev.Kind] = refused[ev.Kind] || ev.Status == http.StatusUnauthorized
		}
		return refused[KindReport] && refused[KindConsume]
	})
	r.pl.p.AddAutomation(automationID, serviceToken)
	r.pl.p.SetFault(fakeplatform.EndpointConsume, fakeplatform.Fault{Down: true, AfterApply: true})
	r.pl.p.SetFault(fakeplatform.EndpointReport, fakeplatform.Fault{Status: 500, Times: 1})
	r.enqueue(t, charged(2, 5))
	r.drain(t)

	var texts []string
	for _, ev := range r.ev.list() {
		if ev.Err != nil {
			texts = append(texts, ev.Err.Error())
		}
	}
	items, _ := r.store.List(t.Context(), Filter{})
	raw, _ := json.Marshal(items)
	texts = append(texts, string(raw))
	if len(texts) < 4 {
		t.Fatalf("only %d error texts: the scenario did not fail enough", len(texts))
	}
	for _, s := range texts {
		if strings.Contains(s, serviceToken) || strings.Contains(s, "sk-test-key-one") {
			t.Fatalf("a secret leaked: %s", s)
		}
	}
}

func TestDeliverOptionsChecked(t *testing.T) {
	ob := New(openBoltAt(t, filepath.Join(t.TempDir(), "o.db"), 0, nil), Options{})
	token := func() string { return "t" }
	tests := []struct {
		name string
		opts DeliverOptions
	}{
		{"no url", DeliverOptions{AutomationID: 1, Token: token}},
		{"ftp", DeliverOptions{PlatformURL: "ftp://x", AutomationID: 1, Token: token}},
		{"credentials", DeliverOptions{PlatformURL: "http://u:p@127.0.0.1", AutomationID: 1,
			Token: token}},
		{"query", DeliverOptions{PlatformURL: "http://127.0.0.1/?t=x", AutomationID: 1,
			Token: token}},
		{"no automation", DeliverOptions{PlatformURL: "http://127.0.0.1", Token: token}},
		{"no token", DeliverOptions{PlatformURL: "http://127.0.0.1", AutomationID: 1}},
		{"short claim", DeliverOptions{PlatformURL: "http://127.0.0.1", AutomationID: 1,
			Token: token, CallTimeout: time.Second, ClaimFor: time.Second}},
		{"backoff upside down", DeliverOptions{PlatformURL: "http://127.0.0.1", AutomationID: 1,
			Token: token, BackoffMin: time.Minute, BackoffMax: time.Second}},
		{"negative", DeliverOptions{PlatformURL: "http://127.0.0.1", AutomationID: 1,
			Token: token, Batch: -1}},
	}
	for _, tt := range tests {
		if _, err := NewDeliverer(ob, tt.opts); err == nil {
			t.Errorf("%s: got a deliverer, want an error", tt.name)
		} else if strings.Contains(err.Error(), "u:p") {
			t.Errorf("%s: error shows the credentials: %v", tt.name, err)
		}
	}
}

func TestBackoff(t *testing.T) {
	d := &Deliverer{opts: DeliverOptions{
		BackoffMin: 10 * time.Millisecond, BackoffMax: time.Second,
	}}
	for attempts := range 12 {
		base := min(10*time.Millisecond<<attempts, time.Second)
		for range 50 {
			got := d.backoff(attempts, 0)
			if got < base/2 || got > base {
				t.Fatalf("attempt %d: got %v, want within [%v, %v]", attempts, got, base/2, base)
			}
		}
	}
	if got := d.backoff(0, 300*time.Millisecond); got != 300*time.Millisecond {
		t.Fatalf("retry-after: got %v, want 300ms", got)
	}
	if got := d.backoff(0, time.Hour); got != time.Second {
		t.Fatalf("retry-after past max: got %v, want 1s", got)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"7", 7 * time.Second}, {"-1", 0}, {"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("%q: got %v, want %v", tt.in, got, tt.want)
		}
	}
}
