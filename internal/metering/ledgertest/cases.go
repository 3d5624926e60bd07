package ledgertest

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

func testProvisionIdempotent(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{DefaultDemoTokens: 5})
	ctx := context.Background()

	first, err := l.Provision(ctx, metering.ProvisionRequest{
		UserAutomationID: 1, UserID: 7, DemoTokens: ptr(10),
	})
	if err != nil {
		t.Fatalf("first provision: %v", err)
	}
	if !first.Created || first.Account.DemoTokens != 10 || first.Account.UserID != 7 {
		t.Fatalf("first provision: got %+v, want created with 10 demo tokens", first)
	}

	// Again, with another grant and refreshed facts: no second grant.
	again, err := l.Provision(ctx, metering.ProvisionRequest{
		UserAutomationID: 1, UserID: 8, DemoTokens: ptr(50), BotTokenGiven: true,
	})
	if err != nil {
		t.Fatalf("second provision: %v", err)
	}
	want := first.Account
	want.UserID, want.BotTokenGiven = 8, true
	if again.Created || !sameAccount(again.Account, want) {
		t.Errorf("second provision: got %+v, want not created and %+v", again, want)
	}
	if got := account(t, l, 1); !sameAccount(got, want) {
		t.Errorf("stored account: got %+v, want %+v", got, want)
	}

	// A third, with a null grant, changes nothing either.
	third, err := l.Provision(ctx, metering.ProvisionRequest{
		UserAutomationID: 1, UserID: 8, BotTokenGiven: true,
	})
	if err != nil || third.Created || third.Account.DemoTokens != 10 {
		t.Errorf("third provision: got %+v, %v, want not created with 10 demo", third, err)
	}

	es := checkJournal(t, l, 1)
	if n := countKind(es, 1, metering.EntryProvision); n != 1 {
		t.Errorf("provision entries: got %d, want 1", n)
	}
	if len(es) != 1 || es[0].DemoDelta != 10 {
		t.Errorf("journal: got %+v, want one grant of 10", es)
	}
}

func testProvisionDemoDefault(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{DefaultDemoTokens: 5})
	ctx := context.Background()
	tests := []struct {
		name string
		id   int64
		demo *int64
		want int64
	}{
		{name: "null demo gets the default", id: 1, demo: nil, want: 5},
		{name: "explicit zero is zero", id: 2, demo: ptr(0), want: 0},
		{name: "explicit value", id: 3, demo: ptr(12), want: 12},
	}
	for _, tt := range tests {
		res, err := l.Provision(ctx, metering.ProvisionRequest{
			UserAutomationID: tt.id, DemoTokens: tt.demo,
		})
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if res.Account.DemoTokens != tt.want {
			t.Errorf("%s: got %d demo tokens, want %d", tt.name, res.Account.DemoTokens, tt.want)
		}
	}

	// A null grant on an existing zero-demo account grants nothing.
	res, err := l.Provision(ctx, metering.ProvisionRequest{UserAutomationID: 2})
	if err != nil || res.Account.DemoTokens != 0 {
		t.Errorf("re-provision with null demo: got %+v, %v, want 0 demo tokens", res, err)
	}
	checkJournal(t, l, 1, 2, 3)
}

func testProvisionNegativeDemo(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{})
	ctx := context.Background()
	_, err := l.Provision(ctx, metering.ProvisionRequest{UserAutomationID: 1, DemoTokens: ptr(-1)})
	errorIs(t, "negative demo", err, metering.ErrInvalidUnits)
	_, err = l.Account(ctx, 1)
	errorIs(t, "account after refused provision", err, metering.ErrUnknownAccount)
	if es := entries(t, l); len(es) != 0 {
		t.Errorf("journal: got %+v, want empty", es)
	}
}

