package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// defaultPruneScan bounds the idempotency records one pruning read
// transaction looks at, and so the records one pruning write deletes.
const defaultPruneScan = 1024

var _ metering.Pruner = (*Store)(nil)

// PruneIdempotency implements metering.Pruner. The idempotency bucket is
// ordered by key, not by age, so it walks the whole bucket: each step
// reads up to a bounded number of records in a read-only transaction
// (which never blocks the writer) and then deletes the old ones among
// them with one write queued to the writer like any other, so the write
// a consume waits behind is at most one bounded batch of deletes. A
// record is deleted only if, read again inside that write, it is still
// older than before. Records that cannot be decoded are kept.
//
// bbolt reuses the pages of deleted records for new ones, so the file
// stops growing with keys; it does not shrink (compact it offline with
// the bbolt tool when that matters).
func (s *Store) PruneIdempotency(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	var after []byte // the last key looked at; nil before the first
	for {
		var old [][]byte
		var done bool
		err := s.view(ctx, func(tx *bbolt.Tx) error {
			old, after, done = scanOld(tx, after, before, s.pruneScan)
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("prune idempotency records: %w", err)
		}
		if len(old) > 0 {
			var n int64
			err := s.submit(ctx, func(tx *bbolt.Tx) (error, error) {
				var abort error
				n, abort = deleteOld(tx, old, before)
				return nil, abort
			})
			if err != nil {
				return total, fmt.Errorf("prune idempotency records: %w", err)
			}
			total += n
		}
		if done {
			return total, nil
		}
	}
}

// scanOld looks at up to n records after the key after (from the first
// when nil) and returns copies of the keys of those created before
// before, the last key it looked at, and whether the bucket ended.
func scanOld(
	tx *bbolt.Tx,
	after []byte,
	before time.Time,
	n int,
) (old [][]byte, last []byte, done bool) {
	c := tx.Bucket(bucketIdem).Cursor()
	var k, v []byte
	if after == nil {
		k, v = c.First()
	} else if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
		k, v = c.Next()
	}
	for seen := 0; k != nil && seen < n; k, v = c.Next() {
		seen++
		if at, ok := recordTime(v); ok && at.Before(before) {
			old = append(old, bytes.Clone(k))
		}
		last = bytes.Clone(k)
	}
	return old, last, k == nil
}

// deleteOld deletes those of keys whose records are still older than
// before, and returns how many it deleted.
func deleteOld(tx *bbolt.Tx, keys [][]byte, before time.Time) (int64, error) {
	b := tx.Bucket(bucketIdem)
	var n int64
	for _, k := range keys {
		at, ok := recordTime(b.Get(k))
		if !ok || !at.Before(before) {
			continue // gone, unreadable, or claimed anew since the scan
		}
		if err := b.Delete(k); err != nil {
			return 0, fmt.Errorf("delete idempotency record: %w", err)
		}
		n++
	}
	return n, nil
}

// recordTime reads when an idempotency record was created, without
// decoding the rest of it; ok is false when raw is nil or unreadable.
func recordTime(raw []byte) (time.Time, bool) {
	if raw == nil {
		return time.Time{}, false
	}
	var rec struct {
		At time.Time `json:"at"`
	}
	if err := json.Unmarshal(raw, &rec); err != nil {
		return time.Time{}, false
	}
	return rec.At, true
}
