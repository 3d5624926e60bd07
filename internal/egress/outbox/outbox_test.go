package outbox

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestItemsOfARecord(t *testing.T) {
	static := charged(1, 5)
	static.Leased = false
	noUnits := charged(1, 0)
	noUser := charged(1, 5)
	noUser.UserAutomationID = 0
	tests := []struct {
		name    string
		consume bool
		rec     Record
		want    []Kind
		skip    bool // SkipReports
	}{
		{"leased", false, leased(1), []Kind{KindReport}, false},
		{"leased, reports off", false, leased(1), nil, true},
		{"leased and charged, reports off", true, charged(1, 5), []Kind{KindConsume}, true},
		{"leased and charged, forwarding off", false, charged(1, 5), []Kind{KindReport}, false},
		{"leased and charged", true, charged(1, 5), []Kind{KindReport, KindConsume}, false},
		{"static key, charged", true, static, []Kind{KindConsume}, false},
		{"no units", true, noUnits, []Kind{KindReport}, false},
		{"no user", true, noUser, []Kind{KindReport}, false},
		{"static key, nothing charged", true, func() Record {
			r := leased(1)
			r.Leased = false
			return r
		}(), nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := t0.Add(time.Minute)
			ob := New(nil, Options{Consume: tt.consume, SkipReports: tt.skip,
				Now: func() time.Time { return now }})
			var got []Kind
			for _, it := range ob.Items(tt.rec) {
				got = append(got, it.Kind)
				if it.ID != ItemID(it.Kind, tt.rec.ID) || it.State != StatePending ||
					!it.NextAttempt.Equal(now) || !it.CreatedAt.Equal(now) || it.Record != tt.rec {
					t.Errorf("item: got %+v", it)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestEnqueue(t *testing.T) {
	store := openBoltAt(t, filepath.Join(t.TempDir(), "o.db"), 3, nil)
	ob := New(store, Options{Consume: true})
	ctx := t.Context()

	for _, id := range []string{"", strings.Repeat("a", 65), "a:b", "a b", "é"} {
		r := leased(1)
		r.ID = id
		if err := ob.Enqueue(ctx, r); err == nil {
			t.Errorf("id %q: got nil, want an error", id)
		}
	}
	if err := ob.Enqueue(ctx, charged(1, 5)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ob.wake:
	default:
		t.Fatal("enqueue did not wake the deliverer")
	}
	if err := ob.Enqueue(ctx, charged(1, 5)); err != nil {
		t.Fatalf("enqueue again: %v", err)
	}
	if st := mustStats(t, store); st.Total != 2 {
		t.Fatalf("after enqueueing one record twice: %d items, want 2", st.Total)
	}
	if ob.Full() {
		t.Fatal("full at 2 of 3")
	}
	err := ob.Enqueue(ctx, charged(2, 5))
	if !errors.Is(err, ErrFull) {
		t.Fatalf("2 more items into 2 of 3: got %v, want ErrFull", err)
	}
	if err := ob.Enqueue(ctx, leased(3)); err != nil {
		t.Fatal(err)
	}
	if !ob.Full() {
		t.Fatal("not full at 3 of 3")
	}
	nothing := leased(4)
	nothing.Leased = false
	if err := ob.Enqueue(ctx, nothing); err != nil {
		t.Fatalf("a record that needs no item, when full: got %v, want nil", err)
	}
}