func testDemoWhole(t *testing.T, open OpenFunc) {
	// The empty rule must behave as DemoWhole, the platform's rule.
	for _, rule := range []metering.DemoRule{"", metering.DemoWhole} {
		l := fresh(t, open, metering.Options{DemoRule: rule})
		tests := []struct {
			name             string
			id               int64
			demo, paid, unit int64
			want             metering.ConsumeResult
		}{
			{
				name: "demo 3 cannot cover 5, paid untouched", id: 1,
				demo: 3, paid: 100, unit: 5,
				want: metering.ConsumeResult{RemainingDemo: 3, RemainingPaid: 100,
					Message: metering.MsgInsufficientDemo},
			},
			{
				name: "demo over, paid used", id: 2, demo: 0, paid: 100, unit: 5,
				want: metering.ConsumeResult{Accepted: true, RemainingPaid: 95,
					PaidDebited: 5, Message: metering.MsgConsumed},
			},
			{
				name: "demo covers exactly", id: 3, demo: 10, paid: 100, unit: 10,
				want: metering.ConsumeResult{Accepted: true, RemainingPaid: 100,
					DemoDebited: 10, Message: metering.MsgConsumed},
			},
			{
				name: "paid short", id: 4, demo: 0, paid: 4, unit: 5,
				want: metering.ConsumeResult{RemainingPaid: 4,
					Message: metering.MsgInsufficient},
			},
		}
		for _, tt := range tests {
			provision(t, l, tt.id, tt.demo, tt.paid)
			got := consume(t, l, metering.ConsumeRequest{
				UserAutomationID: tt.id, Units: tt.unit, UsageType: "chat",
			})
			if got != tt.want {
				t.Errorf("rule %q, %s: got %+v, want %+v", rule, tt.name, got, tt.want)
			}
			wantBalances(t, l, tt.id, tt.want.RemainingDemo, tt.want.RemainingPaid)
		}

		// Once the demo of account 3 is spent, paid tokens are used.
		got := consume(t, l, metering.ConsumeRequest{UserAutomationID: 3, Units: 5})
		if !got.Accepted || got.PaidDebited != 5 || got.RemainingPaid != 95 {
			t.Errorf("rule %q, after demo spent: got %+v, want 5 paid debited", rule, got)
		}
		checkJournal(t, l, 1, 2, 3, 4)
	}
}

func testDemoSpill(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{DemoRule: metering.DemoSpill})
	provision(t, l, 1, 3, 100)
	got := consume(t, l, metering.ConsumeRequest{UserAutomationID: 1, Units: 5})
	want := metering.ConsumeResult{
		Accepted: true, RemainingPaid: 98, DemoDebited: 3, PaidDebited: 2,
		Message: metering.MsgConsumed,
	}
	if got != want {
		t.Errorf("spill: got %+v, want %+v", got, want)
	}

	provision(t, l, 2, 3, 1)
	got = consume(t, l, metering.ConsumeRequest{UserAutomationID: 2, Units: 5})
	if got.Accepted || got.Message != metering.MsgInsufficient {
		t.Errorf("spill short: got %+v, want refused with %q", got, metering.MsgInsufficient)
	}
	wantBalances(t, l, 2, 3, 1)
	checkJournal(t, l, 1, 2)
}

func testRefusalChangesNothing(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{})
	provision(t, l, 1, 3, 0)
	before := len(entries(t, l))

	res, err := l.Consume(context.Background(), metering.ConsumeRequest{
		UserAutomationID: 1, Units: 5, UsageType: "chat",
	})
	if err != nil {
		t.Fatalf("a refusal must not be an error: %v", err)
	}
	if res.Accepted || res.Message == "" || res.DemoDebited != 0 || res.PaidDebited != 0 {
		t.Errorf("got %+v, want a refusal with a message and no debit", res)
	}
	wantBalances(t, l, 1, 3, 0)
	if after := len(entries(t, l)); after != before {
		t.Errorf("journal grew from %d to %d on a refusal", before, after)
	}
}

func testUnknownAccount(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{DefaultDemoTokens: 50})
	ctx := context.Background()
	req := metering.ConsumeRequest{UserAutomationID: 404, Units: 1, IdempotencyKey: "u1"}

	_, err := l.Consume(ctx, req)
	errorIs(t, "consume", err, metering.ErrUnknownAccount)
	_, err = l.Credit(ctx, metering.CreditRequest{UserAutomationID: 404, Units: 1})
	errorIs(t, "credit", err, metering.ErrUnknownAccount)
	_, err = l.Account(ctx, 404)
	errorIs(t, "account", err, metering.ErrUnknownAccount)

	// The failed consume claimed nothing: once provisioned, the key works.
	if _, err := l.Provision(ctx, metering.ProvisionRequest{UserAutomationID: 404}); err != nil {
		t.Fatalf("provision: %v", err)
	}
	res := consume(t, l, req)
	if !res.Accepted || res.Replayed {
		t.Errorf("consume after provision: got %+v, want accepted, not replayed", res)
	}
	checkJournal(t, l, 404)
}

