package bolt

import (
	"context"
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/zimmer-sidecar/zimmer-sidecar/internal/metering"
)

// step is one write's work inside a batch transaction. It returns answer,
// the error its caller gets once the batch commits (nil, or a refusal such
// as ErrUnknownAccount decided before the step wrote anything), or abort,
// a write failure that fails the whole batch: a step that has started
// writing must not return an answer error, since the batch would commit
// its partial writes.
type step func(tx *bbolt.Tx) (answer, abort error)

// request is one queued write and, once done is closed, its outcome.
type request struct {
	step step
	err  error
	done chan struct{}
}

// submit queues st for the writer and waits for its outcome. It returns
// ctx.Err() when ctx ends before the write is queued and ErrClosed after
// Close; once queued, it waits for the commit whatever ctx does, so an
// accepted write is never reported as failed.
func (s *Store) submit(ctx context.Context, st step) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &request{step: st, done: make(chan struct{})}

	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return metering.ErrClosed
	}
	select {
	case s.reqs <- r:
		s.mu.RUnlock()
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}

	<-r.done
	return r.err
}

// runWriter owns the write side of the database. It takes the first
// queued request, adds whatever else is already queued up to maxBatch,
// and commits them together; requests arriving during a commit form the
// next batch, so batches grow with load and no timer delays a lone write.
// It returns once Close has closed reqs and every queued request has been
// answered.
func (s *Store) runWriter() {
	defer close(s.writerDone)
	batch := make([]*request, 0, s.maxBatch)
	answers := make([]error, s.maxBatch)
	for first := range s.reqs {
		batch = append(batch[:0], first)
		batch = s.fill(batch)
		s.commit(batch, answers[:len(batch)])
		clear(batch) // drop references to answered requests
	}
}

// fill appends requests already queued, without waiting, up to maxBatch.
func (s *Store) fill(batch []*request) []*request {
	for len(batch) < s.maxBatch {
		select {
		case r, ok := <-s.reqs:
			if !ok {
				return batch
			}
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// commit applies batch in order in one transaction and answers every
// request after the commit: with its own answer when the commit is
// durable, with the commit error when it is not (nothing was stored).
func (s *Store) commit(batch []*request, answers []error) {
	err := s.update(func(tx *bbolt.Tx) error {
		for i, r := range batch {
			answer, abort := r.step(tx)
			if abort != nil {
				return abort
			}
			answers[i] = answer
		}
		if hook := s.commitHook.Load(); hook != nil {
			return (*hook)(len(batch))
		}
		return nil
	})
	for i, r := range batch {
		if err != nil {
			r.err = fmt.Errorf("commit ledger batch: %w", err)
		} else {
			r.err = answers[i]
		}
		answers[i] = nil
		close(r.done)
	}
}

// update runs fn in a write transaction and turns a panic inside it into
// an error, so a bug in one step fails its batch instead of stranding
// every waiting caller. bbolt rolls the transaction back before the panic
// reaches here.
func (s *Store) update(fn func(*bbolt.Tx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in ledger batch: %v", p)
		}
	}()
	return s.db.Update(fn)
}
