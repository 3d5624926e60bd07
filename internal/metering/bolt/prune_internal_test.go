package bolt

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// TestDeleteOldRechecks: the write that deletes what a scan found reads
// each record again and keeps one claimed anew since (younger than the
// cutoff), one gone, and one it cannot read.
func TestDeleteOldRechecks(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	s, err := Open(filepath.Join(t.TempDir(), "ledger.db"),
		metering.Options{Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	demo := int64(10)
	if _, err := s.Provision(ctx, metering.ProvisionRequest{
		UserAutomationID: 1, DemoTokens: &demo}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"old", "young"} {
		if _, err := s.Consume(ctx, metering.ConsumeRequest{UserAutomationID: 1, Units: 1,
			IdempotencyKey: k}); err != nil {
			t.Fatal(err)
		}
	}

	var n int64
	err = s.db.Update(func(tx *bbolt.Tx) error {
		if err := tx.Bucket(bucketIdem).Put([]byte("bad"), []byte("{not json")); err != nil {
			return err
		}
		// "young" was claimed at the cutoff itself: not older than it.
		rec, _, err := getIdem(tx, "young")
		if err != nil {
			return err
		}
		rec.At = at.Add(time.Hour)
		if err := putIdem(tx, "young", rec); err != nil {
			return err
		}
		keys := [][]byte{[]byte("old"), []byte("young"), []byte("gone"), []byte("bad")}
		n, err = deleteOld(tx, keys, at.Add(time.Minute))
		return err
	})
	if err != nil || n != 1 {
		t.Fatalf("deleteOld: got %d, %v, want 1", n, err)
	}
	err = s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketIdem)
		for k, want := range map[string]bool{"old": false, "young": true, "bad": true} {
			if got := b.Get([]byte(k)) != nil; got != want {
				t.Errorf("record %q kept: got %v, want %v", k, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