func testInvalidUnits(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{MaxUnits: 50})
	ctx := context.Background()
	provision(t, l, 1, 1000, 0)
	for _, units := range []int64{0, -1, 51, math.MinInt64, math.MaxInt64} {
		_, err := l.Consume(ctx, metering.ConsumeRequest{UserAutomationID: 1, Units: units})
		errorIs(t, "consume units", err, metering.ErrInvalidUnits)
	}
	for _, units := range []int64{0, -5} {
		_, err := l.Credit(ctx, metering.CreditRequest{UserAutomationID: 1, Units: units})
		errorIs(t, "credit units", err, metering.ErrInvalidUnits)
	}
	wantBalances(t, l, 1, 1000, 0)

	// The bound itself is allowed.
	res := consume(t, l, metering.ConsumeRequest{UserAutomationID: 1, Units: 50})
	if !res.Accepted {
		t.Errorf("units == MaxUnits: got %+v, want accepted", res)
	}
	checkJournal(t, l, 1)
}

func testInvalidIdempotencyKey(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{})
	ctx := context.Background()
	provision(t, l, 1, 100, 0)
	bad := []string{"a\nb", strings.Repeat("k", metering.MaxIdempotencyKeyLen+1), "\x00"}
	for _, key := range bad {
		_, err := l.Consume(ctx, metering.ConsumeRequest{
			UserAutomationID: 1, Units: 1, IdempotencyKey: key,
		})
		errorIs(t, "consume key", err, metering.ErrInvalidIdempotencyKey)
		_, err = l.Credit(ctx, metering.CreditRequest{
			UserAutomationID: 1, Units: 1, IdempotencyKey: key,
		})
		errorIs(t, "credit key", err, metering.ErrInvalidIdempotencyKey)
	}
	wantBalances(t, l, 1, 100, 0)
}

func testReplayAccepted(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{})
	provision(t, l, 1, 100, 0)
	req := metering.ConsumeRequest{
		UserAutomationID: 1, Units: 10, UsageType: "chat", IdempotencyKey: "k1",
	}

	first := consume(t, l, req)
	if !first.Accepted || first.Replayed {
		t.Fatalf("first: got %+v, want accepted, not replayed", first)
	}

	// Another debit moves the balance; the replay still answers as first.
	consume(t, l, metering.ConsumeRequest{UserAutomationID: 1, Units: 5})
	for i := range 3 {
		again := consume(t, l, req)
		want := first
		want.Replayed = true
		if again != want {
			t.Errorf("replay %d: got %+v, want %+v", i, again, want)
		}
	}

	wantBalances(t, l, 1, 85, 0)
	es := checkJournal(t, l, 1)
	keyed := 0
	for _, e := range es {
		if e.IdempotencyKey == "k1" {
			keyed++
		}
	}
	if keyed != 1 {
		t.Errorf("journal entries for k1: got %d, want 1", keyed)
	}
}

func testReplayRefusal(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{})
	ctx := context.Background()
	provision(t, l, 1, 0, 2)
	req := metering.ConsumeRequest{UserAutomationID: 1, Units: 5, IdempotencyKey: "r1"}

	first := consume(t, l, req)
	if first.Accepted {
		t.Fatalf("first: got %+v, want refused", first)
	}

	// Funds arrive, but the key already holds its answer: a refusal.
	_, err := l.Credit(ctx, metering.CreditRequest{UserAutomationID: 1, Units: 100})
	if err != nil {
		t.Fatalf("credit: %v", err)
	}
	again := consume(t, l, req)
	want := first
	want.Replayed = true
	if again != want {
		t.Errorf("replayed refusal: got %+v, want %+v", again, want)
	}
	wantBalances(t, l, 1, 0, 102)
	if n := countKind(checkJournal(t, l, 1), 1, metering.EntryDebit); n != 0 {
		t.Errorf("debit entries: got %d, want 0", n)
	}
}

func testIdempotencyConflict(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{})
	ctx := context.Background()
	provision(t, l, 1, 100, 0)
	provision(t, l, 2, 100, 0)
	consume(t, l, metering.ConsumeRequest{
		UserAutomationID: 1, Units: 10, UsageType: "chat", IdempotencyKey: "k",
	})
	if _, err := l.Credit(ctx, metering.CreditRequest{
		UserAutomationID: 1, Units: 10, Reason: "buy", IdempotencyKey: "c",
	}); err != nil {
		t.Fatalf("credit: %v", err)
	}

	consumes := []metering.ConsumeRequest{
		{UserAutomationID: 1, Units: 11, UsageType: "chat", IdempotencyKey: "k"},
		{UserAutomationID: 2, Units: 10, UsageType: "chat", IdempotencyKey: "k"},
		{UserAutomationID: 1, Units: 10, UsageType: "search", IdempotencyKey: "k"},
		{UserAutomationID: 1, Units: 10, UsageType: "buy", IdempotencyKey: "c"},
	}
	for _, req := range consumes {
		_, err := l.Consume(ctx, req)
		errorIs(t, "consume "+req.IdempotencyKey, err, metering.ErrIdempotencyConflict)
	}
	credits := []metering.CreditRequest{
		{UserAutomationID: 1, Units: 10, Reason: "chat", IdempotencyKey: "k"},
		{UserAutomationID: 1, Units: 11, Reason: "buy", IdempotencyKey: "c"},
	}
	for _, req := range credits {
		_, err := l.Credit(ctx, req)
		errorIs(t, "credit "+req.IdempotencyKey, err, metering.ErrIdempotencyConflict)
	}
	wantBalances(t, l, 1, 90, 10)
	wantBalances(t, l, 2, 100, 0)
	checkJournal(t, l, 1, 2)
}

