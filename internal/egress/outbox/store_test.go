package outbox

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestStoreConformance runs the Store contract against both backends.
func TestStoreConformance(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			if b.name == "postgres" {
				sharedPool(t) // skip or fail once, before the parallel subtests
			}
			runStoreConformance(t, b)
		})
	}
}

// runStoreConformance checks one backend.
func runStoreConformance(t *testing.T, b backend) {
	tests := []struct {
		name string
		run  func(t *testing.T, b backend)
	}{
		{"add list stats", testAddListStats},
		{"add is idempotent", testAddIdempotent},
		{"bounded", testBounded},
		{"claim order and limit", testClaimOrder},
		{"claims exclude each other until they lapse", testClaimLapse},
		{"finish", testFinish},
		{"finish by a stale owner", testFinishStaleOwner},
		{"begin and a lapsed consume", testBeginLapse},
		{"resolve", testResolve},
		{"durable across reopen", testReopen},
		{"concurrent adds", testConcurrentAdds},
		{"closed", testClosed},
		{"bad input", testBadInput},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, b)
		})
	}
}

func testAddListStats(t *testing.T, b backend) {
	s, _ := b.open(t, 0)
	mustAdd(t, s, reportItem(1, t0), consumeItem(1, t0))
	mustAdd(t, s, reportItem(2, t0.Add(time.Second)))

	items, err := s.List(t.Context(), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	got := ids(items)
	want := []string{"consume:" + recordID(1), "report:" + recordID(1), "report:" + recordID(2)}
	if !slices.Equal(got, want) {
		t.Fatalf("list: got %v, want %v", got, want)
	}
	it := items[1]
	if it.State != StatePending || it.Kind != KindReport || it.Attempts != 0 || it.Claimed ||
		!it.CreatedAt.Equal(t0) || it.Record != leased(1) {
		t.Fatalf("item: got %+v, want a fresh pending report of record 1", it)
	}
	reports, _ := s.List(t.Context(), Filter{Kind: KindReport, Limit: 1})
	if len(reports) != 1 || reports[0].ID != want[1] {
		t.Fatalf("list kind report limit 1: got %v", ids(reports))
	}

	st := mustStats(t, s)
	if st.Report.Pending != 2 || st.Consume.Pending != 1 || st.Total != 3 ||
		!st.OldestPending.Equal(t0) || st.Max != DefaultMax {
		t.Fatalf("stats: got %+v", st)
	}
	if age := st.OldestPendingAge(t0.Add(time.Minute)); age != time.Minute {
		t.Fatalf("oldest pending age: got %v, want 1m", age)
	}
}

func testAddIdempotent(t *testing.T, b backend) {
	s, _ := b.open(t, 0)
	mustAdd(t, s, reportItem(1, t0))
	later := reportItem(1, t0.Add(time.Hour))
	later.Record.Model = "changed"
	mustAdd(t, s, later, later)
	it, _ := itemByID(t, s, later.ID)
	if st := mustStats(t, s); st.Total != 1 || it.Record.Model != "gpt-4o-mini" {
		t.Fatalf("got %d items, model %q; want 1, the first", st.Total, it.Record.Model)
	}
}

func testBounded(t *testing.T, b backend) {
	s, _ := b.open(t, 3)
	mustAdd(t, s, reportItem(1, t0), reportItem(2, t0))
	if s.Full() {
		t.Fatal("full at 2 of 3")
	}
	err := s.Add(t.Context(), []Item{reportItem(3, t0), consumeItem(3, t0)})
	if !errors.Is(err, ErrFull) {
		t.Fatalf("adding 2 to 2 of 3: got %v, want ErrFull", err)
	}
	if st := mustStats(t, s); st.Total != 2 || s.Count() != 2 {
		t.Fatalf("a refused add stored something: %d items (count %d)", st.Total, s.Count())
	}
	mustAdd(t, s, reportItem(3, t0))
	if !s.Full() {
		t.Fatal("not full at 3 of 3")
	}
	if err := s.Add(t.Context(), []Item{reportItem(4, t0)}); !errors.Is(err, ErrFull) {
		t.Fatalf("got %v, want ErrFull", err)
	}
	c := Claim{Owner: "a", Now: t0, Until: t0.Add(time.Minute), Limit: 1}
	got := mustClaim(t, s, c)
	mustFinish(t, s, "a", Outcome{ID: got[0].ID, Done: true})
	if s.Full() || s.Count() != 2 {
		t.Fatalf("after one item was delivered: full %v, count %d", s.Full(), s.Count())
	}
	mustAdd(t, s, reportItem(4, t0))
}

func testClaimOrder(t *testing.T, b backend) {
	s, _ := b.open(t, 0)
	mustAdd(t, s, reportItem(1, t0.Add(3*time.Second)), reportItem(2, t0.Add(time.Second)),
		reportItem(3, t0.Add(2*time.Second)), reportItem(4, t0.Add(time.Hour)))
	now := t0.Add(10 * time.Second)
	c := Claim{Owner: "a", Now: now, Until: now.Add(time.Minute), Limit: 2}
	got := mustClaim(t, s, c)
	want := []string{"report:" + recordID(2), "report:" + recordID(3)}
	if !slices.Equal(ids(got), want) {
		t.Fatalf("claim: got %v, want %v", ids(got), want)
	}
	for _, it := range got {
		if !it.Claimed || !it.NextAttempt.Equal(c.Until) {
			t.Fatalf("claimed item: got %+v, want claimed until %v", it, c.Until)
		}
	}
	c.Limit = 10
	if got := mustClaim(t, s, c); !slices.Equal(ids(got), []string{"report:" + recordID(1)}) {
		t.Fatalf("second claim: got %v, want the one due item left", ids(got))
	}
}

func testClaimLapse(t *testing.T, b backend) {
	s, _ := b.open(t, 0)
	mustAdd(t, s, reportItem(1, t0))
	a := Claim{Owner: "a", Now: t0, Until: t0.Add(time.Minute), Limit: 5}
	if got := mustClaim(t, s, a); len(got) != 1 {
		t.Fatalf("a: got %d items, want 1", len(got))
	}
	bc := Claim{Owner: "b", Now: t0.Add(59 * time.Second), Until: t0.Add(time.Hour), Limit: 5}
	if got := mustClaim(t, s, bc); len(got) != 0 {
		t.Fatalf("b during a's claim: got %v, want nothing", ids(got))
	}
	bc.Now = t0.Add(61 * time.Second)
	got := mustClaim(t, s, bc)
	if len(got) != 1 || got[0].Attempts != 0 {
		t.Fatalf("b after a's claim lapsed: got %+v, want the item", got)
	}
}

func testFinish(t *testing.T, b backend) {
	s, _ := b.open(t, 0)
	mustAdd(t, s, reportItem(1, t0), reportItem(2, t0), consumeItem(3, t0), reportItem(4, t0))
	c := Claim{Owner: "a", Now: t0, Until: t0.Add(time.Minute), Limit: 10}
	if got := mustClaim(t, s, c); len(got) != 4 {
		t.Fatalf("claimed %d, want 4", len(got))
	}
	next := t0.Add(5 * time.Second)
	mustFinish(t, s, "a",
		Outcome{ID: "report:" + recordID(1), Done: true},
		Outcome{ID: "report:" + recordID(2), State: StatePending, Next: next, Error: "status 503"},
		Outcome{ID: "consume:" + recordID(3), State: StateUnknown, Next: t0, Error: "reset"},
		Outcome{ID: "report:" + recordID(4), State: StateFailed, Next: t0, Error: "status 422"},
		Outcome{ID: "report:" + recordID(99), Done: true}, // not stored: ignored
	)
	if _, ok := itemByID(t, s, "report:"+recordID(1)); ok {
		t.Fatal("a done item is still stored")
	}
	checks := []struct {
		id    string
		state State
		err   string
	}{
		{"report:" + recordID(2), StatePending, "status 503"},
		{"consume:" + recordID(3), StateUnknown, "reset"},
		{"report:" + recordID(4), StateFailed, "status 422"},
	}
	for _, ck := range checks {
		it, ok := itemByID(t, s, ck.id)
		if !ok || it.State != ck.state || it.Attempts != 1 || it.LastError != ck.err || it.Claimed {
			t.Fatalf("%s: got %+v, want %s after 1 attempt with %q", ck.id, it, ck.state, ck.err)
		}
	}
	st := mustStats(t, s)
	if st.Total != 3 || st.Report.Pending != 1 || st.Consume.Unknown != 1 || st.Report.Failed != 1 {
		t.Fatalf("stats: got %+v", st)
	}
	c.Now = next.Add(-time.Millisecond)
	if got := mustClaim(t, s, c); len(got) != 0 {
		t.Fatalf("before the retry is due: got %v", ids(got))
	}
	c.Now = next
	if got := mustClaim(t, s, c); !slices.Equal(ids(got), []string{"report:" + recordID(2)}) {
		t.Fatalf("when due: got %v, want only the retried report (parked ones stay)", ids(got))
	}
}

func testFinishStaleOwner(t *testing.T, b backend) {
	s, _ := b.open(t, 0)
	mustAdd(t, s, reportItem(1, t0), reportItem(2, t0))
	mustClaim(t, s, Claim{Owner: "a", Now: t0, Until: t0.Add(time.Second), Limit: 5})
	later := t0.Add(2 * time.Second)
	mustClaim(t, s, Claim{Owner: "b", Now: later, Until: later.Add(time.Minute), Limit: 5})

	// a's claim lapsed: its retry is ignored, its delivery still counts.
	mustFinish(t, s, "a",
		Outcome{ID: "report:" + recordID(1), State: StateFailed, Next: later, Error: "x"},
		Outcome{ID: "report:" + recordID(2), Done: true},
	)
	it, ok := itemByID(t, s, "report:"+recordID(1))
	if !ok || it.State != StatePending || !it.Claimed || it.Attempts != 0 {
		t.Fatalf("got %+v, want b's claim untouched", it)
	}
	if _, ok := itemByID(t, s, "report:"+recordID(2)); ok {
		t.Fatal("a delivered item is still stored")
	}
}

func testBeginLapse(t *testing.T, b backend) {
	s, _ := b.open(t, 0)
	mustAdd(t, s, consumeItem(1, t0), consumeItem(2, t0), reportItem(3, t0))
	c := Claim{Owner: "a", Now: t0, Until: t0.Add(time.Second), Limit: 10}
	mustClaim(t, s, c)
	c.Until = t0.Add(time.Minute)
	held, err := s.Begin(t.Context(), c, []string{
		"consume:" + recordID(1), "report:" + recordID(3), "consume:" + recordID(404),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(held, []string{"consume:" + recordID(1)}) {
		t.Fatalf("begin: got %v, want only the held consume", held)
	}
	held, _ = s.Begin(t.Context(), Claim{Owner: "b", Now: t0, Until: c.Until},
		[]string{"consume:" + recordID(2)})
	if len(held) != 0 {
		t.Fatalf("begin by another owner: got %v, want nothing", held)
	}

	// The deliverer vanishes. After the lapse the begun consume is
	// unknown, never handed out again; the others come back.
	now := t0.Add(2 * time.Minute)
	got := mustClaim(t, s, Claim{Owner: "b", Now: now, Until: now.Add(time.Minute), Limit: 10})
	want := []string{"consume:" + recordID(2), "report:" + recordID(3)}
	slices.Sort(want)
	gotIDs := ids(got)
	slices.Sort(gotIDs)
	if !slices.Equal(gotIDs, want) {
		t.Fatalf("claim after the lapse: got %v, want %v", gotIDs, want)
	}
	it, _ := itemByID(t, s, "consume:"+recordID(1))
	if it.State != StateUnknown || it.LastError != lapseNote || it.Claimed {
		t.Fatalf("begun consume: got %+v, want unknown", it)
	}
}

func testResolve(t *testing.T, b backend) {
	s, _ := b.open(t, 0)
	mustAdd(t, s, consumeItem(1, t0), reportItem(2, t0), reportItem(3, t0))
	mustClaim(t, s, Claim{Owner: "a", Now: t0, Until: t0.Add(time.Minute), Limit: 2})
	mustFinish(t, s, "a",
		Outcome{ID: "consume:" + recordID(1), State: StateUnknown, Next: t0, Error: "reset"},
		Outcome{ID: "report:" + recordID(2), State: StateFailed, Next: t0, Error: "422"})
	ctx := t.Context()
	if err := s.Resolve(ctx, "report:"+recordID(9), ActionDrop, t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: got %v, want ErrNotFound", err)
	}
	err := s.Resolve(ctx, "report:"+recordID(3), ActionRequeue, t0)
	if !errors.Is(err, ErrNotParked) {
		t.Fatalf("pending item: got %v, want ErrNotParked", err)
	}
	if err := s.Resolve(ctx, "report:"+recordID(2), "retry", t0); err == nil {
		t.Fatal("bad action: got nil, want an error")
	}

	later := t0.Add(time.Hour)
	if err := s.Resolve(ctx, "consume:"+recordID(1), ActionRequeue, later); err != nil {
		t.Fatal(err)
	}
	if err := s.Resolve(ctx, "report:"+recordID(2), ActionDrop, later); err != nil {
		t.Fatal(err)
	}
	got := mustClaim(t, s, Claim{Owner: "b", Now: later, Until: later.Add(time.Minute), Limit: 9})
	want := []string{"consume:" + recordID(1), "report:" + recordID(3)}
	if gotIDs := ids(got); !slices.Equal(gotIDs, want) && !slices.Equal(gotIDs, rev(want)) {
		t.Fatalf("claim after requeue: got %v, want the requeued consume and report 3", gotIDs)
	}
	it, _ := itemByID(t, s, "consume:"+recordID(1))
	if it.Attempts != 1 || it.LastError != "reset" {
		t.Fatalf("requeued item lost its history: %+v", it)
	}
	if st := mustStats(t, s); st.Total != 2 {
		t.Fatalf("after drop: %d items, want 2", st.Total)
	}
}

func testReopen(t *testing.T, b backend) {
	s, reopen := b.open(t, 0)
	mustAdd(t, s, reportItem(1, t0), reportItem(2, t0), consumeItem(3, t0), consumeItem(4, t0))
	c := Claim{Owner: "a", Now: t0, Until: t0.Add(time.Minute), Limit: 10}
	mustClaim(t, s, c)
	if _, err := s.Begin(t.Context(), c, []string{"consume:" + recordID(3)}); err != nil {
		t.Fatal(err)
	}
	mustFinish(t, s, "a", Outcome{ID: "report:" + recordID(1), Done: true})

	// Close without finishing the rest: a crash after the writes.
	s = reopen()
	if st := mustStats(t, s); st.Total != 3 {
		t.Fatalf("after reopen: %d items, want 3", st.Total)
	}
	now := t0.Add(2 * time.Minute)
	got := mustClaim(t, s, Claim{Owner: "b", Now: now, Until: now.Add(time.Minute), Limit: 10})
	gotIDs := ids(got)
	slices.Sort(gotIDs)
	want := []string{"consume:" + recordID(4), "report:" + recordID(2)}
	if !slices.Equal(gotIDs, want) {
		t.Fatalf("redelivered after reopen: got %v, want only the unacked %v", gotIDs, want)
	}
	it, _ := itemByID(t, s, "consume:"+recordID(3))
	if it.State != StateUnknown {
		t.Fatalf("consume begun before the crash: got %s, want unknown", it.State)
	}
}

func testConcurrentAdds(t *testing.T, b backend) {
	s, _ := b.open(t, 150)
	var wg sync.WaitGroup
	errs := make([]error, 200)
	for i := range 200 {
		wg.Go(func() { errs[i] = s.Add(t.Context(), []Item{reportItem(i, t0)}) })
	}
	wg.Wait()
	full := 0
	for _, err := range errs {
		switch {
		case errors.Is(err, ErrFull):
			full++
		case err != nil:
			t.Fatalf("add: %v", err)
		}
	}
	if st := mustStats(t, s); st.Total != 150 || full != 50 || !s.Full() {
		t.Fatalf("got %d stored and %d refused, want 150 and 50", st.Total, full)
	}
}

func testClosed(t *testing.T, b backend) {
	s, _ := b.open(t, 0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(t.Context(), []Item{reportItem(1, t0)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("add after close: got %v, want ErrClosed", err)
	}
	_, err := s.Claim(t.Context(), Claim{Owner: "a", Now: t0, Until: t0, Limit: 1})
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("claim after close: got %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

func testBadInput(t *testing.T, b backend) {
	s, _ := b.open(t, 0)
	bad := reportItem(1, t0)
	bad.ID = "report:" + recordID(2)
	wrongKind := reportItem(1, t0)
	wrongKind.Kind = KindConsume
	parked := reportItem(1, t0)
	parked.State = StateFailed
	for i, it := range []Item{bad, wrongKind, parked} {
		if err := s.Add(t.Context(), []Item{it}); err == nil {
			t.Errorf("item %d: got nil, want an error", i)
		}
	}
	if err := s.Finish(t.Context(), "a", []Outcome{{ID: "x", State: "gone"}}); err == nil {
		t.Error("finish with a bad state: got nil, want an error")
	}
	if _, err := s.Claim(t.Context(), Claim{Now: t0, Limit: 1}); err == nil {
		t.Error("claim without an owner: got nil, want an error")
	}
	if st := mustStats(t, s); st.Total != 0 {
		t.Errorf("bad input stored %d items", st.Total)
	}
}

// TestBoltReopenReleasesClaims: after a crash, one process owns the file,
// so every claim is released at once on reopen (no wait for the lapse).
func TestBoltReopenReleasesClaims(t *testing.T) {
	path := t.TempDir() + "/outbox.db"
	s := openBoltAt(t, path, 0, nil)
	mustAdd(t, s, reportItem(1, t0), consumeItem(2, t0), consumeItem(3, t0))
	c := Claim{Owner: "a", Now: t0, Until: t0.Add(time.Hour), Limit: 10}
	mustClaim(t, s, c)
	if _, err := s.Begin(t.Context(), c, []string{"consume:" + recordID(2)}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()

	s = openBoltAt(t, path, 0, func() time.Time { return t0.Add(time.Second) })
	now := t0.Add(time.Second)
	got := mustClaim(t, s, Claim{Owner: "b", Now: now, Until: now.Add(time.Hour), Limit: 10})
	gotIDs := ids(got)
	slices.Sort(gotIDs)
	want := []string{"consume:" + recordID(3), "report:" + recordID(1)}
	if !slices.Equal(gotIDs, want) {
		t.Fatalf("got %v, want %v at once", gotIDs, want)
	}
	it, _ := itemByID(t, s, "consume:"+recordID(2))
	if it.State != StateUnknown || it.LastError != stopNote {
		t.Fatalf("consume in flight at the crash: got %+v, want unknown", it)
	}
}

// TestBoltFileLocked: a second open of a file in use fails.
func TestBoltFileLocked(t *testing.T) {
	path := t.TempDir() + "/outbox.db"
	openBoltAt(t, path, 0, nil)
	s, err := OpenBolt(path, BoltOptions{LockTimeout: 50 * time.Millisecond})
	if err == nil {
		_ = s.Close()
		t.Fatal("second open: got a store, want an error")
	}
}

// TestPostgresOptions: bad options fail OpenPostgres.
func TestPostgresOptions(t *testing.T) {
	pool := sharedPool(t)
	for _, o := range []PostgresOptions{
		{Table: "Outbox"}, {Table: "a;drop"}, {Table: "x", Max: -1},
		{Table: fmt.Sprintf("t%060d", 0)},
	} {
		if s, err := OpenPostgres(t.Context(), pool, o); err == nil {
			_ = s.Close()
			t.Errorf("%+v: got a store, want an error", o)
		}
	}
	if _, err := OpenPostgres(t.Context(), nil, PostgresOptions{}); err == nil {
		t.Error("nil pool: got a store, want an error")
	}
}

// TestPostgresConcurrentOpen: replicas starting together create the
// table once, without errors.
func TestPostgresConcurrentOpen(t *testing.T) {
	table := freshTable(t)
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Go(func() {
			s, err := OpenPostgres(t.Context(), sharedPool(t), PostgresOptions{Table: table})
			if err == nil {
				_ = s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("open: %v", err)
		}
	}
}

// rev returns ss reversed.
func rev(ss []string) []string {
	out := slices.Clone(ss)
	slices.Reverse(out)
	return out
}

// TestBoltCreatesItsDirectory: the outbox file's directory is made when
// missing, as the ledger's is, so a configured path works on a fresh host.
func TestBoltCreatesItsDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "egress", "outbox.db")
	s, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatalf("OpenBolt in a missing directory: %v", err)
	}
	mustAdd(t, s, reportItem(1, t0))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
