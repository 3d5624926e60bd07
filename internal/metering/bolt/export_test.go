package bolt

import "github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"

// OpenMaxBatch opens a store whose batches hold at most maxBatch writes.
func OpenMaxBatch(path string, opts metering.Options, maxBatch int) (*Store, error) {
	return open(path, opts, maxBatch)
}

// SetCommitHook makes fn run inside every batch transaction, after the
// batch's writes, with the batch size; an error from fn fails the commit.
// A nil fn removes the hook.
func SetCommitHook(s *Store, fn func(batch int) error) {
	if fn == nil {
		s.commitHook.Store(nil)
		return
	}
	s.commitHook.Store(&fn)
}

// Queued is how many writes wait for the writer.
func Queued(s *Store) int { return len(s.reqs) }

// SetPruneScan bounds the records one pruning step looks at.
func SetPruneScan(s *Store, n int) { s.pruneScan = n }