func testCredit(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{})
	ctx := context.Background()
	provision(t, l, 1, 0, 0)

	got, err := l.Credit(ctx, metering.CreditRequest{
		UserAutomationID: 1, Units: 100, Reason: "purchase",
	})
	if err != nil {
		t.Fatalf("credit: %v", err)
	}
	if got.PaidTokens != 100 || got.DemoTokens != 0 {
		t.Errorf("credit: got %+v, want 100 paid tokens", got)
	}

	// A credit that would overflow the balance is refused.
	_, err = l.Credit(ctx, metering.CreditRequest{UserAutomationID: 1, Units: math.MaxInt64})
	errorIs(t, "overflowing credit", err, metering.ErrInvalidUnits)

	es := checkJournal(t, l, 1)
	last := es[len(es)-1]
	if last.Kind != metering.EntryCredit || last.PaidDelta != 100 || last.Reason != "purchase" {
		t.Errorf("credit entry: got %+v, want a credit of 100 for purchase", last)
	}
}

func testCreditReplay(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{})
	ctx := context.Background()
	provision(t, l, 1, 0, 0)
	req := metering.CreditRequest{UserAutomationID: 1, Units: 50, IdempotencyKey: "c1"}

	first, err := l.Credit(ctx, req)
	if err != nil {
		t.Fatalf("credit: %v", err)
	}
	if _, err := l.Credit(ctx, metering.CreditRequest{
		UserAutomationID: 1, Units: 25, IdempotencyKey: "c2",
	}); err != nil {
		t.Fatalf("second credit: %v", err)
	}
	again, err := l.Credit(ctx, req)
	if err != nil {
		t.Fatalf("replayed credit: %v", err)
	}
	if !sameAccount(again, first) {
		t.Errorf("replayed credit: got %+v, want the first answer %+v", again, first)
	}
	wantBalances(t, l, 1, 0, 75)
	if n := countKind(checkJournal(t, l, 1), 1, metering.EntryCredit); n != 2 {
		t.Errorf("credit entries: got %d, want 2", n)
	}
}

func testJournalPaging(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{})
	ctx := context.Background()
	provision(t, l, 1, 0, 0)

	// 300 credits from 30 writers: more than one page of any backend.
	var wg sync.WaitGroup
	for range 30 {
		wg.Go(func() {
			for range 10 {
				_, err := l.Credit(ctx, metering.CreditRequest{UserAutomationID: 1, Units: 1})
				if err != nil {
					t.Errorf("credit: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()

	all := checkJournal(t, l, 1)
	if len(all) != 301 {
		t.Fatalf("journal: got %d entries, want 301", len(all))
	}
	tests := []struct {
		name  string
		after uint64
		limit int
		want  []metering.Entry
	}{
		{name: "limit", after: 0, limit: 270, want: all[:270]},
		{name: "after", after: all[99].Seq, limit: 0, want: all[100:]},
		{name: "after and limit", after: all[9].Seq, limit: 2, want: all[10:12]},
		{name: "negative limit is all", after: 0, limit: -1, want: all},
		{name: "after the end", after: all[300].Seq, limit: 0, want: nil},
	}
	for _, tt := range tests {
		var got []metering.Entry
		err := l.Journal(ctx, tt.after, tt.limit, func(e metering.Entry) error {
			got = append(got, e)
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !sameEntries(got, tt.want) {
			t.Errorf("%s: got %d entries, want %d (or different ones)",
				tt.name, len(got), len(tt.want))
		}
	}

	// fn's error stops the walk and comes back as is.
	stop := errors.New("stop")
	visited := 0
	err := l.Journal(ctx, 0, 0, func(metering.Entry) error {
		visited++
		return stop
	})
	if err != stop || visited != 1 {
		t.Errorf("stopping fn: got %v after %d entries, want stop after 1", err, visited)
	}
}

func testJournalCallback(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{})
	ctx := context.Background()
	provision(t, l, 1, 100, 0)
	err := l.Journal(ctx, 0, 1, func(e metering.Entry) error {
		if _, err := l.Account(ctx, e.UserAutomationID); err != nil {
			return err
		}
		_, err := l.Consume(ctx, metering.ConsumeRequest{UserAutomationID: 1, Units: 1})
		return err
	})
	if err != nil {
		t.Fatalf("journal with a callback that uses the ledger: %v", err)
	}
	wantBalances(t, l, 1, 99, 0)
}

func testClock(t *testing.T, open OpenFunc) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	l := fresh(t, open, metering.Options{Now: fixedClock(at)})
	provision(t, l, 1, 10, 0)
	consume(t, l, metering.ConsumeRequest{UserAutomationID: 1, Units: 1})
	if got := account(t, l, 1).ProvisionedAt; !got.Equal(at) {
		t.Errorf("provisioned at: got %v, want %v", got, at)
	}
	for _, e := range entries(t, l) {
		if !e.Time.Equal(at) {
			t.Errorf("entry %d time: got %v, want %v", e.Seq, e.Time, at)
		}
	}
}

func testCanceledContext(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{})
	provision(t, l, 1, 10, 0)
	consume(t, l, metering.ConsumeRequest{UserAutomationID: 1, Units: 1, IdempotencyKey: "k"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	_, err := l.Consume(ctx, metering.ConsumeRequest{UserAutomationID: 1, Units: 1})
	errorIs(t, "consume", err, context.Canceled)
	_, err = l.Provision(ctx, metering.ProvisionRequest{UserAutomationID: 2})
	errorIs(t, "provision", err, context.Canceled)
	_, err = l.Credit(ctx, metering.CreditRequest{UserAutomationID: 1, Units: 1})
	errorIs(t, "credit", err, context.Canceled)
	_, err = l.Refund(ctx, metering.RefundRequest{UserAutomationID: 1, IdempotencyKey: "k"})
	errorIs(t, "refund", err, context.Canceled)
	_, err = l.Settle(ctx, metering.SettleRequest{UserAutomationID: 1, IdempotencyKey: "k"})
	errorIs(t, "settle", err, context.Canceled)
	_, err = l.Reconcile(ctx, metering.ReconcileRequest{UserAutomationID: 1})
	errorIs(t, "reconcile", err, context.Canceled)

	wantBalances(t, l, 1, 9, 0)
	_, err = l.Account(context.Background(), 2)
	errorIs(t, "account 2", err, metering.ErrUnknownAccount)
}

func testClosed(t *testing.T, open OpenFunc) {
	l := fresh(t, open, metering.Options{})
	ctx := context.Background()
	provision(t, l, 1, 10, 0)
	consume(t, l, metering.ConsumeRequest{UserAutomationID: 1, Units: 1, IdempotencyKey: "k"})
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}

	_, err := l.Provision(ctx, metering.ProvisionRequest{UserAutomationID: 2})
	errorIs(t, "provision", err, metering.ErrClosed)
	_, err = l.Consume(ctx, metering.ConsumeRequest{UserAutomationID: 1, Units: 1})
	errorIs(t, "consume", err, metering.ErrClosed)
	_, err = l.Credit(ctx, metering.CreditRequest{UserAutomationID: 1, Units: 1})
	errorIs(t, "credit", err, metering.ErrClosed)
	_, err = l.Refund(ctx, metering.RefundRequest{UserAutomationID: 1, IdempotencyKey: "k"})
	errorIs(t, "refund", err, metering.ErrClosed)
	_, err = l.Settle(ctx, metering.SettleRequest{UserAutomationID: 1, IdempotencyKey: "k"})
	errorIs(t, "settle", err, metering.ErrClosed)
	_, err = l.Reconcile(ctx, metering.ReconcileRequest{UserAutomationID: 1})
	errorIs(t, "reconcile", err, metering.ErrClosed)
	_, err = l.Account(ctx, 1)
	errorIs(t, "account", err, metering.ErrClosed)
	err = l.Journal(ctx, 0, 0, func(metering.Entry) error { return nil })
	errorIs(t, "journal", err, metering.ErrClosed)
}

// sameAccount compares accounts, times by instant.
func sameAccount(a, b metering.Account) bool {
	ta, tb := a.ProvisionedAt, b.ProvisionedAt
	a.ProvisionedAt, b.ProvisionedAt = time.Time{}, time.Time{}
	return a == b && ta.Equal(tb)
}

// sameEntries compares journal entries, times by instant.
func sameEntries(a, b []metering.Entry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		tx, ty := x.Time, y.Time
		x.Time, y.Time = time.Time{}, time.Time{}
		if x != y || !tx.Equal(ty) {
			return false
		}
	}
	return true
}
